"""Search the live collection of an index, and report an index's status.

Readers resolve the index alias at query time, so a swap or rollback takes effect at once.

Imports point one way: this reader side uses ``indexing`` (the self-check) and ``lexical`` (the
BM25 index, and ``build_lexical``, kept importable from here); ``indexing`` never imports this
module. Every ranking is a total order (score, then chunk id or rank of first appearance), so an
unchanged index version gives the same results in every process.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from sqlalchemy import func, select

from ragops import pipelines, state
from ragops.config import RETRIEVAL_MODES, RetrievalSettings, Settings, check_index_name
from ragops.embedding import Embedder
from ragops.errors import RagopsError, UnknownIndexError, VectorStoreBusyError
from ragops.indexing import _self_check_locked
from ragops.lexical import LexicalIndex, build_lexical, folder_bytes, folder_for, rrf
from ragops.vectorstore import VectorStore

__all__ = ["MAX_K", "Effective", "Hit", "build_lexical", "check_mode", "describe_retrieval", "effective", "fuse",
           "hits_as_dicts", "index_status", "lexical_index", "live_collection", "quarantine_entries", "search",
           "tuned_summary"]

log = logging.getLogger(__name__)
MAX_K = 200


@dataclass(frozen=True)
class Hit:
    rank: int
    doc_id: str
    chunk_id: str
    score: float
    title: str
    headings: str
    snippet: str
    text: str
    page: str = ""  # page or page range of a PDF chunk ("3", "3-4")


def live_collection(settings: Settings, index: str) -> str:
    check_index_name(index)
    state.require_schema(settings.state_db_url)
    with state.session_scope(settings.state_db_url) as s:
        live = state.live_version(s, index)
        known = state.known_indexes(s)
    if live is None:
        raise UnknownIndexError(
            f"unknown index {index!r}: known indexes are {', '.join(known) or '(none yet)'}; "
            f"ingest into it first with `ragops ingest SOURCE --index {index}`"
        )
    return live.collection


def _hit(rank: int, cid: str, doc: str | None, meta: dict[str, Any] | None, score: float) -> Hit:
    meta = meta or {}
    body = (doc or "")[int(meta.get("context_chars", 0) or 0):].lstrip()  # without the heading context
    snippet = " ".join(body.split())
    return Hit(rank=rank, doc_id=str(meta.get("doc_id", "")), chunk_id=cid, score=round(float(score), 4),
               title=str(meta.get("title", "")), headings=str(meta.get("headings", "")),
               snippet=snippet[:240] + ("…" if len(snippet) > 240 else ""), text=doc or "",
               page=str(meta.get("pages", "") or ""))


def check_mode(mode: str) -> str:
    if mode not in RETRIEVAL_MODES:
        raise RagopsError(f"unknown retrieval mode {mode!r}: use one of {', '.join(RETRIEVAL_MODES)}")
    return mode


class Effective(NamedTuple):
    """The retrieval a call uses: its mode, the retrieval settings with that mode and the fusion
    weights in force, and where the mode came from (``call``, ``prompt``, ``tuned``, ``settings``)."""

    mode: str
    retrieval: RetrievalSettings
    source: str

    def describe(self) -> dict[str, Any]:
        r = self.retrieval
        return {"mode": self.mode, "source": self.source, "dense_weight": r.dense_weight,
                "lexical_weight": r.lexical_weight, "rrf_k": r.rrf_k}


def effective(settings: Settings, index: str, mode: str | None = None, *, prompt_mode: str | None = None,
              version: state.IndexVersion | None = None) -> Effective:
    """Which retrieval serves ``index``: an explicit ``mode`` > the prompt's own mode > the live
    version's tuned choice (``ragops index tune``, or the rebuild that built it) > ``retrieval.mode``.

    The tuned fusion weights (and ``rrf_k``) apply whenever the mode is hybrid and the tuning chose
    hybrid, whoever named the mode: they are the index's best fusion. ``version``: the live version
    row the caller already holds (saves a query); default: read it."""
    tuned: dict[str, Any] | None = None
    if version is None:
        check_index_name(index)
        with state.session_scope(settings.state_db_url) as s:
            live = state.live_version(s, index)
            tuned = live.retrieval if live is not None else None
    else:
        tuned = version.retrieval
    if not isinstance(tuned, dict) or tuned.get("mode") not in RETRIEVAL_MODES:
        tuned = None  # not tuned (or a record this version cannot read): the settings serve
    if mode:
        chosen, source = check_mode(mode), "call"
    elif prompt_mode:
        chosen, source = check_mode(prompt_mode), "prompt"
    elif tuned is not None:
        chosen, source = str(tuned["mode"]), "tuned"
    else:
        chosen, source = check_mode(settings.retrieval.mode), "settings"
    r = dataclasses.replace(settings.retrieval, mode=chosen)
    if chosen == "hybrid" and tuned is not None and tuned["mode"] == "hybrid":
        r = dataclasses.replace(r, dense_weight=float(tuned.get("dense_weight", r.dense_weight)),
                                lexical_weight=float(tuned.get("lexical_weight", r.lexical_weight)),
                                rrf_k=int(tuned.get("rrf_k", r.rrf_k)))
    return Effective(chosen, r, source)


def search(settings: Settings, text: str, k: int = 5, index: str | None = None, *,
           embedder: Embedder | None = None, store: VectorStore | None = None,
           unique_docs: bool = False, mode: str | None = None) -> list[Hit]:
    """Top-k chunks of the live version of ``index``.

    ``mode`` (default: the live version's tuned mode, else ``retrieval.mode``; see
    :func:`effective`): ``dense`` = cosine similarity in Chroma (score in [-1, 1]); ``lexical`` =
    BM25 over the same chunks (score = BM25); ``hybrid`` = reciprocal rank fusion of both (score =
    fused RRF score). ``unique_docs`` keeps only each document's best chunk (document-level ranking)."""
    if not text or not text.strip():
        raise RagopsError("empty query: pass the text to search for")
    if not 1 <= k <= MAX_K:
        raise RagopsError(f"k must be between 1 and {MAX_K}, got {k}")
    if mode:
        check_mode(mode)
    index = index or settings.ingest.default_index
    collection = live_collection(settings, index)
    eff = effective(settings, index, mode)
    mode = eff.mode
    store = store or VectorStore(settings)
    if mode != "dense":
        return _search_ranked(settings.replace(retrieval=eff.retrieval), index, text.strip(), k, collection, store,
                              embedder, unique_docs, mode)
    embedder = embedder or Embedder(pipelines.for_index(settings, index).embedding)  # the index's own model
    vec = embedder.encode([text.strip()], log_every=1e9)[0]
    fetch = k * 4 if unique_docs else k
    while True:  # with unique_docs, widen the chunk window until k documents are found
        res = store.query(collection, vec, fetch)
        n = len(res["ids"][0])
        if not unique_docs or n < fetch or fetch >= MAX_K * 20 or \
                len({(m or {}).get("doc_id") for m in res["metadatas"][0]}) >= k:
            break
        fetch *= 4
    return _top_hits(((cid, doc, meta or {}, 1.0 - float(dist)) for cid, doc, meta, dist in zip(
        res["ids"][0], res["documents"][0], res["metadatas"][0], res["distances"][0], strict=True)), k, unique_docs)


