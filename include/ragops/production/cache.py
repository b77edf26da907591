"""A semantic answer cache that cannot serve an answer made by another index or prompt version.

An entry is keyed EXACTLY by ``index@version|prompt@version`` (its scope) and found by the cosine
similarity of the question's embedding: a question at least ``production.cache.threshold``
similar to a cached one, asked of the same scope within ``ttl_hours``, gets that answer. An index
swap or a prompt promotion changes the scope, so nothing made by the old version can be served.
Entries live in the state store (shared by every process of the application); beyond
``max_entries`` per scope the least recently used go.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select, update

from ragops import state
from ragops.config import Settings


def scope(index: str, index_version: int, prompt: str, prompt_version: int) -> str:
    return f"{index}@{index_version}|{prompt}@{prompt_version}"


def _unit(vec: np.ndarray) -> np.ndarray:
    v = np.asarray(vec, dtype=np.float32).ravel()
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def lookup(settings: Settings, key: str, vec: np.ndarray) -> dict[str, Any] | None:
    """The closest fresh entry of ``key`` at or above the threshold (its hit counted), or None."""
    c = settings.production.cache
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=c.ttl_hours)
    q = _unit(vec)
    with state.session_scope(settings.state_db_url) as s:
        rows = s.execute(select(state.AnswerCacheEntry.id, state.AnswerCacheEntry.vector)
                         .where(state.AnswerCacheEntry.scope == key, state.AnswerCacheEntry.created_at >= since)).all()
        if not rows:
            return None
        mat = np.stack([np.frombuffer(v, dtype=np.float32) for _, v in rows])
        sims = mat @ q
        best = int(np.argmax(sims))
        if float(sims[best]) < c.threshold:
            return None
        entry = s.get(state.AnswerCacheEntry, rows[best][0])
        if entry is None:
            return None
        s.execute(update(state.AnswerCacheEntry).where(state.AnswerCacheEntry.id == entry.id)
                  .values(hits=state.AnswerCacheEntry.hits + 1, last_hit_at=dt.datetime.now(dt.UTC)))
        return {"payload": dict(entry.payload), "similarity": round(float(sims[best]), 4),
                "question": entry.question, "trace_id": entry.trace_id}


def store(settings: Settings, key: str, question: str, vec: np.ndarray, trace_id: str | None,
          payload: dict[str, Any]) -> None:
    """Add an answer; an answer that failed (no text) is never cached."""
    if not payload.get("answer"):
        return
    c = settings.production.cache
    with state.session_scope(settings.state_db_url) as s:
        s.add(state.AnswerCacheEntry(scope=key, question=question, vector=_unit(vec).tobytes(), payload=payload,
                                     trace_id=trace_id, hits=0))
        s.flush()
        n = s.execute(select(func.count()).select_from(state.AnswerCacheEntry)
                      .where(state.AnswerCacheEntry.scope == key)).scalar_one()
        if n > c.max_entries:
            last = func.coalesce(state.AnswerCacheEntry.last_hit_at, state.AnswerCacheEntry.created_at)
            old = s.execute(select(state.AnswerCacheEntry.id).where(state.AnswerCacheEntry.scope == key)
                            .order_by(last, state.AnswerCacheEntry.id).limit(n - c.max_entries)).scalars().all()
            s.execute(delete(state.AnswerCacheEntry).where(state.AnswerCacheEntry.id.in_(old)))


def clear(settings: Settings, key: str | None = None) -> int:
    """Drop every entry (of one scope); returns how many."""
    with state.session_scope(settings.state_db_url) as s:
        stmt = delete(state.AnswerCacheEntry)
        if key is not None:
            stmt = stmt.where(state.AnswerCacheEntry.scope == key)
        return int(s.execute(stmt).rowcount or 0)
