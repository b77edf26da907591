"""Reference snapshots for corpus and document-statistics drift.

A snapshot keeps a seeded sample of the live collection's vectors (at most half of its chunks,
with their ids) and the whole index's length
distributions (chunk tokens, chunks per document) in the state store, so a worker on another
machine can compare against it and a later rebuild cannot change it. Automatic snapshots stand
for the moments an index version started serving or a prompt was promoted (when quality was
last verified): rebuild_index and the CLI take one when a version starts serving, and a check
takes one itself when the last swap or prompt promotion is newer than the newest snapshot.
Named ones are taken on request and kept until deleted.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
from collections import Counter
from typing import Any

import numpy as np
from sqlalchemy import delete, select

from ragops import pipelines, state
from ragops.config import Settings, check_index_name
from ragops.errors import DriftError, UnknownIndexError
from ragops.vectorstore import VectorStore

log = logging.getLogger(__name__)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def index_profile(settings: Settings, index: str) -> dict[str, Any]:
    """The live version and every chunk's id, token length and document (from the state store)."""
    check_index_name(index)
    state.require_schema(settings.state_db_url)
    with state.session_scope(settings.state_db_url) as s:
        live = state.live_version(s, index)
        if live is None:
            raise UnknownIndexError(f"unknown index {index!r}: ingest into it first with "
                                    f"`ragops ingest SOURCE --index {index}`")
        rows = s.execute(select(state.Chunk.chunk_id, state.Chunk.n_tokens, state.Chunk.source_id, state.Chunk.doc_id)
                         .where(state.Chunk.index_name == index).order_by(state.Chunk.chunk_id)).all()
        collection, version = live.collection, live.version
    per_doc = Counter((r.source_id, r.doc_id) for r in rows)
    return {"collection": collection, "version": version, "ids": [r.chunk_id for r in rows],
            "n_tokens": np.array([r.n_tokens for r in rows], dtype=np.int32),
            "chunks_per_doc": np.array(sorted(per_doc.values()), dtype=np.int32),
            "model": pipelines.for_index(settings, index).embedding.model}


def sample_vectors(settings: Settings, collection: str, ids: list[str], size: int, seed: int,
                   store: VectorStore | None = None) -> tuple[list[str], np.ndarray]:
    """A seeded sample of ``size`` ids (all if fewer) and their vectors from Chroma."""
    rng = np.random.default_rng(seed)
    chosen = sorted(ids) if len(ids) <= size else sorted(rng.choice(np.array(sorted(ids)), size, replace=False).tolist())
    got = (store or VectorStore(settings)).get_embeddings(collection, chosen)
    missing = [c for c in chosen if c not in got]
    if missing:
        raise DriftError(f"{len(missing)} sampled chunk(s) of {collection} are missing from Chroma (e.g. "
                         f"{missing[0]}): run `ragops index status` (self-check) and re-ingest before a drift check")
    return chosen, np.stack([got[c] for c in chosen]) if chosen else np.zeros((0, 0), dtype=np.float32)


def _pack(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def unpack(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data)) as z:
        return {k: z[k] for k in z.files}


