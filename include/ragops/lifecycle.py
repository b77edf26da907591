"""Index versions: blue/green rebuilds with vector reuse, validation before the swap, retention
and rollback.

A rebuild writes a new collection ``<index>__v<N+1>`` from the state store's chunks, copying
the stored vector of every chunk the live collection already holds and embedding only the rest,
validates it (ids and counts equal the state store's, a sample of vectors equals a fresh
embedding of its text, retrieval on the index's golden questions no worse than live by more
than ``eval.regression_margin``), and only then moves the alias in one transaction. The whole
rebuild holds the Chroma writer lock, so no sync commits into the live version meanwhile.

Status of a version: ``building`` (a rebuild is writing it; one left over was killed and is
removed by the next rebuild), ``live``, ``retired`` (kept for rollback), ``rejected`` (failed
validation; its collection is dropped), ``deleted`` (beyond retention; dropped), ``abandoned``
(left ``building`` by a killed rebuild and removed by the next one).

Not yet: a model or chunking change through a rebuild (chunk ids hash those settings, and
ingests embed with the configured model; today such a change goes through ``ragops ingest
--full-resync``), the ``rebuild_index`` DAG and its e-mail.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from typing import Any

import numpy as np
from sqlalchemy import func, select

from ragops import state
from ragops.config import Settings
from ragops.embedding import Embedder
from ragops.errors import RagopsError, UnknownIndexError
from ragops.indexing import collection_name
from ragops.lexical import folder_for
from ragops.vectorstore import VectorStore

log = logging.getLogger(__name__)
PAGE = 1000
KEEP = 2  # live + one retired version for instant rollback


def versions(settings: Settings, index: str) -> list[dict[str, Any]]:
    with state.session_scope(settings.state_db_url) as s:
        live = state.live_version(s, index)
        rows = s.execute(select(state.IndexVersion).where(state.IndexVersion.index_name == index)
                         .order_by(state.IndexVersion.version)).scalars().all()
        return [{"version": v.version, "collection": v.collection, "status": v.status,
                 "live": live is not None and v.id == live.id, "embedding_model": v.embedding_model,
                 "created_at": v.created_at.isoformat()} for v in rows]


def _drop(settings: Settings, store: VectorStore, collection: str) -> None:
    if store.has_collection(collection):
        store.drop(collection)
    shutil.rmtree(folder_for(settings.data_dir, collection), ignore_errors=True)


def _cleanup_partial(settings: Settings, store: VectorStore, index: str, actor: str) -> list[str]:
    """Remove what a killed rebuild left: versions still ``building`` and collections of this
    index that no version row knows."""
    removed: list[str] = []
    with state.session_scope(settings.state_db_url) as s:
        rows = s.execute(select(state.IndexVersion).where(state.IndexVersion.index_name == index)).scalars().all()
        known = {v.collection for v in rows}
        for v in rows:
            if v.status == "building":
                _drop(settings, store, v.collection)
                v.status = "abandoned"
                removed.append(v.collection)
        prefix = f"{index}__v"
        for c in store.client.list_collections():
            name = c.name if hasattr(c, "name") else str(c)
            if name.startswith(prefix) and name not in known:
                _drop(settings, store, name)
                removed.append(name)
        if removed:
            state.audit(s, actor, "index_partial_removed", index, collections=removed)
            log.warning("removed %d partial collection(s) of index %s left by a killed rebuild: %s", len(removed),
                        index, removed)
    return removed


def _retrieval_check(settings: Settings, store: VectorStore, embedder: Embedder, index: str, live: str,
                     new: str) -> dict[str, Any] | None:
    """Hit rate@5 and nDCG@10 of the golden questions on the live and the new collection."""
    from ragops.evaluation.datasets import load_dataset
    from ragops.evaluation.metrics import retrieval_metrics
    from ragops.evaluation.runner import Retriever
    from ragops.llm import SentenceEncoder

    golden = (settings.indexes.get(index) or {}).get("golden") or (
        settings.eval.default_dataset if index == settings.ingest.default_index else None)
    if not golden:
        return None
    from ragops.evaluation.runner import index_doc_ids

    ds = load_dataset(settings.resolve_path(golden))
    known = index_doc_ids(settings, index)
    qs = [q for q in ds.questions if q.relevant and set(q.relevant) <= known]
    if not qs:
        return {"dataset": str(golden), "skipped": "no golden question has its documents in this index"}
    encoder = SentenceEncoder(embedder)
    out: dict[str, Any] = {"dataset": str(golden), "questions": len(qs)}
    for label, collection in (("live", live), ("new", new)):
        r = Retriever(store, encoder, collection)
        rows = []
        for b in range(0, len(qs), 32):
            block = qs[b:b + 32]
            for q, (docs, _ctx, _cd) in zip(block, r.block([q.question for q in block], 10, 5), strict=True):
                rows.append(retrieval_metrics([d for d, _ in docs], q.relevant, [5, 10]))
        out[label] = {m: float(np.mean([row[m] for row in rows])) if rows else 0.0 for m in ("hit_rate@5", "ndcg@10")}
    return out


def rebuild(settings: Settings, index: str | None = None, *, actor: str = "cli", embedder: Embedder | None = None,
            store: VectorStore | None = None, keep: int = KEEP) -> dict[str, Any]:
    """Build, validate and swap in a new version of ``index``; returns the report (``swapped``)."""
    from ragops.retrieval import build_lexical

    state.require_schema(settings.state_db_url)
    index = index or settings.ingest.default_index
    store = store or VectorStore(settings)
    t0 = time.perf_counter()
    with store.writer():
        with state.session_scope(settings.state_db_url) as s:
            live = state.live_version(s, index)
            if live is None:
                raise UnknownIndexError(f"index {index!r} has no live version to rebuild; ingest into it first")
            live_id, live_collection, live_version, model = live.id, live.collection, live.version, live.embedding_model
        embedder = embedder or Embedder(settings.embedding)  # reads the model's files, loads nothing yet
        if model != embedder.fingerprint:  # "<model>|<weights digest>|norm=...": same name, other weights = other
            raise RagopsError(
                f"index {index} was embedded with {model} but the settings give {embedder.fingerprint}: a rebuild "
                "reuses vectors of the same model; change models with `ragops ingest SOURCE --full-resync`")
        removed = _cleanup_partial(settings, store, index, actor)
        with state.session_scope(settings.state_db_url) as s:
            number = (s.execute(select(func.max(state.IndexVersion.version))
                                .where(state.IndexVersion.index_name == index)).scalar() or 0) + 1
            new = state.IndexVersion(index_name=index, version=number, collection=collection_name(index, number),
                                     embedding_model=model, status="building", created_at=state.utcnow())
            s.add(new)
            s.flush()
            new_id, new_collection = new.id, new.collection
        store.collection(new_collection, create=True)
        with state.session_scope(settings.state_db_url) as s:
            chunks = s.execute(select(state.Chunk.chunk_id, state.Chunk.text, state.Chunk.meta)
                               .where(state.Chunk.index_name == index).order_by(state.Chunk.chunk_id)).all()
        reused = embedded = 0
        for i in range(0, len(chunks), PAGE):
            page = chunks[i:i + PAGE]
            have = store.get_embeddings(live_collection, [c[0] for c in page])
            todo = [c for c in page if c[0] not in have]
            if todo:
                fresh = embedder.encode([c[1] for c in todo])
                have.update({c[0]: v for c, v in zip(todo, fresh, strict=True)})
                embedded += len(todo)
            reused += len(page) - len(todo)
            store.upsert(new_collection, [c[0] for c in page], np.asarray([have[c[0]] for c in page], dtype=np.float32),
                         [c[1] for c in page], [dict(c[2] or {}) for c in page])
            log.info("rebuild %s: %d/%d chunks written (%d reused, %d embedded)", new_collection,
                     min(i + PAGE, len(chunks)), len(chunks), reused, embedded)

        # validation: ids, a sample of vectors against their text, retrieval on the golden questions
        reasons: list[str] = []
        expected = {c[0] for c in chunks}
        actual = store.ids(new_collection)
        if actual != expected:
            reasons.append(f"ids differ from the state store: {len(expected - actual)} missing, "
                           f"{len(actual - expected)} extra")
        sample = random.Random(settings.eval.seed).sample(chunks, min(20, len(chunks)))
        stored = store.get_embeddings(new_collection, [c[0] for c in sample])
        fresh = embedder.encode([c[1] for c in sample], log_every=1e9) if sample else []
        sims = [float(np.dot(stored[c[0]], v)) for c, v in zip(sample, fresh, strict=True) if c[0] in stored]
        if sims and min(sims) < 0.99:
            reasons.append(f"a sampled stored vector does not match its text (cosine {min(sims):.4f} < 0.99)")
        check = _retrieval_check(settings, store, embedder, index, live_collection, new_collection)
        margin = settings.eval.regression_margin
        if check is not None and "skipped" not in check:
            for m in ("hit_rate@5", "ndcg@10"):
                if check["new"][m] < check["live"][m] - margin:
                    reasons.append(f"{m} {check['new'][m]:.4f} is below live {check['live'][m]:.4f} by more than "
                                   f"{margin}")
        evidence = {"from": live_collection, "to": new_collection, "chunks": len(chunks), "reused": reused,
                    "embedded": embedded, "sample_min_cosine": min(sims) if sims else None, "retrieval": check,
                    "removed_partial": removed}
        if reasons:
            _drop(settings, store, new_collection)
            with state.session_scope(settings.state_db_url) as s:
                s.get(state.IndexVersion, new_id).status = "rejected"
                state.audit(s, actor, "index_rebuild_rejected", index, reasons=reasons, **evidence)
            log.error("rebuild of %s rejected, %s keeps serving: %s", index, live_collection, "; ".join(reasons))
            return {"index": index, "swapped": False, "reasons": reasons, "live": live_collection, **evidence,
                    "elapsed_s": round(time.perf_counter() - t0, 3)}
        lexical = build_lexical(settings, index, new_collection)
        with state.session_scope(settings.state_db_url) as s:  # the swap: one transaction
            now = set(s.execute(select(state.Chunk.chunk_id).where(state.Chunk.index_name == index)).scalars())
            if now != expected:  # server mode has no writer lock: a sync committed during the rebuild
                raise RagopsError(f"index {index} changed while {new_collection} was being built (a sync "
                                  f"committed); {live_collection} keeps serving: run the rebuild again")
            alias = s.get(state.IndexAlias, index)
            alias.version_id, alias.updated_at = new_id, state.utcnow()
            s.get(state.IndexVersion, new_id).status = "live"
            s.get(state.IndexVersion, live_id).status = "retired"
            state.audit(s, actor, "index_swapped", index, **evidence)
        deleted = _retain(settings, store, index, keep, actor)
    log.info("index %s now serves %s (v%d -> v%d; %d reused, %d embedded)", index, new_collection, live_version,
             number, reused, embedded)
    return {"index": index, "swapped": True, "live": new_collection, "previous": live_collection, **evidence,
            "lexical": lexical, "deleted": deleted, "elapsed_s": round(time.perf_counter() - t0, 3)}


def _retain(settings: Settings, store: VectorStore, index: str, keep: int, actor: str) -> list[str]:
    """Drop versions beyond the newest ``keep`` live/retired ones (dropping also frees Chroma's space)."""
    deleted: list[str] = []
    with state.session_scope(settings.state_db_url) as s:
        kept = s.execute(select(state.IndexVersion).where(state.IndexVersion.index_name == index,
                                                          state.IndexVersion.status.in_(("live", "retired")))
                         .order_by(state.IndexVersion.version.desc())).scalars().all()
        for v in kept[max(keep, 1):]:
            if v.status == "live":
                continue
            _drop(settings, store, v.collection)
            v.status = "deleted"
            deleted.append(v.collection)
        if deleted:
            state.audit(s, actor, "index_versions_deleted", index, collections=deleted, keep=keep)
    return deleted


def rollback(settings: Settings, index: str | None = None, to: int | None = None, *, actor: str = "cli",
             store: VectorStore | None = None) -> dict[str, Any]:
    """Move the alias back to a retained version (default: the newest retired one). Chunks that
    syncs changed since that version served are brought over from the live version first, so
    the target equals the state store when it starts serving."""
    from ragops.indexing import _self_check_locked
    from ragops.retrieval import build_lexical

    state.require_schema(settings.state_db_url)
    index = index or settings.ingest.default_index
    store = store or VectorStore(settings)
    with store.writer():
        with state.session_scope(settings.state_db_url) as s:
            live = state.live_version(s, index)
            if live is None:
                raise UnknownIndexError(f"index {index!r} has no live version")
            q = select(state.IndexVersion).where(state.IndexVersion.index_name == index,
                                                 state.IndexVersion.status == "retired")
            if to is not None:
                q = q.where(state.IndexVersion.version == to)
            target = s.execute(q.order_by(state.IndexVersion.version.desc()).limit(1)).scalar_one_or_none()
            have = [f"v{v.version}" for v in s.execute(select(state.IndexVersion).where(
                state.IndexVersion.index_name == index, state.IndexVersion.status == "retired")).scalars()]
            if target is None:
                raise RagopsError(f"no retained version {'v' + str(to) if to else ''} of index {index} to roll back to "
                                  f"(retained: {', '.join(have) or 'none'}); rebuild first")
            if target.embedding_model != live.embedding_model:
                raise RagopsError(f"v{target.version} was embedded with {target.embedding_model}, the live version "
                                  f"with {live.embedding_model}: rolling back across models is not supported")
            target_id, target_collection, live_id, live_collection = target.id, target.collection, live.id, live.collection
            target_version, live_version = target.version, live.version
            expected = set(s.execute(select(state.Chunk.chunk_id).where(state.Chunk.index_name == index)).scalars())
        actual = store.ids(target_collection)
        missing, extra = sorted(expected - actual), sorted(actual - expected)
        for i in range(0, len(missing), PAGE):  # changed since: copy from the live version
            ids = missing[i:i + PAGE]
            vecs = store.get_embeddings(live_collection, ids)
            chunks = store.get_chunks(live_collection, ids)
            lost = [c for c in ids if c not in vecs or c not in chunks]
            if lost:
                raise RagopsError(f"the live version {live_collection} lacks {len(lost)} chunk(s) of the state store "
                                  f"(e.g. {lost[:3]}), so v{target_version} cannot be brought up to date; run "
                                  "`ragops index status` and re-sync the index first")
            store.upsert(target_collection, ids, np.asarray([vecs[c] for c in ids], dtype=np.float32),
                         [chunks[c][0] for c in ids], [chunks[c][1] for c in ids])
        store.delete(target_collection, extra)
        check = _self_check_locked(settings, store, index, target_collection)
        if not check["ok"]:
            raise RagopsError(f"v{target_version} does not match the state store after reconciling ({check}); "
                              "the live version keeps serving")
        lexical = build_lexical(settings, index, target_collection)
        with state.session_scope(settings.state_db_url) as s:
            alias = s.get(state.IndexAlias, index)
            alias.version_id, alias.updated_at = target_id, state.utcnow()
            s.get(state.IndexVersion, target_id).status = "live"
            s.get(state.IndexVersion, live_id).status = "retired"
            state.audit(s, actor, "index_rolled_back", index, **{"from": live_collection, "to": target_collection},
                        copied=len(missing), removed=len(extra))
    log.info("index %s rolled back from v%d to v%d (%d chunks brought over, %d removed)", index, live_version,
             target_version, len(missing), len(extra))
    return {"index": index, "from": live_collection, "to": target_collection, "copied": len(missing),
            "removed": len(extra), "self_check": check, "lexical": lexical}
