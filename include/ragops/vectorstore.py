"""Chroma access: embedded PersistentClient (writers serialised by a file lock) or a server.

Chroma holds vectors (plus text and metadata for display); which collection serves an index is
the state store's business. Two processes writing one embedded path corrupt it, so every write
goes through :meth:`VectorStore.writer`, which takes an exclusive file lock in embedded mode.

A full disk must not take the live index down with it. An embedded store that runs out of space
in the middle of a write keeps the write in its log but cannot apply it, and then answers no read
at all (count, get, query) until space is freed. So in embedded mode an upsert first checks that
its estimated size fits with a reserve to spare, and refuses with :class:`VectorStoreFullError`
when it does not; vectors that earlier upserts of the same writer section added are removed
again, so the collection is as it was before the section (callers upsert before they record
anything in the state store).

Dense search is deterministic for an unchanged collection, and fast once the collection is tuned.
Chroma's HNSW graph was not the same in every process: an embedded store persists it only every
``sync_threshold`` (1000) writes and rebuilds the rest from its log, with several threads, each
time a process opens it, so the same query missed true neighbours differently in each process.
Two ways out:

* A collection that :meth:`VectorStore.tune_search` has finished (after the first ingest, after
  each commit, after a blue/green rebuild validates a new version) is *settled*: its whole graph is
  persisted (``sync_threshold`` lowered for one no-op write, then restored), so every process loads
  the same graph, and the same graph walked with the same ``ef_search`` finds the same neighbours.
  Its ``ef_search`` is the smallest of :data:`EF_GRID` whose recall@10 against exact search (numpy,
  over the collection's own vectors) reaches ``chroma.target_recall`` on perturbed copies of a
  sample of its own vectors, each value measured at that value on a fresh load of the index
  (chromadb keeps searching a loaded index with the ``ef_search`` it was loaded with, whatever
  ``collection.modify`` sets later: see :meth:`VectorStore.tune_search`); it is set with
  ``collection.modify`` and persists (read back, and in force, in a new process, and in a
  ``chroma run`` server once it restarts). Processes that open a settled collection agree with each other;
  the process that wrote it keeps the graph it built in memory (and the ``ef_search`` it had),
  which ranked a few of 100 queries otherwise than the graph read back from disk
  (tests/unit/test_search_tuning.py), until it opens the store again. The choice is kept in the
  collection's metadata (:data:`META_EF` and friends), so a query learns it from the handle it
  fetches anyway; a query then asks HNSW for ``overfetch`` times k candidates, one request.
* A collection never tuned keeps the old, slower path: every vector of one of up to
  ``EXACT_UP_TO`` (an exhaustive walk: exact), else ``OVERFETCH`` times k (at least
  k + ``MIN_EXTRA``), after counting it.

Either way the candidates are ranked by (distance rounded to ``DISTANCE_DECIMALS``, chunk id)
before the cut at k, and the documents and metadatas of the k kept come in one ``get``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

import numpy as np

from ragops.config import Settings
from ragops.errors import ConfigError, VectorStoreBusyError, VectorStoreFullError, VectorStoreUnavailableError

log = logging.getLogger(__name__)
PAGE = 5000
MIB = 1024 * 1024
# free space an embedded store keeps after a write: room for deletes, compaction and SQLite's
# journal; 2 % of the disk, at least 1 MiB, at most 64 MiB
RESERVE_SHARE, RESERVE_MIN, RESERVE_MAX = 0.02, 1 * MIB, 64 * MIB
OUT_OF_SPACE_MARKERS = ("no space left", "disk is full", "disk full", "os error 28", "enospc",
                        "failed to apply logs to the hnsw segment writer")


# dense search (see the module docstring). Untuned collections: up to EXACT_UP_TO vectors are
# searched exhaustively, larger ones over-fetch. Tuned ones: TUNED_OVERFETCH times k candidates with
# the ef_search tuning chose. Either way candidates are ranked by (rounded distance, id).
EXACT_UP_TO = 5000
OVERFETCH, MIN_EXTRA = 4, 200
DISTANCE_DECIMALS = 6
QUERY_INCLUDE = ("documents", "metadatas", "distances")
TUNED_OVERFETCH = 2.0  # candidates per result of a tuned collection: room for ties at the cut
EF_GRID = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
TUNE_K = 10  # recall@TUNE_K is what tuning measures
PERTURB = 1.0  # a tuning query: own vector + noise of this norm (cosine to it about 0.7, like a question)
LATENCY_QUERIES = 50  # queries timed before and after tuning
# collection metadata written by tune_search
META_EF, META_COUNT, META_RECALL, META_OVERFETCH = ("ragops_ef_search", "ragops_tuned_count", "ragops_recall",
                                                   "ragops_overfetch")


def candidates(k: int, count: int) -> int:
    """How many neighbours to ask HNSW for in an untuned collection, so that its top k is the exact top k."""
    if count <= EXACT_UP_TO:
        return count
    return min(count, max(OVERFETCH * k, k + MIN_EXTRA))


def tuned_candidates(k: int, overfetch: float = TUNED_OVERFETCH) -> int:
    """How many neighbours to ask HNSW for in a tuned collection (Chroma returns fewer when it has fewer)."""
    return max(k, math.ceil(overfetch * k))


def rank_key(chunk_id: str, distance: float) -> tuple[float, str]:
    """A total order of search results: nearer first, equal (to 1e-6) distances by chunk id."""
    return round(float(distance), DISTANCE_DECIMALS), chunk_id


FIX = ("Fix: free space on that disk (or move the data directory, RAGOPS_DATA_DIR, to a larger one), then re-run "
       "the sync")


class _NoRoom(Exception):
    """The pre-write check failed (becomes a VectorStoreFullError once the section is undone)."""


def estimate_bytes(embeddings: np.ndarray, documents: Sequence[str], metadatas: Sequence[dict[str, Any]]) -> int:
    """What an upsert adds to an embedded Chroma 1.x store, measured there: the vector is stored
    about four times (log, HNSW, metadata segment), the text about eight (row plus trigram
    full-text index), the metadata twice."""
    dim = int(embeddings.shape[1]) if embeddings.ndim == 2 and len(embeddings) else 0
    text = sum(len(d.encode("utf-8")) for d in documents)
    meta = sum(len(json.dumps(m, default=str)) for m in metadatas)
    return len(documents) * (16 * dim + 512) + 8 * text + 2 * meta


def out_of_space(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == 28:
        return True
    return any(m in str(exc).lower() for m in OUT_OF_SPACE_MARKERS)


def server_down(exc: BaseException) -> str | None:
    """What went wrong, when ``exc`` (or what caused it) means the Chroma server did not answer:
    a refused or dropped connection, a timeout, or a 5xx answer (its proxy's 502 while it is down).
    chromadb re-raises these as bare ``Exception``/``ValueError`` whose text is the proxy's HTML
    page, so the cause chain and the text are both looked at."""
    import httpx

    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, httpx.HTTPStatusError) and e.response.status_code >= 500:
            return f"HTTP {e.response.status_code} {e.response.reason_phrase}"
        if isinstance(e, httpx.TransportError | ConnectionError):
            return f"{type(e).__name__}: {e}"[:200]
        e = e.__cause__ or e.__context__
    text = str(exc)
    for code in ("502 Bad Gateway", "503 Service", "504 Gateway"):
        if code in text:
            return f"HTTP {code}"
    return None


def _server_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """In server mode, a Chroma server that does not answer becomes a VectorStoreUnavailableError
    (retried by the DAGs) instead of the proxy's HTML page in a ValueError."""

    @functools.wraps(method)
    def wrapper(self: VectorStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (VectorStoreFullError, VectorStoreBusyError, VectorStoreUnavailableError, ConfigError):
            raise
        except Exception as exc:
            what = server_down(exc) if self.mode == "server" else None
            if what is None:
                raise
            raise VectorStoreUnavailableError(
                f"the Chroma server at {self.settings.chroma.url} did not answer ({what}): it is down or "
                f"restarting. Nothing was recorded for this request; the task is retried (on the command "
                f"line, run the command again once the server is up)") from exc
    return wrapper


class VectorStore:
    def __init__(self, settings: Settings, lock_timeout: float = 600.0) -> None:
        self.settings = settings
        self.lock_timeout = lock_timeout
        self._client: Any = None
        self._depth = 0  # writer() nesting
        self._added: dict[str, list[str]] | None = None  # ids new in each collection in this writer section

    @property
    def mode(self) -> str:
        return self.settings.chroma.mode

    @property
    def client(self) -> Any:
        if self._client is None:
            os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
            import chromadb
            from chromadb.config import Settings as ChromaConfig

            cfg = ChromaConfig(anonymized_telemetry=False, allow_reset=False)
            if self.mode == "embedded":
                self.settings.chroma_path.mkdir(parents=True, exist_ok=True)
                self._client = chromadb.PersistentClient(path=str(self.settings.chroma_path), settings=cfg)
            else:
                url = self.settings.chroma.url
                if not url:
                    raise ConfigError("chroma.mode is 'server' but no server URL is set: set RAGOPS_CHROMA_URL, "
                                      "chroma.url, or the Airflow Connection chroma_default")
                u = urlparse(url if "://" in url else f"http://{url}")
                headers = {"X-Chroma-Token": self.settings.chroma.token} if self.settings.chroma.token else {}
                self._client = chromadb.HttpClient(host=u.hostname or "127.0.0.1", port=u.port or 8000,
                                                   ssl=u.scheme == "https", headers=headers, settings=cfg)
        return self._client

    @contextmanager
    def _fresh_client(self) -> Iterator[Any]:
        """An embedded client of this store on a Chroma System of its own, stopped on exit.

        chromadb shares one System per path in a process, and its Rust core caches each loaded
        HNSW index with the ``ef_search`` it was loaded with: ``collection.modify`` changes the
        stored configuration, not the cached index (measured with chromadb 1.5.9). A client on a
        new System loads the index from disk with the configuration stored now, as a new process
        does. The shared System (and every client on it, e.g. other VectorStore objects of this
        process) is left as it was: it is taken out of chromadb's per-path registry only while the
        new one is created. Use it to read a settled collection only (both would write the same
        files)."""
        import chromadb
        from chromadb.api.shared_system_client import SharedSystemClient as Shared
        from chromadb.config import Settings as ChromaConfig

        key = str(self.settings.chroma_path)
        systems, refs = Shared._identifier_to_system, Shared._identifier_to_refcount
        saved = systems.pop(key, None), refs.pop(key, None)
        try:
            client = chromadb.PersistentClient(path=key, settings=ChromaConfig(anonymized_telemetry=False,
                                                                              allow_reset=False))
        finally:
            system = systems.pop(key, None)
            refs.pop(key, None)
            if saved[0] is not None:
                systems[key] = saved[0]
            if saved[1] is not None:
                refs[key] = saved[1]
        try:
            yield client
        finally:
            if system is not None:
                system.stop()

    def describe(self) -> str:
        return str(self.settings.chroma_path) if self.mode == "embedded" else str(self.settings.chroma.url)

    @contextmanager
    def writer(self) -> Iterator[None]:
        """Exclusive writer section. Embedded: a file lock beside the store; server: no-op.
        Ids that upserts add inside the section are remembered until it ends, so that a write the
        disk has no room for can take them out again (see the module docstring)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        if self.mode != "embedded":
            # no id tracking: only an embedded store's disk is checked and taken back (a server's
            # disk is the server's business), so upserts cost no extra lookup here
            self._depth = 1
            try:
                yield
            finally:
                self._depth = 0
            return
        from filelock import FileLock, Timeout

        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.settings.data_dir / "chroma.writer.lock"))
        try:
            lock.acquire(timeout=self.lock_timeout)
        except Timeout as exc:
            raise VectorStoreBusyError(
                f"another process has held the embedded Chroma writer lock for {self.lock_timeout:.0f}s "
                f"({lock.lock_file}); it is probably still ingesting: wait, or use a Chroma server for "
                "concurrent writers"
            ) from exc
        self._depth, self._added = 1, {}
        try:
            yield
        finally:
            self._depth, self._added = 0, None
            lock.release()

    def _batch(self) -> int:
        return max(1, min(self.settings.chroma.upsert_batch_size, int(self.client.get_max_batch_size())))

    def collection(self, name: str, create: bool = False) -> Any:
        if create:
            return self.client.get_or_create_collection(name, configuration={"hnsw": {"space": "cosine"}})
        return self.client.get_collection(name)

    def has_collection(self, name: str) -> bool:
        return name in {c.name if hasattr(c, "name") else c for c in self.client.list_collections()}

    def upsert(self, name: str, ids: Sequence[str], embeddings: np.ndarray, documents: Sequence[str],
               metadatas: Sequence[dict[str, Any]]) -> int:
        added = self._added.setdefault(name, []) if self._added is not None else None
        try:
            self._check_space(name, estimate_bytes(embeddings, documents, metadatas), len(ids))
            col = self.collection(name, create=True)
            step = self._batch()
            for i in range(0, len(ids), step):
                part = list(ids[i:i + step])
                known = set(col.get(ids=part, include=[])["ids"]) if added is not None else set()
                col.upsert(ids=part, embeddings=embeddings[i:i + step],
                           documents=list(documents[i:i + step]), metadatas=list(metadatas[i:i + step]))
                if added is not None:
                    added.extend(x for x in part if x not in known)
        except _NoRoom as exc:
            raise VectorStoreFullError(f"{exc} {self._take_back()} {FIX}") from None
        except Exception as exc:
            if not out_of_space(exc):
                raise
            raise VectorStoreFullError(
                f"no space left on device for the Chroma store at {self.describe()}: writing {len(ids)} vectors to "
                f"{name} failed ({type(exc).__name__}: {exc}){self._space_note()}. {self._take_back()} The store "
                f"may not answer reads until space is freed. {FIX}; the re-run removes what this write left behind"
            ) from exc
        return len(ids)

    def _space_note(self) -> str:
        if self.mode != "embedded":
            return ""
        usage = shutil.disk_usage(self.settings.chroma_path)
        return f"; {usage.free / MIB:.1f} MB of {usage.total / MIB:.0f} MB are free"

    def _check_space(self, name: str, need: int, n: int) -> None:
        """Refuse a write the disk under an embedded store has no room for (plus the reserve)."""
        if self.mode != "embedded" or not n:
            return
        usage = shutil.disk_usage(self.settings.chroma_path)
        reserve = int(min(max(usage.total * RESERVE_SHARE, RESERVE_MIN), RESERVE_MAX))
        if usage.free - need >= reserve:
            return
        raise _NoRoom(
            f"no space left on device for the embedded Chroma store at {self.settings.chroma_path}: writing {n} "
            f"vectors to {name} needs about {need / MIB:.1f} MB and {reserve / MIB:.1f} MB must stay free for Chroma "
            f"to keep serving, but only {usage.free / MIB:.1f} MB of {usage.total / MIB:.0f} MB are free."
        )

    def _take_back(self) -> str:
        """Remove the ids this writer section added (nothing refers to them yet); says what happened."""
        if self._added is None:
            return ""
        added = {name: ids for name, ids in self._added.items() if ids}
        if not added:
            return "Nothing was written to Chroma; the live index is unchanged."
        n = sum(len(ids) for ids in added.values())
        try:
            for name, ids in added.items():
                self.delete(name, ids)
                ids.clear()
        except Exception as exc:  # noqa: BLE001 - reported in the error the caller raises
            log.error("could not remove the %d vectors this write added before the disk filled up: %s", n, exc)
            return (f"The {n} vectors added before it could not be removed ({type(exc).__name__}); the next "
                    "sync removes them.")
        log.warning("removed the %d vectors this write had added to %s: the disk has no room for the rest", n,
                    ", ".join(added))
        return f"The {n} vectors added before it were removed again; the live index is unchanged."

    def delete(self, name: str, ids: Sequence[str]) -> int:
        if not ids or not self.has_collection(name):
            return 0
        col = self.collection(name)
        step = self._batch()
        for i in range(0, len(ids), step):
            col.delete(ids=list(ids[i:i + step]))
        return len(ids)

    def ids(self, name: str, where: dict[str, Any] | None = None) -> set[str]:
        """Every id in a collection (paged), optionally filtered by metadata. A collection that
        does not exist (e.g. a new, empty Chroma server) has no ids."""
        if not self.has_collection(name):
            return set()
        col = self.collection(name)
        out: set[str] = set()
        offset = 0
        while True:
            page = col.get(include=[], limit=PAGE, offset=offset, where=where)
            out.update(page["ids"])
            if len(page["ids"]) < PAGE:
                return out
            offset += PAGE

    def count(self, name: str) -> int:
        return int(self.collection(name).count())

    def get_chunks(self, name: str, ids: Sequence[str], col: Any = None) -> dict[str, tuple[str, dict[str, Any]]]:
        """Text and metadata of chunks by id (for hits that came from the lexical index)."""
        if not ids:
            return {}
        col = col if col is not None else self.collection(name)
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        for i in range(0, len(ids), PAGE):
            page = col.get(ids=list(ids[i:i + PAGE]), include=["documents", "metadatas"])
            for cid, doc, meta in zip(page["ids"], page["documents"], page["metadatas"], strict=True):
                out[cid] = (doc or "", dict(meta or {}))
        return out

    def get_embeddings(self, name: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        col = self.collection(name)
        out: dict[str, np.ndarray] = {}
        for i in range(0, len(ids), PAGE):
            page = col.get(ids=list(ids[i:i + PAGE]), include=["embeddings"])
            for cid, vec in zip(page["ids"], page["embeddings"], strict=True):
                out[cid] = np.asarray(vec, dtype=np.float32)
        return out

    def query_many(self, name: str, embeddings: np.ndarray, k: int,
                   include: Sequence[str] = QUERY_INCLUDE) -> dict[str, Any]:
        """The k nearest chunks of each query, in Chroma's result shape, ranked by :func:`rank_key`;
        one request for a block of queries (what an evaluation does), plus one ``get`` for the
        documents and metadatas of the chunks kept. A tuned collection is asked for a few
        candidates with its tuned ``ef_search``; an untuned one exhaustively or with a large
        over-fetch (see the module docstring)."""
        col = self.collection(name)
        vectors = list(embeddings)
        ids: list[list[str]] = [[] for _ in vectors]
        dists: list[list[float]] = [[] for _ in vectors]
        meta = col.metadata or {}
        if vectors and k > 0:
            if meta.get(META_EF) is not None:  # tuned: no count (it costs a scan of the store)
                n = tuned_candidates(k, float(meta.get(META_OVERFETCH) or TUNED_OVERFETCH))
            else:
                count = int(col.count())
                n = candidates(k, count) if count else 0
            if n:
                res = col.query(query_embeddings=vectors, n_results=n, include=["distances"])
                for j, (got, dist) in enumerate(zip(res["ids"], res["distances"], strict=True)):
                    best = sorted(zip(got, (float(d) for d in dist), strict=True), key=lambda p: rank_key(*p))[:k]
                    ids[j], dists[j] = [c for c, _ in best], [d for _, d in best]
        out: dict[str, Any] = {"ids": ids}
        if "distances" in include:
            out["distances"] = dists
        if "documents" in include or "metadatas" in include:
            chunks = self.get_chunks(name, sorted({c for row in ids for c in row}), col)
            if "documents" in include:
                out["documents"] = [[chunks[c][0] if c in chunks else None for c in row] for row in ids]
            if "metadatas" in include:
                out["metadatas"] = [[chunks[c][1] if c in chunks else None for c in row] for row in ids]
        return out

    # ------------------------------------------------------------------------------------------
    # search tuning

    def search_config(self, name: str) -> dict[str, Any]:
        """What serves dense search of a collection: ``ef_search`` in force and the tuning record."""
        col = self.client.get_collection(name)
        meta = col.metadata or {}
        hnsw = (col.configuration_json or {}).get("hnsw") or {}
        return {"ef_search": hnsw.get("ef_search"), "sync_threshold": hnsw.get("sync_threshold"),
                "tuned_ef_search": meta.get(META_EF), "tuned_count": meta.get(META_COUNT),
                "recall": meta.get(META_RECALL), "overfetch": meta.get(META_OVERFETCH)}

    def settle(self, name: str) -> bool:
        """Persist a collection's whole HNSW graph, so every process that opens it loads the same
        graph instead of re-applying the log's last writes (with several threads: a different graph
        each time). Embedded stores only; a server keeps one graph for all its clients. Done by one
        no-op write (a record upserted as it is) with ``sync_threshold`` at 1, then restored."""
        if self.mode != "embedded":
            return False
        col = self.collection(name)
        row = col.get(limit=1, include=["embeddings", "documents", "metadatas"])
        if not row["ids"]:
            return False
        hnsw = (col.configuration_json or {}).get("hnsw") or {}
        threshold, batch = int(hnsw.get("sync_threshold") or 1000), int(hnsw.get("batch_size") or 100)
        with self.writer():
            col.modify(configuration={"hnsw": {"sync_threshold": 1, "batch_size": 1}})
            try:
                col.upsert(ids=row["ids"], embeddings=row["embeddings"], documents=row["documents"],
                           metadatas=row["metadatas"])
            finally:
                col.modify(configuration={"hnsw": {"sync_threshold": threshold, "batch_size": batch}})
        return True

    def exact_top(self, name: str, queries: np.ndarray, k: int, page: int = PAGE) -> list[list[str]]:
        """The exact k nearest ids of each query by cosine (brute force in numpy, one page of the
        collection at a time, so memory stays a page), ties by id."""
        col = self.collection(name)
        q = np.asarray(queries, dtype=np.float32)
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        best_d = np.full((len(q), 0), np.inf, dtype=np.float64)
        best_i = np.empty((len(q), 0), dtype=object)
        offset = 0
        while True:
            got = col.get(include=["embeddings"], limit=page, offset=offset)
            if got["ids"]:
                v = np.asarray(got["embeddings"], dtype=np.float32)
                v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
                d = np.round(1.0 - (q @ v.T).astype(np.float64), DISTANCE_DECIMALS)
                pid = np.broadcast_to(np.asarray(got["ids"], dtype=object), d.shape)
                d, pid = np.concatenate([best_d, d], axis=1), np.concatenate([best_i, pid], axis=1)
                keep = np.argpartition(d, min(k, d.shape[1] - 1), axis=1)[:, :k + 1] if d.shape[1] > k + 1 \
                    else np.argsort(d, axis=1)
                best_d, best_i = np.take_along_axis(d, keep, 1), np.take_along_axis(pid, keep, 1)
            if len(got["ids"]) < page:
                break
            offset += page
        return [[c for _, c in sorted(zip(row_d, row_i, strict=True))[:k]] for row_d, row_i in zip(best_d, best_i,
                                                                                                     strict=True)]

    def sample_queries(self, name: str, n: int, seed: int = 0) -> np.ndarray:
        """``n`` tuning queries: a seeded sample of the collection's own vectors, each moved by
        noise of norm :data:`PERTURB` (about as far from its chunk as a question is)."""
        ids = sorted(self.ids(name))
        rng = np.random.default_rng(seed + len(ids))
        pick = sorted(rng.choice(len(ids), size=min(n, len(ids)), replace=False).tolist())
        vecs = self.get_embeddings(name, [ids[i] for i in pick])
        base = np.asarray([vecs[ids[i]] for i in pick], dtype=np.float32)
        base /= np.maximum(np.linalg.norm(base, axis=1, keepdims=True), 1e-12)
        noise = rng.normal(size=base.shape).astype(np.float32)
        noise *= PERTURB / np.linalg.norm(noise, axis=1, keepdims=True)
        q = base + noise
        return q / np.linalg.norm(q, axis=1, keepdims=True)

    def _latency(self, name: str, queries: np.ndarray, k: int) -> dict[str, float]:
        ms = []
        for v in queries[:LATENCY_QUERIES]:
            t0 = time.perf_counter()
            self.query(name, v, k)
            ms.append((time.perf_counter() - t0) * 1000)
        return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}

    def _recall_at(self, col: Any, queries: np.ndarray, exact: list[list[str]], n: int, k: int) -> float:
        """recall@k of one block query of ``col`` (``n`` candidates each, ranked by :func:`rank_key`) against ``exact``."""
        res = col.query(query_embeddings=list(queries), n_results=n, include=["distances"])
        hits = 0
        for got, dist, want in zip(res["ids"], res["distances"], exact, strict=True):
            top = sorted(zip(got, (float(d) for d in dist), strict=True), key=lambda p: rank_key(*p))[:k]
            hits += len({c for c, _ in top} & set(want))
        return round(hits / max(1, sum(len(w) for w in exact)), 4)

    def tune_search(self, name: str, *, target: float | None = None, sample: int | None = None, k: int = TUNE_K,
                    grid: Sequence[int] = EF_GRID, ef: int | None = None,
                    overfetch: float = TUNED_OVERFETCH) -> dict[str, Any]:
        """Choose and set a collection's HNSW ``ef_search``: the smallest of ``grid`` whose
        recall@k against exact search reaches ``target`` (``chroma.target_recall``) on ``sample``
        perturbed copies of its own vectors, searched the way :meth:`query` searches a tuned
        collection (``overfetch`` times k candidates). ``ef`` forces a value instead (recall is
        still measured). The graph is settled first (see :meth:`settle`), the choice is written
        to the collection's configuration and metadata and read back. Returns what was chosen,
        the recall measured, the recall of each value tried and query latency before and after.

        Each value is measured at that value. chromadb (1.5.9) keeps searching a loaded HNSW
        index with the ``ef_search`` it was loaded with: after ``collection.modify`` the process
        that modified it, and a running ``chroma run`` server, search exactly as before (measured:
        the same recall for every ef), while a process (or server) started afterwards loads the
        index with the new value. So, embedded, each candidate is set with ``modify`` and then
        measured through a client on a System of its own (:meth:`_fresh_client`), which loads the
        settled graph from disk with that value, as a new process does. recall is close to
        monotonic in ``ef_search``, so the grid is searched by bisection (about log2 of its length
        measurements, each one load of the index and one block query): the value chosen measured
        ``>= target`` and, unless it is the grid's first, the grid value below it measured less.
        ``latency_after`` is measured the same way (a fresh load, the tuned query path).

        This process's own client (and any other client of this path in this process) keeps the
        graph and ``ef_search`` it has loaded until the store is opened again; the tuned value
        serves every process that opens the store afterwards.

        Server mode: the server holds the loaded index, and ``modify`` does not reach it until the
        server restarts (measured with a ``chroma run`` of chromadb 1.5.9: recall the same at ef
        10/32/1024 while running; after a restart it served the stored ef 10, 0.95 instead of
        1.0). A client cannot make it reload, so no grid is searched: the value kept is ``ef`` if
        given, else the ``ef_search`` stored now, and the recall recorded is what the server
        serves now (``measured_on`` says so); a forced ``ef`` takes effect at the server's next
        restart, unmeasured (``met`` is then None)."""
        t0 = time.perf_counter()
        target = self.settings.chroma.target_recall if target is None else target
        sample = self.settings.chroma.tune_sample if sample is None else sample
        if not 0 < target <= 1 or sample < 1 or overfetch < 1 or (ef is not None and ef < 1):
            raise ConfigError(f"tune_search: target must be in (0, 1], sample and ef at least 1, overfetch at least "
                              f"1; got target={target}, sample={sample}, ef={ef}, overfetch={overfetch}")
        embedded = self.mode == "embedded"
        with self.writer():
            col = self.collection(name)
            count = int(col.count())
            out: dict[str, Any] = {"collection": name, "vectors": count, "k": k, "target_recall": target}
            if not count:
                return {**out, "skipped": "empty collection", "seconds": round(time.perf_counter() - t0, 3)}
            queries = self.sample_queries(name, sample)
            before = self._latency(name, queries, k)
            settled = self.settle(name)
            exact = self.exact_top(name, queries, k)
            n = tuned_candidates(k, overfetch)
            tried: dict[int, float] = {}

            def measure(value: int) -> float:
                col.modify(configuration={"hnsw": {"ef_search": int(value)}})
                with self._fresh_client() as fresh:
                    tried[int(value)] = self._recall_at(fresh.get_collection(name), queries, exact, n, k)
                return tried[int(value)]

            if embedded:
                values = [int(ef)] if ef is not None else sorted({int(v) for v in grid})
                lo, hi = 0, len(values) - 1
                while lo < hi:  # the smallest value whose recall reaches the target
                    mid = (lo + hi) // 2
                    if measure(values[mid]) >= target:
                        hi = mid
                    else:
                        lo = mid + 1
                if values[lo] not in tried:
                    measure(values[lo])
                chosen, measured_on = values[lo], "fresh load of the settled index at each ef_search"
            else:
                stored = int(((col.configuration_json or {}).get("hnsw") or {}).get("ef_search") or 100)
                chosen = int(ef) if ef is not None else stored
                tried[stored] = self._recall_at(col, queries, exact, n, k)
                measured_on = "the server's loaded index (ef_search changes apply when the server restarts)"
            tried = dict(sorted(tried.items()))
            recall = tried.get(chosen)
            col.modify(configuration={"hnsw": {"ef_search": chosen}},
                       metadata={**(col.metadata or {}), META_EF: chosen, META_COUNT: count,
                                 META_RECALL: recall if recall is not None else -1.0,
                                 META_OVERFETCH: float(overfetch)})
            in_force = self.search_config(name)
            if in_force["ef_search"] != chosen or in_force["tuned_ef_search"] != chosen:
                raise VectorStoreUnavailableError(f"set ef_search={chosen} on {name} but Chroma reads back "
                                                  f"{in_force['ef_search']} (metadata {in_force['tuned_ef_search']})")
            if embedded:  # what a process that opens the store now gets
                with self._fresh_client() as fresh:
                    probe = VectorStore(self.settings)
                    probe._client = fresh
                    after = probe._latency(name, queries, k)
            else:
                after = self._latency(name, queries, k)
        met = None if recall is None else recall >= target
        (log.info if met else log.warning)(
            "tuned %s (%d vectors): ef_search %d, recall@%d %s against exact search (target %.3f, %d queries, "
            "measured on %s; tried %s); query p95 %.2f -> %.2f ms", name, count, chosen, k, recall, target,
            len(queries), measured_on, tried, before["p95_ms"], after["p95_ms"])
        return {**out, "ef_search": chosen, "recall": recall, "met": met, "sample": len(queries),
                "candidates": n, "overfetch": overfetch, "tried": tried, "measured_on": measured_on,
                "settled": settled, "latency_before": before, "latency_after": after,
                "seconds": round(time.perf_counter() - t0, 3)}

    def query(self, name: str, embedding: np.ndarray, k: int,
              include: Sequence[str] = QUERY_INCLUDE) -> dict[str, Any]:
        """:meth:`query_many` for one query vector."""
        return self.query_many(name, np.asarray([embedding]), k, include)

    def finish(self, collection: str, *, force: bool = False, min_vectors: int = EXACT_UP_TO) -> dict[str, Any]:
        """What a writer calls when it has finished writing a collection (a commit, a validated
        rebuild): tune its dense search when it was never tuned, with ``force``, or when it grew or
        shrank by more than ``chroma.retune_growth`` since it was; else settle it only (cheap, keeps
        search deterministic after the commit's writes). A collection of at most ``min_vectors``
        that was never tuned is not tuned: it is searched exhaustively (exact, see :func:`candidates`),
        so there is nothing to tune. A tuning is recorded in its index version's ``stats["search"]``
        (when the version has build figures: ``ragops index status`` prints those)."""
        from ragops import state

        cfg = self.search_config(collection)
        count = self.count(collection)
        tuned = cfg["tuned_count"]
        grown = tuned is not None and abs(count - int(tuned)) > self.settings.chroma.retune_growth * max(int(tuned), 1)
        if tuned is None and count <= min_vectors:
            return {"collection": collection, "vectors": count, "ef_search": cfg["ef_search"], "tuned_count": None,
                    "settled": self.settle(collection), "retuned": False,
                    "skipped": f"{count} vectors (at most {min_vectors}) are searched exhaustively: exact, no tuning"}
        if not (force or tuned is None or grown):
            return {"collection": collection, "vectors": count, "ef_search": cfg["ef_search"], "tuned_count": tuned,
                    "settled": self.settle(collection), "retuned": False}
        report = self.tune_search(collection)
        report["retuned"] = True
        if "ef_search" in report:
            from sqlalchemy import select

            keep = {k: report[k] for k in ("ef_search", "recall", "target_recall", "sample", "vectors", "candidates",
                                           "latency_before", "latency_after", "seconds")}
            with state.session_scope(self.settings.state_db_url) as s:
                v = s.execute(select(state.IndexVersion).where(state.IndexVersion.collection == collection)).scalar()
                if v is not None and v.stats:
                    v.stats = {**v.stats, "search": {**keep, "tuned_at": state.utcnow().isoformat()}}
        return report

    def drop(self, name: str) -> None:
        self.client.delete_collection(name)


for _name in ("collection", "has_collection", "upsert", "delete", "ids", "count", "get_chunks", "get_embeddings",
              "query_many", "query", "drop", "search_config", "settle", "tune_search", "finish"):
    setattr(VectorStore, _name, _server_errors(getattr(VectorStore, _name)))
