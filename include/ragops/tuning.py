"""Choose an index's retrieval mode and fusion weights from its own golden set.

Which retrieval is best depends on the corpus: hybrid gains +0.058 nDCG@10 on SciFact and lost
0.010 on another QA set. ``tune`` scores retrieval only (no generation) on the index's golden
questions, the same questions and metric the rebuild gate uses, for each candidate: dense,
lexical, and hybrid over a small grid of fusion weights. Per question nDCG@10, then a paired
one-sided Wilcoxon signed-rank test of each candidate against the simpler choice, Holm-corrected
over the candidates compared.

Simplicity order: dense < lexical < hybrid. Step 1 compares every candidate with dense. Lexical
is chosen if it is significantly better than dense; then (step 2) a hybrid weighting replaces it
only if significantly better than lexical. Without lexical, the best hybrid that is significantly
better than dense is chosen. Otherwise dense stays: a more complex retrieval has to earn its
place. Fewer than ``retrieval.tune_min_questions`` questions: dense, said so.

The choice is stored on the index version (``index_versions.retrieval``) and audit-logged; it
serves ahead of ``retrieval.mode`` (see ``ragops.retrieval.effective``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ragops import pipelines, state
from ragops.config import Settings, check_index_name
from ragops.embedding import Embedder
from ragops.errors import EvalError, RagopsError, UnknownIndexError
from ragops.gates import paired_bootstrap
from ragops.vectorstore import VectorStore

log = logging.getLogger(__name__)
METRIC = "ndcg@10"
SIMPLICITY = {"dense": 0, "lexical": 1, "hybrid": 2}
WEIGHTS = ((1.0, 1.0), (1.0, 0.5), (0.5, 1.0))  # (dense, lexical) fusion weights tried for hybrid


@dataclass(frozen=True)
class Candidate:
    name: str
    mode: str
    dense_weight: float = 1.0
    lexical_weight: float = 1.0


def candidates() -> list[Candidate]:
    """In simplicity order (dense, lexical, then the hybrid weightings, equal weights first)."""
    return [Candidate("dense", "dense"), Candidate("lexical", "lexical"),
            *[Candidate(f"hybrid {d:g}:{lx:g}", "hybrid", d, lx) for d, lx in WEIGHTS]]


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def paired_p(candidate: list[float], baseline: list[float]) -> float:
    """One-sided p-value that ``candidate`` beats ``baseline`` per question (Wilcoxon signed-rank,
    ties dropped); 1.0 when no question differs."""
    from scipy.stats import wilcoxon

    d = np.asarray(candidate, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    if not np.any(np.abs(d) > 1e-12):
        return 1.0
    return float(wilcoxon(d, zero_method="wilcox", alternative="greater").pvalue)


def _compare(settings: Settings, scores: dict[str, list[float]], name: str, base: str) -> dict[str, Any]:
    e = settings.eval
    diffs = [a - b for a, b in zip(scores[name], scores[base], strict=True)]
    iv = paired_bootstrap(diffs, e.bootstrap_samples, e.confidence, e.seed)
    return {"candidate": name, "baseline": base, "difference": round(iv.mean, 6), "ci_low": round(iv.low, 6),
            "ci_high": round(iv.high, 6), "wins": sum(1 for d in diffs if d > 1e-12),
            "losses": sum(1 for d in diffs if d < -1e-12), "p": paired_p(scores[name], scores[base])}


def _family(settings: Settings, scores: dict[str, list[float]], names: list[str], base: str,
            alpha: float, step: int) -> list[dict[str, Any]]:
    """Each of ``names`` against ``base``, Holm-corrected within this family."""
    rows = [_compare(settings, scores, n, base) for n in names]
    for r, adj in zip(rows, holm([r["p"] for r in rows]), strict=True):
        r.update(p=round(r["p"], 6), p_holm=round(adj, 6), step=step,
                 significant=bool(adj < alpha and r["difference"] > 0))
    return rows


def decide(settings: Settings, scores: dict[str, list[float]]) -> dict[str, Any]:
    """The choice among the scored candidates (name -> per-question nDCG@10, same question order),
    the comparisons behind it and the reason, in words."""
    cands = {c.name: c for c in candidates() if c.name in scores}
    n = len(scores["dense"])
    alpha = round(1 - settings.eval.confidence, 6)
    mean = {k: float(np.mean(v)) if v else 0.0 for k, v in scores.items()}
    need = settings.retrieval.tune_min_questions
    if n < need:
        return {"choice": "dense", "comparisons": [], "alpha": alpha, "reason": (
            f"only {n} golden question(s) have their documents in the index, at least {need} are needed to tell the "
            "modes apart (retrieval.tune_min_questions): keeping dense, the simplest mode")}
    others = [k for k in cands if k != "dense"]
    first = _family(settings, scores, others, "dense", alpha, 1)
    sig = {r["candidate"]: r for r in first if r["significant"]}
    comparisons = list(first)
    hybrids = [k for k in others if cands[k].mode == "hybrid"]
    if not sig:
        best = max(others, key=lambda k: (mean[k], -others.index(k)))
        r = next(r for r in first if r["candidate"] == best)
        return {"choice": "dense", "comparisons": comparisons, "alpha": alpha, "reason": (
            f"no candidate is significantly better than dense on {n} questions (best: {best}, nDCG@10 "
            f"{mean[best]:.4f} vs {mean['dense']:.4f}, Holm p={r['p_holm']:.3g} >= {alpha:g}): keeping dense, the "
            "simplest mode")}
    if "lexical" in sig:
        lex = sig["lexical"]
        second = _family(settings, scores, hybrids, "lexical", alpha, 2)
        comparisons += second
        better = [r for r in second if r["significant"]]
        if not better:
            return {"choice": "lexical", "comparisons": comparisons, "alpha": alpha, "reason": (
                f"lexical beats dense on {n} questions (nDCG@10 {mean['lexical']:.4f} vs {mean['dense']:.4f}, Holm "
                f"p={lex['p_holm']:.3g}) and no hybrid weighting is significantly better than lexical")}
        win = max(better, key=lambda r: (mean[r["candidate"]], -hybrids.index(r["candidate"])))
        return {"choice": win["candidate"], "comparisons": comparisons, "alpha": alpha, "reason": (
            f"{win['candidate']} beats lexical on {n} questions (nDCG@10 {mean[win['candidate']]:.4f} vs "
            f"{mean['lexical']:.4f}, Holm p={win['p_holm']:.3g}), which beats dense (Holm p={lex['p_holm']:.3g})")}
    win = max(sig.values(), key=lambda r: (mean[r["candidate"]], -hybrids.index(r["candidate"])))
    return {"choice": win["candidate"], "comparisons": comparisons, "alpha": alpha, "reason": (
        f"{win['candidate']} beats dense on {n} questions (nDCG@10 {mean[win['candidate']]:.4f} vs "
        f"{mean['dense']:.4f}, Holm p={win['p_holm']:.3g}); lexical alone is not significantly better than dense")}


def evaluate_collection(settings: Settings, index: str, collection: str, dataset: str, *,
                        embedder: Embedder, store: VectorStore) -> dict[str, Any]:
    """Score every candidate on ``collection`` (a version of ``index``, live or about to be) and
    decide; returns the record stored on the version."""
    from ragops.evaluation.runner import Retriever, retrieval_questions, retrieval_rows
    from ragops.llm import SentenceEncoder

    t0 = time.perf_counter()
    ds, qs = retrieval_questions(settings, index, dataset)
    if not qs:
        raise EvalError(f"none of the {len(ds)} questions of {dataset} has relevant documents that are all in index "
                        f"{index}: it is not this index's golden set; pass the right one with --dataset, or set "
                        f"indexes.{index}.golden in the settings")
    encoder = SentenceEncoder(embedder)  # one cache: every candidate embeds the questions once
    scores: dict[str, list[float]] = {}
    for c in candidates():
        tuned = settings.replace(retrieval=dataclasses.replace(settings.retrieval, mode=c.mode,
                                                               dense_weight=c.dense_weight,
                                                               lexical_weight=c.lexical_weight))
        rows = retrieval_rows(Retriever(store, encoder, collection, c.mode, tuned), qs, (10,))
        scores[c.name] = [float(row[METRIC]) for row in rows]
        log.info("tune %s: %s nDCG@10 %.4f on %d questions", collection, c.name, float(np.mean(scores[c.name])),
                 len(qs))
    verdict = decide(settings, scores)
    e = settings.eval
    table = []
    for c in candidates():
        iv = paired_bootstrap(scores[c.name], e.bootstrap_samples, e.confidence, e.seed)  # interval of the mean
        table.append({"name": c.name, "mode": c.mode, "dense_weight": c.dense_weight,
                      "lexical_weight": c.lexical_weight, METRIC: round(iv.mean, 6), "ci_low": round(iv.low, 6),
                      "ci_high": round(iv.high, 6)})
    chosen = next(c for c in candidates() if c.name == verdict["choice"])
    weights = (chosen.dense_weight, chosen.lexical_weight) if chosen.mode == "hybrid" else \
        (settings.retrieval.dense_weight, settings.retrieval.lexical_weight)
    return {"mode": chosen.mode, "dense_weight": weights[0], "lexical_weight": weights[1],
            "rrf_k": settings.retrieval.rrf_k, "candidate": chosen.name, "reason": verdict["reason"],
            "tuned_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "metric": METRIC,
            "test": "one-sided Wilcoxon signed-rank on per-question differences, Holm-corrected per step",
            "alpha": verdict["alpha"], "confidence": e.confidence, "dataset": ds.path, "dataset_sha256": ds.sha256,
            "questions": len(qs), "dataset_questions": len(ds), "collection": collection,
            "candidates": table, "comparisons": verdict["comparisons"],
            "seconds": round(time.perf_counter() - t0, 3)}


def tune(settings: Settings, index: str | None = None, dataset: str | None = None, apply: bool = True,
         actor: str = "cli", *, embedder: Embedder | None = None, store: VectorStore | None = None) -> dict[str, Any]:
    """Tune the live version of ``index`` on ``dataset`` (default: the index's golden set, as the
    rebuild gate picks it). ``apply``: store the choice on the version and audit-log it; without,
    a dry run that only reports."""
    state.require_schema(settings.state_db_url)
    index = index or settings.ingest.default_index
    check_index_name(index)
    with state.session_scope(settings.state_db_url) as s:
        live = state.live_version(s, index)
        known = state.known_indexes(s)
    if live is None:
        raise UnknownIndexError(f"unknown index {index!r}: known indexes are {', '.join(known) or '(none yet)'}; "
                                f"ingest into it first with `ragops ingest SOURCE --index {index}`")
    golden = dataset or settings.golden_set(index)
    if not golden:
        raise RagopsError(f"index {index} has no golden set to tune on: set indexes.{index}.golden in the settings "
                          "file (a JSONL of questions with relevant_doc_ids), or pass --dataset PATH")
    embedder = embedder or Embedder(pipelines.for_index(settings, index).embedding)  # the index's own model
    record = evaluate_collection(settings, index, live.collection, str(golden), embedder=embedder,
                                 store=store or VectorStore(settings))
    record["version"] = live.version
    record["actor"] = actor
    if apply:
        with state.session_scope(settings.state_db_url) as s:
            v = s.get(state.IndexVersion, live.id)
            v.retrieval = record  # type: ignore[union-attr]
            audit(s, actor, index, record)
    log.info("index %s v%d: retrieval %s (%s)%s", index, live.version, record["candidate"], record["reason"],
             "" if apply else " [dry run, not stored]")
    return {"index": index, "version": live.version, "collection": live.collection, "applied": apply,
            "previous": live.retrieval, **record}


def audit(session: Any, actor: str, index: str, record: dict[str, Any]) -> None:
    """The decision in the audit log: the choice, why, and the evidence (figures and p-values)."""
    state.audit(session, actor, "index_retrieval_tuned", index, collection=record["collection"],
                mode=record["mode"], candidate=record["candidate"], dense_weight=record["dense_weight"],
                lexical_weight=record["lexical_weight"], rrf_k=record["rrf_k"], reason=record["reason"],
                dataset=record["dataset"], dataset_sha256=record["dataset_sha256"], questions=record["questions"],
                candidates=record["candidates"], comparisons=record["comparisons"])