def _top_hits(rows: Iterable[tuple[str, str | None, dict[str, Any], float]], k: int,
              unique_docs: bool) -> list[Hit]:
    """The first k ranked chunks (only each document's best one with ``unique_docs``)."""
    hits: list[Hit] = []
    seen: set[str] = set()
    for cid, doc, meta, score in rows:
        doc_id = str(meta.get("doc_id", ""))
        if unique_docs and doc_id in seen:
            continue
        seen.add(doc_id)
        hits.append(_hit(len(hits) + 1, cid, doc, meta, score))
        if len(hits) == k:
            break
    return hits


def fuse(settings: Settings, dense: list[str], lexical: list[str]) -> list[tuple[str, float]]:
    """Weighted reciprocal rank fusion of a dense and a lexical chunk ranking (equal fused scores:
    first appearance, dense ranking first; both inputs are deterministic, so the fusion is)."""
    r = settings.retrieval
    return rrf([dense, lexical], [r.dense_weight, r.lexical_weight], k=r.rrf_k)


def _search_ranked(settings: Settings, index: str, text: str, k: int, collection: str, store: VectorStore,
                   embedder: Embedder | None, unique_docs: bool, mode: str) -> list[Hit]:
    lex = lexical_index(settings, collection)
    n = min(MAX_K * 4, max(settings.retrieval.candidates, k * (4 if unique_docs else 1)))
    lex_hits = lex.query(text, n)
    lexical = [cid for cid, _doc, _score in lex_hits]
    if mode == "lexical":
        ranked = [(cid, score) for cid, _doc, score in lex_hits]
    else:
        embedder = embedder or Embedder(pipelines.for_index(settings, index).embedding)
        vec = embedder.encode([text], log_every=1e9)[0]
        dense = store.query(collection, vec, n)["ids"][0]
        ranked = fuse(settings, list(dense), lexical)
    chunks = store.get_chunks(collection, [cid for cid, _ in ranked])
    # a chunk missing from Chroma was deleted since the lexical index was built: skipped
    return _top_hits(((cid, *chunks[cid], score) for cid, score in ranked if cid in chunks), k, unique_docs)


