"""Index versions: blue/green rebuilds with vector reuse, validation before the swap, retention
and rollback.

A rebuild writes a new collection ``<index>__v<N+1>`` and only then moves the alias, in one
transaction. With the live pipeline (model and chunking, see ``ragops.pipelines``) it is built
from the state store's chunks, copying the stored vector of every chunk the live collection
already holds and embedding only the rest. With another pipeline (a model or chunking change) the
index's sources are read again, chunked and embedded into the new collection through a *shadow
index* ``<index>~v<N>`` in the state store, so the live chunks are untouched until the swap;
at the swap the live rows are archived as ``<index>~v<old>`` (what a rollback across pipelines
restores) and the shadow rows become the index's.

Before the swap the new version is validated: ids and counts equal the state store's, a sample
of vectors equals a fresh embedding of its text, retrieval on the index's golden questions is no
worse than live by more than ``eval.regression_margin``, and a re-read keeps enough documents.
A validated version is then tuned (``ragops.tuning``, with ``retrieval.tune_on_rebuild``): its
retrieval mode and fusion weights are chosen on the golden set and stored with it; a failure to
tune is reported and leaves it untuned, never stops the swap.
The whole rebuild holds the Chroma writer lock (embedded mode), so no sync commits meanwhile; in
server mode a sync that committed during the rebuild makes the swap refuse.

Status of a version: ``building`` (a rebuild is writing it; one left over was killed and is
removed by the next rebuild), ``live``, ``retired`` (kept for rollback), ``rejected`` (failed
validation; its collection is dropped), ``failed`` (the rebuild raised; dropped), ``deleted``
(beyond retention; dropped), ``abandoned`` (left ``building`` by a killed rebuild; dropped).
"""

from __future__ import annotations

import hashlib
import logging
import random
import shutil
import time
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select, update

from ragops import pipelines, state
from ragops.config import Settings
from ragops.embedding import Embedder
from ragops.errors import RagopsError, SourceError, SourceUnreachableError, UnknownIndexError
from ragops.indexing import _embedder_for, collection_name
from ragops.lexical import folder_bytes, folder_for
from ragops.progress import Progress
from ragops.vectorstore import VectorStore

log = logging.getLogger(__name__)
PAGE = 1000


def shadow_name(index: str, version: int) -> str:
    """State-store name of a version's own rows: staged by a pipeline-change rebuild, or archived
    when a version of another pipeline took over (``~`` cannot occur in an index name)."""
    return f"{index}~v{version}"


def versions(settings: Settings, index: str, store: VectorStore | None = None) -> list[dict[str, Any]]:
    """Every version of ``index`` with its status, pipeline, who built it, its figures and its
    tuned retrieval (None: the settings' retrieval serves it)."""
    from ragops.retrieval import tuned_summary

    with state.session_scope(settings.state_db_url) as s:
        live = state.live_version(s, index)
        rows = s.execute(select(state.IndexVersion).where(state.IndexVersion.index_name == index)
                         .order_by(state.IndexVersion.version)).scalars().all()
        out = [{"version": v.version, "collection": v.collection, "status": v.status,
                "live": live is not None and v.id == live.id, "embedding_model": v.embedding_model,
                "pipeline": v.pipeline, "built_by": v.built_by, "stats": v.stats or {},
                "retrieval": tuned_summary(v.retrieval), "created_at": v.created_at.isoformat()} for v in rows]
    for v in out:
        if store is not None and v["status"] in ("live", "retired", "building"):
            v["vectors"] = store.count(v["collection"]) if store.has_collection(v["collection"]) else None
        v["bm25_bytes"] = folder_bytes(settings.data_dir, v["collection"])
    return out


def _drop(settings: Settings, store: VectorStore, collection: str) -> None:
    if store.has_collection(collection):
        store.drop(collection)
    shutil.rmtree(folder_for(settings.data_dir, collection), ignore_errors=True)


