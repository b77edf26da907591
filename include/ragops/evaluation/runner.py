"""Run an evaluation: every question of a golden set through retrieval and a generator.

Writes ``results.jsonl`` (one line per question, appended as each finishes, so a stopped run
keeps what it did), ``metrics.json`` and ``report.html`` into the run's output folder, and the
run with its per-question results into the state store. Re-running a run id replaces it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, select

from ragops import pipelines, state
from ragops.config import Settings
from ragops.embedding import Embedder
from ragops.errors import EvalError, LlmError, RagopsError, UnknownIndexError
from ragops.evaluation import metrics as M
from ragops.evaluation.datasets import Dataset, Question, UnknownDocsError, load_dataset
from ragops.grounding.checker import GroundednessChecker, answer_relevance
from ragops.llm import (
    ChatClient,
    ChatGenerator,
    Context,
    ExtractiveGenerator,
    Generation,
    Generator,
    Judge,
    LlmSettings,
    SentenceEncoder,
)
from ragops.progress import Progress
from ragops.prompts import Prompt
from ragops.registry import load_prompt
from ragops.vectorcache import VectorCache
from ragops.vectorstore import VectorStore

log = logging.getLogger(__name__)
MAX_FETCH = 200
BLOCK = 32  # questions per batched retrieval


def new_run_id(prefix: str = "eval") -> str:
    return f"{prefix}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def index_doc_ids(settings: Settings, index: str) -> set[str]:
    with state.session_scope(settings.state_db_url) as s:
        return set(s.execute(select(state.Document.doc_id).where(state.Document.index_name == index)).scalars())


def retrieval_questions(settings: Settings, index: str, dataset: str | Path) -> tuple[Dataset, list[Question]]:
    """The golden questions that can score retrieval on ``index``: those with relevant documents,
    every one of them in the index (the rebuild gate and ``ragops index tune`` ask these)."""
    ds = load_dataset(settings.resolve_path(str(dataset)))
    known = index_doc_ids(settings, index)
    return ds, [q for q in ds.questions if q.relevant and set(q.relevant) <= known]


def retrieval_rows(retriever: Retriever, questions: list[Question], ks: tuple[int, ...] = (5, 10),
                   n_chunks: int = 5) -> list[dict[str, float]]:
    """Retrieval metrics (hit rate, recall, MRR, nDCG at ``ks``) of each question, in order: no
    generation, so a whole golden set takes seconds."""
    rows: list[dict[str, float]] = []
    for b in range(0, len(questions), BLOCK):
        block = questions[b:b + BLOCK]
        for q, (docs, _ctx, _cd) in zip(block, retriever.block([q.question for q in block], max(ks), n_chunks),
                                        strict=True):
            rows.append(M.retrieval_metrics([d for d, _ in docs], q.relevant, list(ks)))
    return rows


class Retriever:
    """Retrieval on the live collection for a block of questions: one batched embedding and one
    Chroma request per block (dense), one batched BM25 query (lexical), or both fused (hybrid).
    Returns, per question, the document ranking, the prompt's chunks and every ranked chunk's doc."""

    def __init__(self, store: VectorStore, encoder: SentenceEncoder, collection: str, mode: str = "dense",
                 settings: Settings | None = None) -> None:
        self.store, self.encoder, self.collection, self.mode = store, encoder, collection, mode
        self.settings = settings
        self.lexical = None
        if mode != "dense":
            from ragops.retrieval import lexical_index

            self.lexical = lexical_index(settings, collection)  # type: ignore[arg-type]

    @staticmethod
    def _parse(ranked: list[tuple[str, float, str, dict[str, Any]]], n_docs: int,
               n_chunks: int) -> tuple[list[tuple[str, float]], list[Context], list[str]]:
        docs: dict[str, float] = {}
        contexts: list[Context] = []
        for i, (cid, score, text, meta) in enumerate(ranked):
            docs.setdefault(str(meta.get("doc_id", "")), round(float(score), 6))
            if i < n_chunks:
                body = (text or "")[int(meta.get("context_chars", 0) or 0):].strip()
                contexts.append(Context(n=i + 1, chunk_id=cid, doc_id=str(meta.get("doc_id", "")),
                                        score=round(float(score), 6), title=str(meta.get("title", "")),
                                        headings=str(meta.get("headings", "")), text=body,
                                        page=str(meta.get("pages", "") or "")))
        chunk_docs = [str(meta.get("doc_id", "")) for _, _, _, meta in ranked]  # context precision at every k
        return list(docs.items())[:n_docs], contexts, chunk_docs

    def _dense(self, questions: list[str], fetch: int, n_docs: int) -> list[list[tuple[str, float, str, dict]]]:
        vecs = self.encoder(questions)
        res = self.store.query_many(self.collection, vecs, fetch)
        out = []
        for j in range(len(questions)):
            ids, texts, metas, dists = (res["ids"][j], res["documents"][j], res["metadatas"][j],
                                        res["distances"][j])
            f = fetch
            # widen (rarely needed) until n_docs distinct documents are in the window
            while len({str((m or {}).get("doc_id", "")) for m in metas}) < n_docs and len(ids) == f < MAX_FETCH:
                f = min(MAX_FETCH, f * 2)
                r = self.store.query(self.collection, vecs[j], f)
                ids, texts, metas, dists = r["ids"][0], r["documents"][0], r["metadatas"][0], r["distances"][0]
            out.append([(cid, 1.0 - float(d), t or "", dict(m or {}))
                        for cid, t, m, d in zip(ids, texts, metas, dists, strict=True)])
        return out

    def block(self, questions: list[str], n_docs: int,
              n_chunks: int) -> list[tuple[list[tuple[str, float]], list[Context], list[str]]]:
        fetch = min(MAX_FETCH, max(n_docs, n_chunks) * 2)
        if self.mode == "dense":
            return [self._parse(r, n_docs, n_chunks) for r in self._dense(questions, fetch, n_docs)]
        from ragops.retrieval import fuse

        n = max(fetch, self.settings.retrieval.candidates)  # type: ignore[union-attr]
        lexical = self.lexical.query_many(questions, n)  # type: ignore[union-attr]
        dense = self._dense(questions, n, n_docs) if self.mode == "hybrid" else [[] for _ in questions]
        known = {cid: (text, meta) for rows in dense for cid, _s, text, meta in rows}
        rankings: list[list[tuple[str, float]]] = []
        for d_rows, l_rows in zip(dense, lexical, strict=True):
            if self.mode == "lexical":
                rankings.append([(cid, score) for cid, _doc, score in l_rows])
            else:
                rankings.append(fuse(self.settings, [r[0] for r in d_rows],  # type: ignore[arg-type]
                                     [cid for cid, _doc, _s in l_rows]))
        missing = sorted({cid for r in rankings for cid, _ in r if cid not in known})
        known.update(self.store.get_chunks(self.collection, missing) if missing else {})
        # the prompt's chunks carry their cosine similarity to the question (what refusal thresholds
        # mean), whatever ranked them; the fused or BM25 score ranks the documents
        qvecs = self.encoder(questions)
        cos = {(j, cid): s for j, rows in enumerate(dense) for cid, s, _t, _m in rows}
        need = sorted({cid for j, r in enumerate(rankings) for cid, _ in r[:n_chunks] if (j, cid) not in cos})
        vecs = self.store.get_embeddings(self.collection, need) if need else {}
        out = []
        for j, r in enumerate(rankings):
            ranked = [(cid, sc, *known[cid]) for cid, sc in r if cid in known][:MAX_FETCH]
            docs, contexts, chunk_docs = self._parse(ranked, n_docs, n_chunks)
            contexts = [dataclasses.replace(c, score=round(float(cos.get((j, c.chunk_id), qvecs[j] @ vecs[c.chunk_id]
                                                                         if c.chunk_id in vecs else 0.0)), 6))
                        for c in contexts]
            out.append((docs, contexts, chunk_docs))
        return out


def sample_count(settings: Settings, prompt: Prompt, generator: Generator) -> int:
    """Answers per question: ``eval.samples`` when the generator samples (a chat model whose prompt
    sets a temperature above 0, or none: the endpoint's default, 1.0 for OpenAI-compatible ones);
    1 otherwise, said in the log (greedy or extractive answers are the same every time)."""
    n = settings.eval.samples
    if n <= 1:
        return 1
    if not isinstance(generator, ChatGenerator):
        log.info("eval.samples is %d, but the %s generator is deterministic: one answer per question", n,
                 generator.name)
        return 1
    temperature = prompt.model.params.get("temperature")
    if temperature is not None and float(temperature) <= 0:
        log.info("eval.samples is %d, but prompt %s has temperature 0 (greedy decoding gives the same answer every "
                 "time): one answer per question", n, prompt.ref)
        return 1
    log.info("sampling %d answers per question (prompt %s, temperature %s): metrics are means over the samples, "
             "per-sample values kept for the gate's bootstrap", n, prompt.ref,
             "unset = the endpoint's default" if temperature is None else temperature)
    return n


def sampled_row(q: Question, docs: list[tuple[str, float]], contexts: list[Context], gens: list[Generation],
                retrieval_ms: float, encoder: SentenceEncoder, settings: Settings,
                judge: Judge | None, chunk_docs: list[str] | None = None) -> dict[str, Any]:
    """A question answered ``len(gens)`` times: each sample scored with ``score_question``; the
    row's metric = mean over the samples that have it, ``samples`` = {metric: [value per sample]},
    ``spread`` = {metric: population std}. ``answer``/``refused``/``citations``/``detail`` are the
    first sample's, ``sample_answers`` all of them; ``tokens_in``/``tokens_out`` are the total over
    the samples (what is billed), ``generation_ms`` the mean per answer (what a user waits)."""
    rows = [question_row(q, docs, contexts, g, retrieval_ms, encoder, settings, judge, chunk_docs) for g in gens]
    first = rows[0]
    per: dict[str, list[float]] = {}
    for r in rows:
        for k, v in r["metrics"].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                per.setdefault(k, []).append(float(v))
    gen_ms = sum(g.latency_ms for g in gens) / len(gens)
    first.update({
        "metrics": {k: round(float(np.mean(v)), 6) for k, v in per.items()},
        "samples": {k: [round(x, 6) for x in v] for k, v in per.items()},
        "spread": {k: round(float(np.std(v)), 6) for k, v in per.items()},
        "n_samples": len(gens), "sample_answers": [g.answer for g in gens],
        "sample_refused": [g.refused for g in gens], "cached": all(g.cached for g in gens),
        "tokens_in": sum(g.tokens_in for g in gens), "tokens_out": sum(g.tokens_out for g in gens),
        "generation_ms": round(gen_ms, 2), "latency_ms": round(retrieval_ms + gen_ms, 2)})
    return first


def question_row(q: Question, docs: list[tuple[str, float]], contexts: list[Context], gen: Generation | LlmError,
                 retrieval_ms: float, encoder: SentenceEncoder, settings: Settings,
                 judge: Judge | None, chunk_docs: list[str] | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"id": q.id, "question": q.question, "tags": list(q.tags), "answerable": q.answerable,
                           "reference_answer": q.reference_answer, "relevant_doc_ids": q.relevant_doc_ids,
                           "retrieved_docs": [{"rank": r, "doc_id": d, "score": sc} for r, (d, sc) in
                                              enumerate(docs, 1)],
                           "contexts": [{"n": c.n, "chunk_id": c.chunk_id, "doc_id": c.doc_id, "score": c.score,
                                         "title": c.title, "headings": c.headings, "text": c.text,
                                         "page": c.page} for c in contexts]}
    if isinstance(gen, LlmError):
        row.update({"error": str(gen), "metrics": {}})
        return row
    try:
        scored = score_question(q, docs, contexts, gen, encoder, settings, judge, chunk_docs)
    except LlmError as exc:  # the judge failed: keep the answer, record why its scores are missing
        scored = score_question(q, docs, contexts, gen, encoder, settings, None, chunk_docs)
        scored["detail"]["judge_error"] = str(exc)
    row.update({"answer": gen.answer, "refused": gen.refused, "citations": gen.citations, "model": gen.model,
                "cached": gen.cached, "tokens_in": gen.tokens_in, "tokens_out": gen.tokens_out,
                "retrieval_ms": round(retrieval_ms, 2), "generation_ms": round(gen.latency_ms, 2),
                "latency_ms": round(retrieval_ms + gen.latency_ms, 2),
                "metrics": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in scored["metrics"].items()},
                "detail": {**gen.detail, **scored["detail"]}, "error": None})
    return row


def stored_payload(row: dict[str, Any]) -> dict[str, Any]:
    """The state store keeps everything but the context texts (they are in results.jsonl)."""
    return {k: v for k, v in row.items() if k != "contexts"} | {
        "contexts": [{k: v for k, v in c.items() if k != "text"} for c in row["contexts"]]}


def make_generator(prompt: Prompt, encoder: SentenceEncoder, client: ChatClient | None) -> Generator:
    if prompt.model.provider == "extractive":
        return ExtractiveGenerator(encoder)
    if client is None:
        raise EvalError(f"prompt {prompt.ref} uses model provider {prompt.model.provider!r} but no LLM endpoint is "
                        "configured: add the Airflow Connection llm_default (host = base URL, password = API key), "
                        "or set RAGOPS_LLM_BASE_URL for the command line")
    return ChatGenerator(client)


def score_question(q: Question, docs: list[tuple[str, float]], contexts: list[Context], gen: Generation,
                   encoder: SentenceEncoder, settings: Settings, judge: Judge | None,
                   chunk_docs: list[str] | None = None) -> dict[str, Any]:
    """Every metric of one question; metrics that do not apply are absent (not zero).

    ``chunk_docs``: the doc id of every retrieved chunk in rank order (context precision at k
    looks at the top k chunks, even beyond the prompt's top_k)."""
    ks = settings.eval.ks
    m: dict[str, Any] = {}
    if q.relevant:
        m.update(M.retrieval_metrics([d for d, _ in docs], q.relevant, ks))
        ranked_chunks = chunk_docs if chunk_docs is not None else [c.doc_id for c in contexts]
        m.update(M.context_precision([d in q.relevant for d in ranked_chunks], ks))
    if q.answerable:
        m["false_refusal"] = float(gen.refused)
    else:
        m["refusal_accuracy"] = float(gen.refused)
    detail: dict[str, Any] = {}
    if not gen.refused:
        # claim-level groundedness: every claim must be supported by one passage (numbers, names,
        # negation, meaning); faithfulness = supported share, hallucination = any claim unsupported
        checker = GroundednessChecker(encoder)
        verdict = checker.check(gen.answer, [c.text for c in contexts])
        if verdict["faithfulness"] is not None:
            m["faithfulness"] = verdict["faithfulness"]
            m["hallucination_rate"] = float(verdict["hallucinated"])
        bad = [v for v in verdict["claims"] if not v["supported"]]
        detail["unsupported_sentences"] = [v["claim"] for v in bad]
        detail["unsupported_claims"] = [{"claim": v["claim"], "reason": v["reason"], "detail": v["detail"][:5],
                                         "passage": v["passage"], "closest": v["closest"][:300]} for v in bad]
        detail["n_claims"] = verdict["n_claims"]
        rel = answer_relevance(q.question, gen.answer, encoder) if settings.eval.semantic_metrics else None
        if rel is not None:
            m["answer_relevance"] = rel
        if verdict["citation_validity"] is not None:
            m["citation_validity"] = verdict["citation_validity"]
        if judge is not None:
            m.update({k: v for k, v in judge.score(q.question, gen.answer, contexts).items()
                      if not k.endswith(("_samples", "_unparsed"))})
    if q.answerable and q.reference_answer:
        if gen.refused:
            m["answer_f1"] = m["answer_em"] = 0.0
            if settings.eval.semantic_metrics:
                m["answer_similarity"] = 0.0
        else:
            answer = M.strip_citations(gen.answer)
            m["answer_f1"] = M.token_f1(answer, q.reference_answer)
            m["answer_em"] = M.exact_match(answer, q.reference_answer)
            if settings.eval.semantic_metrics:
                m["answer_similarity"] = M.cosine(answer, q.reference_answer, encoder) or 0.0
    pii = M.pii_findings(gen.answer)
    blocked = M.blocklist_hits(gen.answer, settings.eval.blocklist)
    m["pii_rate"] = float(bool(pii))
    m["blocklist_rate"] = float(bool(blocked))
    if pii:
        detail["pii"] = pii
    if blocked:
        detail["blocklist"] = blocked
    m.update(toxicity_metrics(settings, encoder, gen.answer, contexts, detail))
    m["tokens_in"] = gen.tokens_in
    m["tokens_out"] = gen.tokens_out
    return {"metrics": m, "detail": detail}


_TOXICITY: dict[tuple[str, int], Any] = {}


def toxicity_checker(settings: Settings, encoder: SentenceEncoder | None = None) -> Any:
    """The run's toxicity checker (``eval.toxicity_checker``; None when ``none``), built once per
    encoder. The embedding part reuses the run's encoder when it is the bundled model's."""
    name = settings.eval.toxicity_checker
    if name == "none":
        return None
    key = (name, id(encoder))
    if key not in _TOXICITY:
        from ragops.safety import toxicity as T

        head = T.load_head()
        same = encoder is not None and getattr(getattr(encoder, "embedder", None), "settings", None) is not None \
            and encoder.embedder.settings.model == head["model"]
        _TOXICITY.clear()  # one run at a time: do not keep encoders of finished runs alive
        _TOXICITY[key] = T.make_checker(name, head=head, encode=encoder if same else None,
                                        backend=settings.embedding.backend)
    return _TOXICITY[key]


def toxicity_metrics(settings: Settings, encoder: SentenceEncoder | None, answer: str, contexts: list[Context],
                     detail: dict[str, Any]) -> dict[str, float]:
    """``toxicity`` (the answer's worst-sentence score), ``toxicity_rate`` (1 when flagged) and
    ``context_toxicity_rate`` (1 when a retrieved passage is flagged); flagged ones go to ``detail``."""
    checker = toxicity_checker(settings, encoder)
    if checker is None:
        return {}
    [v] = checker.verdicts([answer or ""])
    out = {"toxicity": v["score"], "toxicity_rate": float(v["toxic"])}
    if v["toxic"]:
        detail["toxicity"] = {"score": v["score"], "checker": checker.name, "threshold": checker.threshold}
    if contexts:
        scores = checker.scores([c.text for c in contexts])
        bad = [{"n": c.n, "doc_id": c.doc_id, "chunk_id": c.chunk_id, "score": round(float(sc), 4)}
               for c, sc in zip(contexts, scores, strict=True) if sc >= checker.threshold]
        out["context_toxicity_rate"] = float(bool(bad))
        if bad:
            detail["toxic_contexts"] = bad
    return out


def price_of(settings: Settings, *models: str) -> dict[str, float] | None:
    """The eval.prices entry of the first model that has one (requested name, then served names);
    a ``free: true`` entry and the extractive generator cost nothing. None = unknown cost."""
    for model in models:
        price = settings.eval.prices.get(model)
        if price is not None:
            return {"input_per_1m": 0.0, "output_per_1m": 0.0} if price.get("free") else price
    if "extractive" in models:  # runs locally: no bill
        return {"input_per_1m": 0.0, "output_per_1m": 0.0}
    return None


def _cost(settings: Settings, model: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    served = sorted({str(r["model"]) for r in rows if not r.get("error") and r.get("model")} - {model})
    price = price_of(settings, model, *served)
    ok = [r for r in rows if not r.get("error")]
    tin = sum(r["tokens_in"] for r in ok)
    tout = sum(r["tokens_out"] for r in ok)
    billed_in = sum(r["tokens_in"] for r in ok if not r.get("cached"))
    billed_out = sum(r["tokens_out"] for r in ok if not r.get("cached"))
    out: dict[str, Any] = {"tokens_in": tin, "tokens_out": tout, "cached_answers": sum(1 for r in ok if r.get("cached"))}
    if price is None:
        out["cost_note"] = (f"no price for model {model!r} in eval.prices: the cost is unknown (add its price, "
                            "or free: true for a local model)")
        return out
    def usd(a: int, b: int) -> float:
        return (a * price["input_per_1m"] + b * price["output_per_1m"]) / 1e6
    out["cost_per_1k_questions_usd"] = round(usd(tin, tout) / max(len(ok), 1) * 1000, 6)
    out["cost_this_run_usd"] = round(usd(billed_in, billed_out), 6)  # cache hits cost nothing
    return out


def judge_summary(settings: Settings, judge_model: str | None, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The judge's calls, tokens, time, cost and unparsed verdicts over the run, apart from the generator's."""
    js = [r["judge"] for r in rows if r.get("judge")]
    unparsed: dict[str, int] = {}
    for j in js:
        for task, n in (j.get("unparsed") or {}).items():
            unparsed[task] = unparsed.get(task, 0) + int(n)
    out: dict[str, Any] = {
        "model": judge_model, "calls": sum(j["calls"] for j in js), "cached_calls": sum(j["cached_calls"] for j in js),
        "judge_tokens_in": sum(j["tokens_in"] for j in js), "judge_tokens_out": sum(j["tokens_out"] for j in js),
        "judge_ms": round(sum(j["ms"] for j in js), 2),
        "judge_unparsed": sum(unparsed.values()), "judge_unparsed_by_task": unparsed,
        "questions_with_unparsed_verdicts": sum(1 for j in js if j.get("unparsed")),
        "served_models": sorted({m for j in js for m in j.get("served_models") or []})}
    price = price_of(settings, judge_model, *out["served_models"]) if judge_model else None
    if price is not None:
        out["judge_cost_this_run_usd"] = round((sum(j["billed_tokens_in"] for j in js) * price["input_per_1m"] +
                                                sum(j["billed_tokens_out"] for j in js) * price["output_per_1m"]) / 1e6, 6)
    elif js:
        out["judge_cost_note"] = f"no price for judge model {judge_model!r} in eval.prices: the cost is unknown"
    return out


def summarise(rows: list[dict[str, Any]], settings: Settings, model: str) -> dict[str, Any]:
    ok = [r for r in rows if not r.get("error")]
    agg = M.aggregate(ok)
    lat = [r["latency_ms"] for r in ok]
    tags: dict[str, list[dict[str, Any]]] = {}
    for r in ok:
        for t in r.get("tags") or ["(untagged)"]:
            tags.setdefault(t, []).append(r)
    return {
        "counts": {"questions": len(rows), "ok": len(ok), "errors": len(rows) - len(ok),
                   "answerable": sum(1 for r in ok if r["answerable"]),
                   "unanswerable": sum(1 for r in ok if not r["answerable"]),
                   "refused": sum(1 for r in ok if r["refused"]),
                   "truncated": sum(1 for r in ok if (r.get("detail") or {}).get("truncated"))},
        "metrics": {k: round(v["mean"], 6) for k, v in agg.items()},
        "metric_counts": {k: v["n"] for k, v in agg.items()},
        "operations": {"latency_ms_p50": M.percentile(lat, 50), "latency_ms_p95": M.percentile(lat, 95),
                       "retrieval_ms_p50": M.percentile([r["retrieval_ms"] for r in ok], 50),
                       "generation_ms_p50": M.percentile([r["generation_ms"] for r in ok], 50),
                       **_cost(settings, model, rows)},
        "by_tag": {t: {"n": len(rs), **{k: round(v["mean"], 6) for k, v in M.aggregate(rs).items()
                                        if k in settings.eval.watch_metrics}} for t, rs in sorted(tags.items())},
    }


def run_eval(settings: Settings, dataset: str | Path | None = None, prompt: str | Prompt | None = None,
             index: str | None = None, *, output_dir: str | Path | None = None, sample_size: int | None = None,
             run_id: str | None = None, trigger: str = "cli", purpose: str = "adhoc",
             question_ids: list[str] | None = None, allow_unknown_docs: bool | None = None,
             retrieval: str | None = None, reuse_cache: bool = False, include_reviewed: bool = False,
             embedder: Embedder | None = None,
             store: VectorStore | None = None, llm: LlmSettings | None = None,
             origin: dict[str, str] | None = None) -> dict[str, Any]:
    """Evaluate ``prompt`` on the live version of ``index`` with ``dataset``; returns the summary.

    ``purpose``: ``nightly`` runs form the baseline nightly_eval compares with; ``adhoc`` and
    ``candidate`` runs never do. Every run calls the model: the LLM response cache serves only a
    retry of the same ``run_id``, unless ``reuse_cache`` (answers of earlier runs are replayed,
    while the endpoint still serves the same model). ``allow_unknown_docs`` (default ``eval.allow_unknown_doc_ids``):
    relevant doc ids missing from the index are an error, or count as never retrieved.
    ``origin``: the Airflow task that ran it ({dag_id, run_id, task_id}), kept with the run so the
    LLMOps page links the run to its DAG run and task log.
    ``include_reviewed``: also the index's reviewed production questions (``<reviewed_dir>/<index>.jsonl``,
    ragops.production.review) when that file exists; one of them whose document was deleted since is
    left out unless unknown ids are allowed."""
    state.require_schema(settings.state_db_url)
    index = index or settings.ingest.default_index
    prompt_obj = prompt if isinstance(prompt, Prompt) else load_prompt(settings, prompt or settings.eval.default_prompt)
    with state.session_scope(settings.state_db_url) as s:
        live = state.live_version(s, index)
        known = state.known_indexes(s)
    if live is None:
        raise UnknownIndexError(f"unknown index {index!r}: known indexes are {', '.join(known) or '(none yet)'}; "
                                f"ingest into it first with `ragops ingest SOURCE --index {index}`")
    default_ds = (settings.indexes.get(index) or {}).get("golden") or settings.eval.default_dataset
    ds_path = Path(settings.resolve_path(str(dataset or default_ds)))
    known_ids = index_doc_ids(settings, index)
    allow = settings.eval.allow_unknown_doc_ids if allow_unknown_docs is None else allow_unknown_docs
    try:
        ds: Dataset = load_dataset(ds_path, None if allow else known_ids)  # refuses unknown ids unless allowed
    except UnknownDocsError as exc:
        from ragops.retrieval import explain_unknown_docs_error

        raise explain_unknown_docs_error(settings, index, exc) from exc
    files = [{"path": ds.path, "sha256": ds.sha256, "questions": len(ds)}]
    # the run's baseline family is its golden file: reviewed questions join the run (and are paired by
    # id with earlier runs that asked them) without restarting the nightly baseline on every review
    baseline_hash = ds.sha256
    reviewed_ids: set[str] = set()
    reviewed = settings.reviewed_dir / f"{index}.jsonl"
    if include_reviewed and reviewed.exists():
        from ragops.evaluation.datasets import combine

        golden_ids = {q.id for q in ds.questions}
        ds, extra = combine(ds, load_dataset(reviewed), None if allow else known_ids)
        files.append(extra)
        reviewed_ids = {q.id for q in ds.questions} - golden_ids
    unknown = sorted({d for q in ds.questions for d in q.relevant if d not in known_ids})
    if unknown:  # e.g. a BEIR document that failed the quality checks: it counts as relevant but unretrievable
        log.warning("%d relevant doc id(s) of %s are not in index %s (counted as never retrieved): %s",
                    len(unknown), ds_path, index, ", ".join(unknown[:10]))
    if question_ids:
        wanted = set(question_ids)
        ds = Dataset(ds.path, tuple(q for q in ds.questions if q.id in wanted), ds.sha256)
        if not ds.questions:
            raise EvalError(f"none of the question ids {sorted(wanted)[:5]} is in {ds_path}")
    n_sample = settings.eval.sample_size if sample_size is None else sample_size
    if n_sample < 0:
        raise EvalError(f"sample size must be 0 (all questions) or positive, got {n_sample}")
    ds = ds.sample(n_sample, settings.eval.seed)

    llm = llm or LlmSettings.from_env(settings)
    embedder = embedder or Embedder(pipelines.for_index(settings, index).embedding)  # the index's own model
    persist = VectorCache.for_embedder(settings.data_dir, embedder.fingerprint, settings.eval.vector_cache_mb)
    encoder = SentenceEncoder(embedder, persist=persist)
    run_id = run_id or new_run_id()
    client = ChatClient(llm, settings, cache_scope=None if reuse_cache else run_id) if llm is not None else None
    generator = make_generator(prompt_obj, encoder, client)
    n_answers = sample_count(settings, prompt_obj, generator)
    judge = None
    if client is not None and settings.eval.judge:
        judge = Judge(client, settings.eval.judge_model or llm.model or prompt_obj.model.name,  # type: ignore[union-attr]
                      settings.eval.judge_runs, toxicity=settings.eval.judge_toxicity)
    store = store or VectorStore(settings)
    from ragops.retrieval import effective

    # run > prompt version > the live version's tuned choice > settings
    eff = effective(settings, index, retrieval, prompt_mode=prompt_obj.retrieval_mode, version=live)
    mode = eff.mode
    retriever = Retriever(store, encoder, live.collection, mode, settings.replace(retrieval=eff.retrieval))
    out = Path(output_dir) if output_dir else settings.eval_dir / run_id
    out.mkdir(parents=True, exist_ok=True)
    model_name = prompt_obj.model.name if prompt_obj.model.provider != "extractive" else "extractive"
    config = {"purpose": purpose, "origin": origin, "prompt": prompt_obj.summary(), "ks": list(settings.eval.ks), "retrieval": mode,
              "retrieval_detail": eff.describe(),
              "sample_size": n_sample, "seed": settings.eval.seed, "support_threshold": settings.eval.support_threshold,
              "embedding_model": settings.embedding.model, "judge": None if judge is None else
              {"model": judge.model, "runs": judge.runs}, "llm_base_url": llm.base_url if llm else None,
              "question_ids": sorted(question_ids) if question_ids else None, "reuse_cache": reuse_cache,
              "samples": n_answers}
    with state.session_scope(settings.state_db_url) as s:
        s.execute(delete(state.EvalResult).where(state.EvalResult.run_id == run_id))  # a retry replaces the run
        old = s.get(state.EvalRun, run_id)
        if old is not None:
            s.delete(old)
            s.flush()
        s.add(state.EvalRun(run_id=run_id, status="running", trigger=trigger, index_name=index,
                            index_version=live.version, collection=live.collection, prompt_name=prompt_obj.name,
                            prompt_version=prompt_obj.version, prompt_hash=prompt_obj.content_hash,
                            dataset_path=ds.path, dataset_hash=baseline_hash, n_questions=len(ds),
                            generator=f"{generator.name}:{model_name}", output_dir=str(out), config=config,
                            metrics={}))
    log.info("eval %s: %d questions, prompt %s, index %s (%s), generator %s, output %s", run_id, len(ds),
             prompt_obj.ref, index, live.collection, generator.name, out)

    started_at = dt.datetime.now(dt.UTC)
    rows: list[dict[str, Any]] = []
    n_docs = max(settings.eval.ks)
    consecutive = 0
    abort: RagopsError | None = None
    encoder(["warm-up"])  # load the model before the clock starts, so latencies are per question
    t_start = last_log = time.perf_counter()
    questions = list(ds.questions)
    bar = Progress(len(questions), "questions", f"eval {prompt_obj.ref}")
    try:
        with bar, (out / "results.jsonl").open("w", encoding="utf-8") as fh:
            for b in range(0, len(questions), BLOCK):
                block = questions[b:b + BLOCK]
                t0 = time.perf_counter()
                retrieved = retriever.block([q.question for q in block], n_docs, prompt_obj.top_k)
                retrieval_ms = (time.perf_counter() - t0) * 1000 / len(block)  # the block's cost, shared evenly
                gens: list[Generation | LlmError] = []
                more: dict[str, list[Generation]] = {}  # question id -> every sample (eval.samples > 1)
                for q, (_docs, contexts, _chunk_docs) in zip(block, retrieved, strict=True):
                    if abort is not None:
                        break
                    try:
                        drawn: list[Generation] = []
                        for i in range(n_answers):  # each sample its own cache salt (and seed + i)
                            t1 = time.perf_counter()
                            gen = (generator.generate(prompt_obj, q.question, contexts, sample=i) if i  # type: ignore[call-arg]
                                   else generator.generate(prompt_obj, q.question, contexts))
                            gen.latency_ms = (time.perf_counter() - t1) * 1000
                            drawn.append(gen)
                        gens.append(drawn[0])
                        if n_answers > 1:
                            more[q.id] = drawn
                        consecutive = 0
                    except LlmError as exc:
                        log.warning("question %s: %s", q.id, exc)
                        gens.append(exc)
                        consecutive += 1
                        if exc.permanent or consecutive >= settings.eval.max_consecutive_errors:
                            abort = exc
                # embed the block's answers and references in one batch; the metrics then hit the cache
                if settings.eval.semantic_metrics:
                    encoder([t for q, g in zip(block, gens, strict=False) if isinstance(g, Generation) and not g.refused
                             for t in (M.strip_citations(g.answer), q.reference_answer) if t])
                tox = toxicity_checker(settings, encoder)
                if tox is not None:  # the block's answers and passages in one call (the classifiers' per-call
                    # overhead was a third of a warm run); each question's scores then come from the cache
                    tox.scores([g.answer or "" for g in gens if isinstance(g, Generation)]
                               + [c.text for _, contexts, _ in retrieved for c in contexts])
                block_rows = []
                for q, (docs, contexts, chunk_docs), gen in zip(block, retrieved, gens, strict=False):
                    if q.id in more:
                        row = sampled_row(q, docs, contexts, more[q.id], retrieval_ms, encoder, settings, judge,
                                          chunk_docs)
                    else:
                        row = question_row(q, docs, contexts, gen, retrieval_ms, encoder, settings, judge, chunk_docs)
                    if judge is not None:  # the judge's own calls, tokens and time, apart from the generator's
                        js = judge.take_stats()
                        row.update(judge=js, judge_tokens_in=js["tokens_in"], judge_tokens_out=js["tokens_out"],
                                   judge_ms=js["ms"])
                        if js["unparsed"] and isinstance(row.get("detail"), dict):
                            row["detail"]["judge_unparsed"] = js["unparsed"]
                        if js["unsupported_claims"] and isinstance(row.get("detail"), dict):
                            row["detail"]["judge_unsupported_claims"] = js["unsupported_claims"]
                    rows.append(row)
                    block_rows.append(row)
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                fh.flush()
                with state.session_scope(settings.state_db_url) as s:
                    s.add_all(state.EvalResult(run_id=run_id, question_id=r["id"], ok=0 if r["error"] else 1,
                                               payload=stored_payload(r)) for r in block_rows)
                bar.update(len(block_rows), errors=sum(1 for r in block_rows if r.get("error")))
                now = time.perf_counter()
                if now - last_log >= 10 or len(rows) == len(questions) or abort is not None:
                    rate = len(rows) / max(now - t_start, 1e-9)
                    log.info("evaluated %d/%d questions (%.1f/s, ETA %.0fs)", len(rows), len(questions), rate,
                             (len(questions) - len(rows)) / max(rate, 1e-9))
                    last_log = now
                if abort is not None:
                    break
    except Exception as exc:  # noqa: BLE001 - anything else (Chroma, disk): record the run as failed, re-raise below
        log.exception("eval %s stopped after %d questions", run_id, len(rows))
        abort = exc if isinstance(exc, RagopsError) else EvalError(f"{type(exc).__name__}: {exc}")
        abort.permanent = getattr(exc, "permanent", False)
        abort.__cause__ = exc

    # the run's figures are the golden set's (comparable night to night); the reviewed production
    # questions get their own block
    summary = summarise([r for r in rows if r["id"] not in reviewed_ids], settings, model_name)
    if reviewed_ids:
        summary["reviewed"] = summarise([r for r in rows if r["id"] in reviewed_ids], settings, model_name)
    served = sorted({str(r["model"]) for r in rows if not r.get("error") and r.get("model")})
    summary["served_models"] = served  # what the endpoint reported: a change is a new model, whatever the name
    if judge is not None:
        summary["judge"] = judge_summary(settings, judge.model, rows)
        summary["operations"].update({k: summary["judge"][k] for k in (
            "judge_tokens_in", "judge_tokens_out", "judge_ms", "judge_unparsed", "judge_cost_this_run_usd")
            if k in summary["judge"]})
    status = "failed" if abort is not None else ("partial" if summary["counts"]["errors"] else "success")
    error = None if abort is None else (
        f"stopped after {len(rows)} of {len(ds)} questions: {abort}" if not abort.permanent
        else f"stopped: {abort}")
    summary.update({"run_id": run_id, "status": status, "error": error, "index": index,
                    "index_version": live.version, "collection": live.collection, "prompt": prompt_obj.summary(),
                    "dataset": {"path": ds.path, "sha256": ds.sha256, "baseline_sha256": baseline_hash,
                                "questions": len(ds), "files": files,
                                "unknown_relevant_doc_ids": unknown[:50], "unknown_relevant_doc_count": len(unknown)},
                    "generator": f"{generator.name}:{model_name}", "retrieval": mode,
                    "retrieval_detail": eff.describe(),
                    "llm_calls": client.calls if client else 0,
                    "vector_cache": persist.stats() if persist is not None else None,
                    "wall_seconds": round(time.perf_counter() - t_start, 2), "output_dir": str(out),
                    "started_at": started_at.isoformat(), "trigger": trigger, "purpose": purpose})
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    if persist is not None:
        persist.close()
    with state.session_scope(settings.state_db_url) as s:
        run = s.get(state.EvalRun, run_id)
        run.status, run.finished_at, run.metrics, run.error = status, state.utcnow(), summary, error  # type: ignore[union-attr]
        run.config = {**(run.config or {}), "served_models": served,  # type: ignore[union-attr]
                      "judge_served_models": (summary.get("judge") or {}).get("served_models")}
    from ragops.evaluation.reports import write_report

    write_report(settings, run_id, out / "report.html", rows)
    log.info("eval %s %s: %s", run_id, status, {k: summary["metrics"].get(k) for k in settings.eval.watch_metrics})
    if abort is not None:
        exc = EvalError(f"eval run {run_id} {error}; the {len(rows)} completed results are kept in {out}")
        exc.permanent = abort.permanent
        raise exc from abort
    return summary


def list_runs(settings: Settings, index: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    state.require_schema(settings.state_db_url)
    with state.session_scope(settings.state_db_url) as s:
        q = select(state.EvalRun).order_by(state.EvalRun.started_at.desc()).limit(limit)
        if index:
            q = q.where(state.EvalRun.index_name == index)
        return [run_row(r) for r in s.execute(q).scalars()]


def run_row(r: state.EvalRun) -> dict[str, Any]:
    return {"run_id": r.run_id, "status": r.status, "trigger": r.trigger,
            "purpose": (r.config or {}).get("purpose"), "started_at": r.started_at.isoformat(),
            "index": r.index_name, "index_version": r.index_version,
            "prompt": f"{r.prompt_name}@{r.prompt_version}", "dataset": r.dataset_path,
            "questions": r.n_questions, "metrics": (r.metrics or {}).get("metrics", {}),
            "output_dir": r.output_dir, "error": r.error, "generator": r.generator,
            "retrieval": (r.config or {}).get("retrieval"),  # None: a run from before modes were recorded
            "served_models": (r.config or {}).get("served_models") or [],
            "origin": (r.config or {}).get("origin")}  # {dag_id, run_id, task_id} of an Airflow run, else None