def take(settings: Settings, index: str, *, name: str | None = None, reason: str = "named", actor: str = "cli",
         sample_size: int | None = None, seed: int | None = None, store: VectorStore | None = None) -> dict[str, Any]:
    """Snapshot the live version of ``index``. ``name`` given = a named snapshot (kept until
    deleted; the name must be new); otherwise an automatic one (the oldest beyond
    ``drift.snapshot_keep`` are dropped)."""
    d = settings.drift
    if name is not None and not NAME_RE.match(name):
        raise DriftError(f"invalid snapshot name {name!r}: use up to 128 letters, digits, '_', '.', ':' or '-'")
    if name == "last":
        raise DriftError("'last' is reserved (reference 'last' = the newest automatic snapshot): pick another name")
    size, seed = sample_size or d.sample_size, d.seed if seed is None else seed
    prof = index_profile(settings, index)
    if not prof["ids"]:
        raise DriftError(f"index {index} has no chunks to snapshot; ingest documents first")
    # at most half of the chunks: the other half stays for the current sample of a later check, so
    # an unchanged index is compared as two disjoint random halves (see checks._corpus)
    size = min(size, max(len(prof["ids"]) // 2, 1))
    sampled, vectors = sample_vectors(settings, prof["collection"], prof["ids"], size, seed, store)
    now = state.utcnow()
    label = name or f"{reason}-{now:%Y%m%dT%H%M%S%fZ}"
    stats = {"documents": int(len(prof["chunks_per_doc"])), "chunks": len(prof["ids"]),
             "mean_chunk_tokens": float(prof["n_tokens"].mean()), "dimension": int(vectors.shape[1])}
    with state.session_scope(settings.state_db_url) as s:
        if s.execute(select(state.DriftSnapshot.id).where(state.DriftSnapshot.index_name == index,
                                                          state.DriftSnapshot.name == label)).first():
            raise DriftError(f"a snapshot named {label!r} already exists for index {index}: pick another name "
                             f"or delete it with `ragops drift snapshots --index {index} --delete {label}`")
        row = state.DriftSnapshot(index_name=index, name=label, reason=reason if name is None else "named",
                                  named=int(name is not None), collection=prof["collection"],
                                  index_version=prof["version"], embedding_model=prof["model"], seed=seed,
                                  n_vectors=len(vectors), stats=stats, created_by=actor, created_at=now,
                                  data=_pack(vectors=vectors.astype(np.float32), ids=np.array(sampled, dtype=str),
                                             n_tokens=prof["n_tokens"],
                                             chunks_per_doc=prof["chunks_per_doc"]))
        s.add(row)
        s.flush()
        snap_id = row.id
        state.audit(s, actor, "drift_snapshot", index, snapshot=label, reason=row.reason, collection=prof["collection"],
                    vectors=len(vectors), seed=seed)
        if name is None:
            autos = s.execute(select(state.DriftSnapshot.id).where(
                state.DriftSnapshot.index_name == index, state.DriftSnapshot.named == 0)
                .order_by(state.DriftSnapshot.created_at.desc(), state.DriftSnapshot.id.desc())).scalars().all()
            if len(autos) > d.snapshot_keep:
                s.execute(delete(state.DriftSnapshot).where(state.DriftSnapshot.id.in_(autos[d.snapshot_keep:])))
    log.info("snapshot %s of %s: %d of %d chunk vectors (seed %d)", label, prof["collection"], len(vectors),
             len(prof["ids"]), seed)
    return {"id": snap_id, "index": index, "name": label, "reason": reason if name is None else "named",
            "collection": prof["collection"], "vectors": len(vectors), **stats}


def _summary(r: state.DriftSnapshot) -> dict[str, Any]:
    return {"id": r.id, "index": r.index_name, "name": r.name, "reason": r.reason, "named": bool(r.named),
            "collection": r.collection, "version": r.index_version, "model": r.embedding_model,
            "vectors": r.n_vectors, "seed": r.seed, "created_by": r.created_by,
            "created_at": r.created_at.isoformat() if r.created_at else None, **(r.stats or {})}


def listing(settings: Settings, index: str | None = None) -> list[dict[str, Any]]:
    state.require_schema(settings.state_db_url)
    with state.session_scope(settings.state_db_url) as s:
        q = select(state.DriftSnapshot).order_by(state.DriftSnapshot.created_at.desc(), state.DriftSnapshot.id.desc())
        if index:
            q = q.where(state.DriftSnapshot.index_name == index)
        return [_summary(r) for r in s.execute(q).scalars()]


def remove(settings: Settings, index: str, name: str, actor: str = "cli") -> dict[str, Any]:
    with state.session_scope(settings.state_db_url) as s:
        row = s.execute(select(state.DriftSnapshot).where(state.DriftSnapshot.index_name == index,
                                                          state.DriftSnapshot.name == name)).scalar_one_or_none()
        if row is None:
            raise DriftError(f"no snapshot {name!r} for index {index}; see `ragops drift snapshots --index {index}`")
        out = _summary(row)
        s.delete(row)
        state.audit(s, actor, "drift_snapshot_deleted", index, snapshot=name)
    return out


def last_reference_event(settings: Settings, index: str) -> tuple[str, dt.datetime] | None:
    """The newest moment quality was verified for this index: a version started serving (swap,
    rollback, first ingest) or, for the index prompts are gated on (``prompts.index``), a prompt's
    production alias moved."""
    with state.session_scope(settings.state_db_url) as s:
        live = state.live_version(s, index)
        swap = s.execute(select(state.AuditEntry.action, state.AuditEntry.at).where(
            state.AuditEntry.index_name == index,
            state.AuditEntry.action.in_(("index_swapped", "index_rolled_back")))
            .order_by(state.AuditEntry.at.desc()).limit(1)).first()
        promo = s.execute(select(state.PromptEvent.action, state.PromptEvent.created_at).where(
            state.PromptEvent.alias == "production", state.PromptEvent.action.in_(("promoted", "rolled_back")))
            .order_by(state.PromptEvent.created_at.desc()).limit(1)).first()
    events = []
    if swap:
        events.append(("index_swap" if swap[0] == "index_swapped" else "index_rollback", swap[1]))
    elif live is not None:
        events.append(("index_swap", live.created_at))
    if promo and index == (settings.prompts.index or settings.ingest.default_index):
        events.append(("prompt_promotion", promo[1]))
    events = [(k, t if t.tzinfo else t.replace(tzinfo=dt.UTC)) for k, t in events if t is not None]
    return max(events, key=lambda e: e[1]) if events else None


def resolve(settings: Settings, index: str, reference: str = "last", *, actor: str = "cli",
            store: VectorStore | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray], str | None]:
    """The reference snapshot (summary, arrays, note). ``last``: the newest automatic snapshot,
    taken now if none exists or if the index swapped or a prompt was promoted since (the note
    says so); any other value names a snapshot."""
    state.require_schema(settings.state_db_url)
    note = None
    with state.session_scope(settings.state_db_url) as s:
        q = select(state.DriftSnapshot).where(state.DriftSnapshot.index_name == index)
        if reference == "last":
            q = q.where(state.DriftSnapshot.named == 0)
        else:
            q = q.where(state.DriftSnapshot.name == reference)
        row = s.execute(q.order_by(state.DriftSnapshot.created_at.desc(), state.DriftSnapshot.id.desc())
                        .limit(1)).scalar_one_or_none()
        found = (_summary(row), unpack(row.data)) if row is not None else None
    if reference != "last":
        if found is None:
            names = [x["name"] for x in listing(settings, index) if x["named"]]
            raise DriftError(f"no snapshot named {reference!r} for index {index}; named snapshots: "
                             f"{', '.join(names) or '(none)'}; take one with `ragops drift snapshot --index {index} "
                             "--name NAME`, or use 'last'")
        return found[0], found[1], None
    event = last_reference_event(settings, index)
    stale = found is not None and event is not None and \
        dt.datetime.fromisoformat(found[0]["created_at"]).replace(tzinfo=dt.UTC) < event[1]
    if found is None or stale:
        why = "first_check" if found is None else "reference_event"
        took = take(settings, index, reason=why, actor=actor, store=store)
        note = ("no reference snapshot existed: one was taken now, so this run has nothing to compare the corpus "
                "with yet" if found is None else
                f"the reference was taken now because the last {event[0].replace('_', ' ')} ({event[1]:%Y-%m-%d %H:%M} "
                "UTC) is newer than the newest snapshot")
        with state.session_scope(settings.state_db_url) as s:
            row = s.get(state.DriftSnapshot, took["id"])
            found = (_summary(row), unpack(row.data))
    return found[0], found[1], note