def _rename_rows(s: Any, old: str, new: str) -> int:
    """Move a set of chunk and document rows to another index name (inside the caller's transaction)."""
    n = s.execute(update(state.Chunk).where(state.Chunk.index_name == old).values(index_name=new)).rowcount
    s.execute(update(state.Document).where(state.Document.index_name == old).values(index_name=new))
    return int(n or 0)


def _drop_rows(s: Any, name: str) -> None:
    s.execute(delete(state.Chunk).where(state.Chunk.index_name == name))
    s.execute(delete(state.Document).where(state.Document.index_name == name))


def _cleanup_partial(settings: Settings, store: VectorStore, index: str, actor: str) -> list[str]:
    """Remove what a killed rebuild left: versions still ``building`` (their collections and
    staged rows), collections of this index that no version row knows, and staged or archived
    rows of versions that no longer exist."""
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
        keep_rows = {shadow_name(index, v.version) for v in rows if v.status == "retired"}
        names = set(s.execute(select(state.Chunk.index_name).where(state.Chunk.index_name.like(f"{index}~v%"))
                              .distinct()).scalars()) | set(s.execute(select(state.Document.index_name).where(
                                  state.Document.index_name.like(f"{index}~v%")).distinct()).scalars())
        for name in sorted(names - keep_rows):
            _drop_rows(s, name)
            removed.append(name)
        if removed:
            state.audit(s, actor, "index_partial_removed", index, collections=removed)
            log.warning("removed %d leftover(s) of index %s from killed or failed rebuilds: %s", len(removed),
                        index, removed)
    return removed


def _retrieval_check(settings: Settings, store: VectorStore, index: str, live: tuple[str, Embedder],
                     new: tuple[str, Embedder]) -> dict[str, Any] | None:
    """Hit rate@5 and nDCG@10 of the golden questions on the live and the new collection, each
    queried with its own model."""
    from ragops.evaluation.runner import Retriever, retrieval_questions, retrieval_rows
    from ragops.llm import SentenceEncoder

    golden = settings.golden_set(index)
    if not golden:
        return None
    _ds, qs = retrieval_questions(settings, index, golden)
    if not qs:
        return {"dataset": str(golden), "skipped": "no golden question has its documents in this index"}
    out: dict[str, Any] = {"dataset": str(golden), "questions": len(qs)}
    for label, (collection, embedder) in (("live", live), ("new", new)):
        rows = retrieval_rows(Retriever(store, SentenceEncoder(embedder), collection), qs, (5, 10))
        out[label] = {m: float(np.mean([row[m] for row in rows])) if rows else 0.0 for m in ("hit_rate@5", "ndcg@10")}
    return out


def _docs_digest(s: Any, index: str) -> str:
    """What the index's documents are now (a sync that commits changes it)."""
    h = hashlib.sha256()
    for doc_id, content_hash in s.execute(select(state.Document.doc_id, state.Document.content_hash)
                                          .where(state.Document.index_name == index)
                                          .order_by(state.Document.doc_id)):
        h.update(f"{doc_id}\0{content_hash}\n".encode())
    return h.hexdigest()


def _copy_or_embed(settings: Settings, store: VectorStore, index: str, live_collection: str, new_collection: str,
                   embedder: Embedder, force: bool) -> tuple[int, int]:
    """Same pipeline: write the state store's chunks into the new collection, reusing live vectors."""
    with state.session_scope(settings.state_db_url) as s:
        chunks = s.execute(select(state.Chunk.chunk_id, state.Chunk.text, state.Chunk.meta)
                           .where(state.Chunk.index_name == index).order_by(state.Chunk.chunk_id)).all()
    reused = embedded = 0
    t0 = time.perf_counter()
    bar = Progress(len(chunks), "chunks", f"rebuild {new_collection}")
    for i in range(0, len(chunks), PAGE):
        page = chunks[i:i + PAGE]
        have = {} if force else store.get_embeddings(live_collection, [c[0] for c in page])
        todo = [c for c in page if c[0] not in have]
        if todo:
            fresh = embedder.encode([c[1] for c in todo])
            have.update({c[0]: v for c, v in zip(todo, fresh, strict=True)})
            embedded += len(todo)
        reused += len(page) - len(todo)
        store.upsert(new_collection, [c[0] for c in page], np.asarray([have[c[0]] for c in page], dtype=np.float32),
                     [c[1] for c in page], [dict(c[2] or {}) for c in page])
        done = min(i + PAGE, len(chunks))
        bar.update(len(page), embedded=len(todo))
        rate = done / max(time.perf_counter() - t0, 1e-9)
        log.info("rebuild %s: %d/%d chunks written (%d reused, %d embedded; %.0f/s, ETA %.0fs)", new_collection,
                 done, len(chunks), reused, embedded, rate, (len(chunks) - done) / rate)
    bar.close()
    return reused, embedded