_LEXICAL_CACHE: dict[str, tuple[float, LexicalIndex]] = {}


def lexical_index(settings: Settings, collection: str) -> LexicalIndex:
    """The BM25 index of a collection, cached per process until its folder is rebuilt."""
    folder = folder_for(settings.data_dir, collection)
    manifest = folder / "manifest.json"
    try:
        stamp = manifest.stat().st_mtime
    except OSError:
        stamp = -1.0
    cached = _LEXICAL_CACHE.get(str(folder))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    idx = LexicalIndex.load(folder)
    _LEXICAL_CACHE[str(folder)] = (stamp, idx)
    return idx


def hits_as_dicts(hits: list[Hit]) -> list[dict[str, Any]]:
    return [asdict(h) for h in hits]


def index_status(settings: Settings, index: str | None = None, *, store: VectorStore | None = None,
                 check: bool = True) -> list[dict[str, Any]]:
    """Live collection, counts per source, last sync run and a self-check for each index."""
    state.require_schema(settings.state_db_url)
    store = store or VectorStore(settings)
    with state.session_scope(settings.state_db_url) as s:
        names = state.known_indexes(s)
        if index is not None:
            check_index_name(index)
            if index not in names:
                raise UnknownIndexError(f"unknown index {index!r}: known indexes are {', '.join(names) or '(none yet)'}; "
                                        f"ingest into it first with `ragops ingest SOURCE --index {index}`")
            names = [index]
        out = []
        for name in names:
            live = state.live_version(s, name)
            sources = s.execute(
                select(state.Document.source_id, func.count(), func.sum(state.Document.n_chunks))
                .where(state.Document.index_name == name).group_by(state.Document.source_id)
            ).all()
            last = s.execute(select(state.SyncRun).where(state.SyncRun.index_name == name)
                             .order_by(state.SyncRun.started_at.desc()).limit(1)).scalar_one_or_none()
            quarantined = s.execute(select(func.count()).select_from(state.Quarantine)
                                    .where(state.Quarantine.run_id == last.run_id,
                                           state.Quarantine.severity == "failure")).scalar() if last else 0
            vers = s.execute(select(state.IndexVersion).where(state.IndexVersion.index_name == name)
                             .order_by(state.IndexVersion.version)).scalars().all()
            out.append({
                "versions": [{"version": v.version, "collection": v.collection, "status": v.status,
                              "embedding_model": v.embedding_model.split("|")[0], "pipeline": v.pipeline,
                              "pipeline_text": pipelines.describe(v.pipeline), "built_by": v.built_by,
                              "stats": v.stats or {}, "created_at": v.created_at.isoformat(),
                              "retrieval": tuned_summary(v.retrieval),
                              "bm25_bytes": folder_bytes(settings.data_dir, v.collection)} for v in vers],
                "pipeline_drift": pipelines.drift(settings, name),
                "index": name, "collection": live.collection if live else None,
                "version": live.version if live else None, "embedding_model": live.embedding_model if live else None,
                "retrieval": effective(settings, name, version=live).describe() if live else None,
                "documents": int(sum(r[1] for r in sources)), "chunks": int(sum(r[2] or 0 for r in sources)),
                "sources": [{"source_id": r[0], "documents": int(r[1]), "chunks": int(r[2] or 0)} for r in sources],
                "last_run": None if last is None else {
                    "run_id": last.run_id, "status": last.status, "trigger": last.trigger,
                    "started_at": last.started_at.isoformat() if last.started_at else None,
                    "finished_at": last.finished_at.isoformat() if last.finished_at else None,
                    "quarantined": int(quarantined or 0)},
            })
    if check:
        for item in out:
            if not item["collection"]:
                continue
            try:
                store.lock_timeout = 5.0
                with store.writer():
                    item["self_check"] = _self_check_locked(settings, store, item["index"], item["collection"])
                    for v in item["versions"]:
                        if v["status"] in ("live", "retired") and store.has_collection(v["collection"]):
                            v["vectors"] = store.count(v["collection"])
            except VectorStoreBusyError:
                item["self_check"] = {"ok": None, "skipped": "a writer holds the embedded Chroma lock; try again"}
    return out


