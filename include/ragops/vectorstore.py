"""Chroma access: embedded PersistentClient (writers serialised by a file lock) or a server.

Chroma holds vectors (plus text and metadata for display); which collection serves an index is
the state store's business. Two processes writing one embedded path corrupt it, so every write
goes through :meth:`VectorStore.writer`, which takes an exclusive file lock in embedded mode.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

import numpy as np

from ragops.config import Settings
from ragops.errors import ConfigError, VectorStoreBusyError

log = logging.getLogger(__name__)
PAGE = 5000


class VectorStore:
    def __init__(self, settings: Settings, lock_timeout: float = 600.0) -> None:
        self.settings = settings
        self.lock_timeout = lock_timeout
        self._client: Any = None

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

    def describe(self) -> str:
        return str(self.settings.chroma_path) if self.mode == "embedded" else str(self.settings.chroma.url)

    @contextmanager
    def writer(self) -> Iterator[None]:
        """Exclusive writer section. Embedded: a file lock beside the store; server: no-op."""
        if self.mode != "embedded":
            yield
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
        try:
            yield
        finally:
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
        col = self.collection(name, create=True)
        step = self._batch()
        for i in range(0, len(ids), step):
            col.upsert(ids=list(ids[i:i + step]), embeddings=embeddings[i:i + step],
                       documents=list(documents[i:i + step]), metadatas=list(metadatas[i:i + step]))
        return len(ids)

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

    def get_chunks(self, name: str, ids: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """Text and metadata of chunks by id (for hits that came from the lexical index)."""
        col = self.collection(name)
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

    def query_many(self, name: str, embeddings: np.ndarray, k: int) -> dict[str, Any]:
        """One request for a block of queries (what an evaluation does)."""
        return self.collection(name).query(query_embeddings=list(embeddings), n_results=k,
                                           include=["documents", "metadatas", "distances"])

    def query(self, name: str, embedding: np.ndarray, k: int) -> dict[str, Any]:
        return self.collection(name).query(query_embeddings=[embedding], n_results=k,
                                           include=["documents", "metadatas", "distances"])

    def drop(self, name: str) -> None:
        self.client.delete_collection(name)