def _reingest(settings: Settings, store: VectorStore, index: str, shadow: str, new_collection: str,
              pipeline: dict[str, Any], embedder: Embedder, actor: str) -> tuple[int, int]:
    """Another pipeline: read every source of the index again, chunk and embed with ``pipeline``
    into the shadow index's rows and the new collection (the live rows are not touched)."""
    from ragops.indexing import commit_sync, new_run_id, plan_sync, process_batch

    with state.session_scope(settings.state_db_url) as s:
        sources = sorted(s.execute(select(state.Document.source_id).where(state.Document.index_name == index)
                                   .distinct()).scalars())
    if not sources:
        raise RagopsError(f"index {index} has no documents to re-read for the new pipeline")
    embedded = 0
    for source in sources:
        run_id = new_run_id("rebuild")
        try:
            plan = plan_sync(settings, source, shadow, run_id, trigger=actor, embedder=embedder, store=store,
                             pipeline=pipeline, target_collection=new_collection)
        except (RagopsError, OSError) as exc:
            kind = SourceUnreachableError if isinstance(exc, SourceUnreachableError) else SourceError
            raise kind(f"a new pipeline re-reads the index's sources, and source {source} cannot be read ({exc}); "
                       f"mount it (or re-ingest with `ragops ingest SOURCE --index {index}`) and rebuild again; the "
                       "live version keeps serving") from exc
        todo = int(plan["counts"]["added"]) + int(plan["counts"]["changed"])
        with Progress(todo if plan["batches"] else 0, "documents", f"rebuild {new_collection} from {source}") as bar:
            for b in plan["batches"]:
                r = process_batch(settings, run_id, b, embedder=embedder)
                bar.update(r["documents"], chunks=r["chunks"])
        report = commit_sync(settings, run_id, store=store, actor=actor)
        embedded += report["chunks"]["embedded"]
    return 0, embedded