def tuned_summary(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The short form of a version's tuned retrieval (status pages): the choice and why."""
    if not record:
        return None
    return {k: record.get(k) for k in ("mode", "dense_weight", "lexical_weight", "rrf_k", "candidate", "tuned_at",
                                       "questions", "reason")}


def describe_retrieval(record: dict[str, Any] | None, settings: Settings) -> str:
    """One line for a version: ``hybrid 1:0.5 (tuned on 50 questions)`` or ``hybrid (settings)``."""
    if not record or record.get("mode") not in RETRIEVAL_MODES:
        r = settings.retrieval
        weights = f" {r.dense_weight:g}:{r.lexical_weight:g}" if r.mode == "hybrid" else ""
        return f"{r.mode}{weights} (settings, not tuned)"
    weights = (f" {float(record.get('dense_weight', 1.0)):g}:{float(record.get('lexical_weight', 1.0)):g}"
               if record["mode"] == "hybrid" else "")
    return f"{record['mode']}{weights} (tuned on {record.get('questions', '?')} questions)"


def quarantine_entries(settings: Settings, index: str | None = None, run_id: str | None = None,
                       limit: int = 100, severities: tuple[str, ...] = ("failure",)) -> list[dict[str, Any]]:
    """Quarantined documents of the latest (or a given) sync run; with ``severities`` also the
    documents that were indexed after a repair (``repaired``) or with a warning (``warning``)."""
    state.require_schema(settings.state_db_url)
    with state.session_scope(settings.state_db_url) as s:
        q = select(state.Quarantine).where(state.Quarantine.severity.in_(severities)) \
            .order_by(state.Quarantine.id.desc()).limit(limit)
        if index:
            q = q.where(state.Quarantine.index_name == index)
        if run_id:
            q = q.where(state.Quarantine.run_id == run_id)
        else:  # default: the latest run's entries
            last = s.execute(select(state.SyncRun.run_id).where(
                *([state.SyncRun.index_name == index] if index else [])
            ).order_by(state.SyncRun.started_at.desc()).limit(1)).scalar_one_or_none()
            if last:
                q = q.where(state.Quarantine.run_id == last)
        return [{"run_id": r.run_id, "index": r.index_name, "doc_id": r.doc_id, "stage": r.stage,
                 "reason": r.reason, "detail": r.detail, "source_id": r.source_id, "severity": r.severity,
                 "created_at": r.created_at.isoformat()} for r in s.execute(q).scalars()]


def explain_missing_docs(settings: Settings, index: str, doc_ids: list[str]) -> dict[str, str]:
    """Why each document id is not in ``index``: quarantined by which run and why, held by another
    index, or never seen by any sync of this index (unknown to its sources)."""
    state.require_schema(settings.state_db_url)
    out: dict[str, str] = {}
    ids = sorted(set(doc_ids))
    with state.session_scope(settings.state_db_url) as s:
        sources = sorted(set(s.execute(select(state.SyncRun.source_id).where(
            state.SyncRun.index_name == index)).scalars()))
        quarantined: dict[str, Any] = {}
        elsewhere: dict[str, list[str]] = {}
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            for row in s.execute(select(state.Quarantine).where(
                    state.Quarantine.index_name == index, state.Quarantine.severity == "failure",
                    state.Quarantine.doc_id.in_(part)).order_by(state.Quarantine.id)).scalars():
                quarantined[row.doc_id] = row  # the newest entry wins
            for doc_id, other in s.execute(select(state.Document.doc_id, state.Document.index_name).where(
                    state.Document.index_name != index, state.Document.doc_id.in_(part))).all():
                elsewhere.setdefault(doc_id, []).append(other)
    for d in ids:
        row = quarantined.get(d)
        if row is not None:
            when = row.created_at.strftime("%Y-%m-%d %H:%M UTC") if row.created_at else "?"
            out[d] = (f"quarantined by sync run {row.run_id} ({when}) at the {row.stage} stage, reason {row.reason}: "
                      f"{row.detail[:300]}; fix the document at its source and re-ingest (`ragops quarantine --run "
                      f"{row.run_id}` lists the run's entries)")
        elif d in elsewhere:
            out[d] = (f"never ingested into index {index!r}, but index(es) {', '.join(sorted(elsewhere[d]))} hold it: "
                      "evaluate against that index (--index) or ingest its source into this one")
        else:
            where = ", ".join(sources) if sources else "(no sync of this index yet)"
            out[d] = (f"unknown to every source synced into index {index!r} ({where}): check the id (record ids keep "
                      "their file prefix, e.g. corpus.jsonl#<id>), or ingest the source that has it")
    return out


def explain_unknown_docs_error(settings: Settings, index: str, err: Any, limit: int = 10) -> Exception:
    """A DatasetError for relevant documents missing from ``index`` that says why, per id."""
    from ragops.errors import DatasetError

    missing = list(getattr(err, "missing", []) or [])
    if not missing:
        return err
    why = explain_missing_docs(settings, index, [d for _, d, _ in missing])
    lines = []
    for qid, d, line in missing[:limit]:
        at = f", line {line}" if line else ""
        lines.append(f"  - document {d!r} (question {qid!r}{at}): {why[d]}")
    more = f"\n  ... and {len(missing) - limit} more" if len(missing) > limit else ""
    return DatasetError(
        f"{getattr(err, 'path', 'dataset')}: {len(missing)} relevant document id(s) are not in index {index!r}:\n"
        + "\n".join(lines) + more +
        "\nFix the ids or the documents; or pass --allow-unknown-docs (eval.allow_unknown_doc_ids: true) to evaluate "
        "anyway: those documents cannot be retrieved, so their questions count as misses")