def rebuild(settings: Settings, index: str | None = None, *, actor: str = "cli", embedder: Embedder | None = None,
            store: VectorStore | None = None, keep: int | None = None, model: str | None = None,
            profile: str | None = None, force: bool = False, only_if_changed: bool = False,
            backend: str | None = None) -> dict[str, Any]:
    """Build, validate and swap in a new version of ``index``; returns the report (``swapped``).

    ``model``/``profile``: ``None`` keeps the index's pipeline (or follows the settings when the
    index does), ``"settings"`` follows the settings file, anything else pins that model or
    chunking profile; ``backend`` likewise the embedding backend (``torch``, ``onnx``, ``openvino``,
    ``onnx-int8``). ``force`` embeds every chunk again instead of reusing stored vectors.
    ``only_if_changed`` (a run triggered by a settings change): nothing to do unless the pipeline
    changes, and a pipeline that was already rejected or failed since the live version was built
    is not tried again (a person rebuilds by hand after looking at why)."""
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
            live_id, live_collection, live_version = live.id, live.collection, live.version
            live_model, current = live.embedding_model, (dict(live.pipeline) if live.pipeline else None)
            digest = _docs_digest(s, index)
            live_docs = s.execute(select(func.count()).select_from(state.Document)
                                  .where(state.Document.index_name == index)).scalar() or 0
        target = pipelines.choose(settings, current, model, profile, backend)
        live_embedder = _embedder_for(pipelines.apply(settings, current or pipelines.legacy(settings)), embedder)
        new_embedder = _embedder_for(pipelines.apply(settings, target), embedder)
        if current is None and live_embedder.fingerprint != live_model:
            raise RagopsError(
                f"index {index} was embedded with {live_model.split('|')[0]} before ragops recorded pipelines, and "
                "the settings now name another model: re-sync it once with `ragops ingest SOURCE --full-resync`, "
                "then rebuild", permanent=True)
        change = not pipelines.same(current or pipelines.legacy(settings), target) \
            or new_embedder.fingerprint != live_model
        if only_if_changed:
            skip = None if change else f"index {index} already has the pipeline the settings ask for"
            with state.session_scope(settings.state_db_url) as s:
                since = s.get(state.IndexVersion, live_id).created_at
                tried = [v.version for v in s.execute(select(state.IndexVersion).where(
                    state.IndexVersion.index_name == index, state.IndexVersion.status.in_(("rejected", "failed")),
                    state.IndexVersion.created_at >= since)).scalars() if pipelines.same(v.pipeline, target)]
            if change and tried:
                skip = (f"a rebuild of index {index} with this pipeline was already rejected or failed (v{tried[-1]}); "
                        "see `ragops index status`, then rebuild by hand")
            if skip:
                log.info("nothing to rebuild: %s", skip)
                return {"index": index, "swapped": False, "skipped": skip, "live": live_collection,
                        "pipeline": target}
        removed = _cleanup_partial(settings, store, index, actor)
        with state.session_scope(settings.state_db_url) as s:
            number = (s.execute(select(func.max(state.IndexVersion.version))
                                .where(state.IndexVersion.index_name == index)).scalar() or 0) + 1
            new = state.IndexVersion(index_name=index, version=number, collection=collection_name(index, number),
                                     embedding_model=new_embedder.fingerprint, status="building", pipeline=target,
                                     built_by=actor[:128], created_at=state.utcnow())
            s.add(new)
            s.flush()
            new_id, new_collection = new.id, new.collection
        shadow = shadow_name(index, number)
        rows_of = shadow if change else index
        log.info("rebuilding index %s as %s (%s): %s", index, new_collection,
                 "new pipeline, sources re-read" if change else ("every chunk embedded again" if force
                                                                 else "vectors reused"),
                 pipelines.describe(target))
        try:
            store.collection(new_collection, create=True)
            if change:
                reused, embedded = _reingest(settings, store, index, shadow, new_collection, target, new_embedder,
                                             actor)
            else:
                reused, embedded = _copy_or_embed(settings, store, index, live_collection, new_collection,
                                                  new_embedder, force)
            reasons, evidence = _validate(settings, store, index, rows_of, new_collection, live_collection,
                                          live_embedder, new_embedder, live_docs if change else None)
        except BaseException as exc:
            with state.session_scope(settings.state_db_url) as s:
                _drop(settings, store, new_collection)
                _drop_rows(s, shadow)
                s.get(state.IndexVersion, new_id).status = "failed"
                state.audit(s, actor, "index_rebuild_failed", index, collection=new_collection,
                            error=f"{type(exc).__name__}: {exc}"[:2000])
            raise
        evidence = {"from": live_collection, "to": new_collection, "reused": reused, "embedded": embedded,
                    "pipeline_change": change, "pipeline": target, "previous_pipeline": current,
                    "removed_partial": removed, "force": force, **evidence}
        if reasons:
            with state.session_scope(settings.state_db_url) as s:
                _drop(settings, store, new_collection)
                _drop_rows(s, shadow)
                s.get(state.IndexVersion, new_id).status = "rejected"
                state.audit(s, actor, "index_rebuild_rejected", index, reasons=reasons, **evidence)
            log.error("rebuild of %s rejected, %s keeps serving: %s", index, live_collection, "; ".join(reasons))
            return {"index": index, "swapped": False, "reasons": reasons, "live": live_collection, **evidence,
                    "elapsed_s": round(time.perf_counter() - t0, 3)}
        lexical = build_lexical(settings, rows_of, new_collection)
        tuned, evidence["tuning"] = _tune_new(settings, store, index, new_collection, new_embedder)
        with state.session_scope(settings.state_db_url) as s:  # the swap: one transaction
            if _docs_digest(s, index) != digest:  # server mode has no writer lock: a sync committed meanwhile
                raise RagopsError(f"index {index} changed while {new_collection} was being built (a sync "
                                  f"committed); {live_collection} keeps serving: run the rebuild again")
            if change:
                _rename_rows(s, index, shadow_name(index, live_version))  # kept for a rollback across pipelines
                _rename_rows(s, shadow, index)
            alias = s.get(state.IndexAlias, index)
            alias.version_id, alias.updated_at = new_id, state.utcnow()
            v = s.get(state.IndexVersion, new_id)
            v.status = "live"
            if tuned is not None:
                from ragops.tuning import audit as audit_tuning

                tuned.update(version=number, actor=actor)
                v.retrieval = tuned
                audit_tuning(s, actor, index, tuned)
            v.stats = {"chunks": evidence["chunks"], "documents": evidence["documents"], "reused": reused,
                       "embedded": embedded, "seconds": round(time.perf_counter() - t0, 3)}
            s.get(state.IndexVersion, live_id).status = "retired"
            state.audit(s, actor, "index_swapped", index, **evidence)
        evidence["search"] = store.finish(new_collection, force=True)  # ef_search for this version's graph
        deleted = _retain(settings, store, index, keep or settings.rebuild.keep, actor)
    log.info("index %s now serves %s (v%d -> v%d; %d reused, %d embedded)", index, new_collection, live_version,
             number, reused, embedded)
    return {"index": index, "swapped": True, "live": new_collection, "previous": live_collection, **evidence,
            "lexical": lexical, "deleted": deleted, "elapsed_s": round(time.perf_counter() - t0, 3)}


def _tune_new(settings: Settings, store: VectorStore, index: str, collection: str,
              embedder: Embedder) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Tune the validated new version's retrieval on the index's golden set (``ragops.tuning``):
    the record to store on it, and what the rebuild report says. Tuning only advises: a failure
    leaves the version untuned (the settings' retrieval serves) and is reported, the swap goes on."""
    if not settings.retrieval.tune_on_rebuild:
        return None, {"skipped": "retrieval.tune_on_rebuild is false"}
    golden = settings.golden_set(index)
    if not golden:
        return None, {"skipped": f"index {index} has no golden set (indexes.{index}.golden)"}
    from ragops.tuning import evaluate_collection

    try:
        record = evaluate_collection(settings, index, collection, golden, embedder=embedder, store=store)
    except Exception as exc:  # noqa: BLE001 - reported in the rebuild's evidence and audit entry, never fatal
        log.warning("rebuild of %s: tuning retrieval on %s failed, the version serves untuned: %s", index, golden,
                    exc)
        return None, {"error": f"{type(exc).__name__}: {exc}"[:1000], "dataset": str(golden)}
    log.info("rebuild of %s: retrieval tuned to %s (%s)", index, record["candidate"], record["reason"])
    return record, {k: record[k] for k in ("mode", "candidate", "dense_weight", "lexical_weight", "reason",
                                           "questions", "dataset")}


def _validate(settings: Settings, store: VectorStore, index: str, rows_of: str, new_collection: str,
              live_collection: str, live_embedder: Embedder, new_embedder: Embedder,
              live_docs: int | None) -> tuple[list[str], dict[str, Any]]:
    """Reasons not to swap (empty = fine) and the evidence."""
    reasons: list[str] = []
    with state.session_scope(settings.state_db_url) as s:
        chunks = s.execute(select(state.Chunk.chunk_id, state.Chunk.text).where(state.Chunk.index_name == rows_of)
                           .order_by(state.Chunk.chunk_id)).all()
        docs = s.execute(select(func.count()).select_from(state.Document)
                         .where(state.Document.index_name == rows_of)).scalar() or 0
    expected = {c[0] for c in chunks}
    actual = store.ids(new_collection)
    if actual != expected:
        reasons.append(f"ids differ from the state store: {len(expected - actual)} missing, "
                       f"{len(actual - expected)} extra")
    if not chunks:
        reasons.append("the new version has no chunks")
    if live_docs is not None and live_docs and 1 - docs / live_docs > settings.quality.max_delete_share:
        reasons.append(f"re-reading the sources gave {docs} documents, the live version has {live_docs}: more than "
                       f"quality.max_delete_share={settings.quality.max_delete_share:.0%} would be lost")
    sample = random.Random(settings.eval.seed).sample(chunks, min(20, len(chunks)))
    stored = store.get_embeddings(new_collection, [c[0] for c in sample])
    fresh = new_embedder.encode([c[1] for c in sample], log_every=1e9) if sample else []
    sims = [float(np.dot(stored[c[0]], v) / (np.linalg.norm(stored[c[0]]) * np.linalg.norm(v) or 1.0))
            for c, v in zip(sample, fresh, strict=True) if c[0] in stored]
    if sims and min(sims) < 0.99:
        reasons.append(f"a sampled stored vector does not match its text (cosine {min(sims):.4f} < 0.99)")
    check = None
    if not reasons:
        check = _retrieval_check(settings, store, index, (live_collection, live_embedder),
                                 (new_collection, new_embedder))
        margin = settings.eval.regression_margin
        if check is not None and "skipped" not in check:
            for m in ("hit_rate@5", "ndcg@10"):
                if check["new"][m] < check["live"][m] - margin:
                    reasons.append(f"{m} {check['new'][m]:.4f} is below live {check['live'][m]:.4f} by more than "
                                   f"{margin}")
    return reasons, {"chunks": len(chunks), "documents": docs, "live_documents": live_docs,
                     "sample_min_cosine": min(sims) if sims else None, "retrieval": check}


def _retain(settings: Settings, store: VectorStore, index: str, keep: int, actor: str) -> list[str]:
    """Drop versions beyond the newest ``keep`` live/retired ones (dropping also frees Chroma's
    space) with their archived rows."""
    deleted: list[str] = []
    with state.session_scope(settings.state_db_url) as s:
        kept = s.execute(select(state.IndexVersion).where(state.IndexVersion.index_name == index,
                                                          state.IndexVersion.status.in_(("live", "retired")))
                         .order_by(state.IndexVersion.version.desc())).scalars().all()
        for v in kept[max(keep, 1):]:
            if v.status == "live":
                continue
            _drop(settings, store, v.collection)
            _drop_rows(s, shadow_name(index, v.version))
            v.status = "deleted"
            deleted.append(v.collection)
        if deleted:
            state.audit(s, actor, "index_versions_deleted", index, collections=deleted, keep=keep)
    return deleted


def rollback(settings: Settings, index: str | None = None, to: int | None = None, *, actor: str = "cli",
             store: VectorStore | None = None) -> dict[str, Any]:
    """Move the alias back to a retained version (default: the newest retired one).

    Same pipeline as live: chunks that syncs changed since the target served are brought over
    from the live version first, so the target equals the state store when it starts serving.
    Another pipeline (a model or chunking change came between): the target's archived rows are
    restored with it, its documents as of when it was retired (the next ingest brings it up to
    date), and its pipeline is pinned so that no settings-driven rebuild undoes the rollback."""
    from ragops.indexing import _refresh_lexical, _self_check_locked

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
            target_id, target_collection, live_id, live_collection = target.id, target.collection, live.id, live.collection
            target_version, live_version = target.version, live.version
            archive = shadow_name(index, target_version)
            archived = set(s.execute(select(state.Chunk.chunk_id).where(state.Chunk.index_name == archive)).scalars())
            same = target.embedding_model == live.embedding_model and pipelines.same(
                target.pipeline or live.pipeline, live.pipeline or target.pipeline)
            if not same and not archived:
                raise RagopsError(f"v{target_version} was built with another pipeline ({pipelines.describe(target.pipeline)}"
                                  f") than live ({pipelines.describe(live.pipeline)}) and its chunks were not kept, so "
                                  f"it cannot serve again: rebuild with that model/profile instead")
            expected = set(s.execute(select(state.Chunk.chunk_id).where(state.Chunk.index_name == index)).scalars())
        actual = store.ids(target_collection)
        if not same:
            if actual != archived:
                raise RagopsError(f"v{target_version} ({target_collection}) no longer matches its archived chunks "
                                  f"({len(archived - actual)} missing, {len(actual - archived)} extra): it cannot serve; "
                                  "the live version keeps serving")
            missing, extra = [], []
            with state.session_scope(settings.state_db_url) as s:  # one transaction: rows and alias together
                _rename_rows(s, index, shadow_name(index, live_version))
                _rename_rows(s, archive, index)
                alias = s.get(state.IndexAlias, index)
                alias.version_id, alias.updated_at = target_id, state.utcnow()
                t = s.get(state.IndexVersion, target_id)
                t.status, t.pipeline = "live", {**(t.pipeline or pipelines.legacy(settings)), "pinned": True}
                s.get(state.IndexVersion, live_id).status = "retired"
                state.audit(s, actor, "index_rolled_back", index, **{"from": live_collection, "to": target_collection},
                            across_pipelines=True, pipeline=t.pipeline, chunks=len(archived))
            check = _self_check_locked(settings, store, index, target_collection)
            lexical = _refresh_lexical(settings, index, target_collection, changed=False)
        else:
            missing, extra = sorted(expected - actual), sorted(actual - expected)
            for i in range(0, len(missing), PAGE):  # changed since: copy from the live version
                ids = missing[i:i + PAGE]
                vecs = store.get_embeddings(live_collection, ids)
                chunks = store.get_chunks(live_collection, ids)
                lost = [c for c in ids if c not in vecs or c not in chunks]
                if lost:
                    raise RagopsError(f"the live version {live_collection} lacks {len(lost)} chunk(s) of the state "
                                      f"store (e.g. {lost[:3]}), so v{target_version} cannot be brought up to date; run "
                                      "`ragops index status` and re-sync the index first")
                store.upsert(target_collection, ids, np.asarray([vecs[c] for c in ids], dtype=np.float32),
                             [chunks[c][0] for c in ids], [chunks[c][1] for c in ids])
            store.delete(target_collection, extra)
            check = _self_check_locked(settings, store, index, target_collection)
            if not check["ok"]:
                raise RagopsError(f"v{target_version} does not match the state store after reconciling ({check}); "
                                  "the live version keeps serving")
            # the version's own BM25 index was kept with it: rebuilt only if the chunks changed
            lexical = _refresh_lexical(settings, index, target_collection, changed=bool(missing or extra))
            with state.session_scope(settings.state_db_url) as s:
                alias = s.get(state.IndexAlias, index)
                alias.version_id, alias.updated_at = target_id, state.utcnow()
                s.get(state.IndexVersion, target_id).status = "live"
                s.get(state.IndexVersion, live_id).status = "retired"
                _drop_rows(s, archive)  # stale rows from an earlier pipeline change, if any
                state.audit(s, actor, "index_rolled_back", index, **{"from": live_collection, "to": target_collection},
                            copied=len(missing), removed=len(extra))
    log.info("index %s rolled back from v%d to v%d (%d chunks brought over, %d removed)", index, live_version,
             target_version, len(missing), len(extra))
    return {"index": index, "from": live_collection, "to": target_collection, "copied": len(missing),
            "removed": len(extra), "across_pipelines": not same, "self_check": check, "lexical": lexical}
