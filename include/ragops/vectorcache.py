"""A persistent, content-addressed cache of sentence vectors, shared by runs and processes.

An evaluation embeds the clauses and sentences of every retrieved passage (claim-level
groundedness, the toxicity head) and a nightly run over an unchanged index embeds the same
sentences again: most of an eval run's time was that model pass. This cache keeps each vector
once, keyed by the SHA-256 of the text, in one SQLite file per embedder fingerprint (model, the
digest of its files, normalisation, backend and quantisation), so vectors of two backends or two
models never mix. A vector read back is the float32 vector the model returned, bit for bit.

It is a cache: anything wrong with it (a corrupt or locked file, a full disk) costs speed, never
a result. A corrupt file is moved aside and started afresh, with a warning naming both paths.
The oldest entries go first when it holds more than ``max_mb`` (``eval.vector_cache_mb``).
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ROW_OVERHEAD = 80  # bytes of key, rowid and page slack per entry, on top of the vector
SCHEMA = ("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vec BLOB NOT NULL)",
          "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")


def key_of(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def path_for(data_dir: str | Path, fingerprint: str) -> Path:
    digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
    return Path(data_dir) / "cache" / f"vectors-{digest}.sqlite3"


class VectorCache:
    """``get_many`` / ``put_many`` of float32 vectors by text. Thread-unsafe, like the encoder using it."""

    def __init__(self, path: str | Path, fingerprint: str, max_mb: float = 256) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.max_mb = float(max_mb)
        self.hits = 0
        self.misses = 0
        self._db: sqlite3.Connection | None = None
        self._dim: int | None = None
        self._broken = False

    @classmethod
    def for_embedder(cls, data_dir: str | Path, fingerprint: str, max_mb: float) -> VectorCache | None:
        """The cache of this embedder under ``<data_dir>/cache``; None when ``max_mb`` is 0 (off)."""
        return cls(path_for(data_dir, fingerprint), fingerprint, max_mb) if max_mb > 0 else None

    # ------------------------------------------------------------------ connection

    def _connect(self) -> sqlite3.Connection | None:
        if self._db is not None or self._broken:
            return self._db
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as e:  # not a database, or a damaged one: it is only a cache
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.warning("the vector cache %s is unreadable (%s): moved it to %s and started a new one",
                        self.path, e, aside)
            try:
                self.path.replace(aside)
                for suffix in ("-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
                self._db = self._open()
            except (OSError, sqlite3.Error) as e2:
                self._disable(f"cannot start a new one: {e2}")
        except (OSError, sqlite3.Error) as e:
            self._disable(str(e))
        return self._db

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            for stmt in SCHEMA:
                db.execute(stmt)
            row = db.execute("SELECT value FROM meta WHERE name = 'fingerprint'").fetchone()
            if row is None:
                db.execute("INSERT OR IGNORE INTO meta VALUES ('fingerprint', ?)", (self.fingerprint,))
            elif row[0] != self.fingerprint:  # two fingerprints hashed alike: never serve the other's vectors
                raise sqlite3.DatabaseError(f"it holds vectors of {row[0]!r}, not of {self.fingerprint!r}")
            dim = db.execute("SELECT value FROM meta WHERE name = 'dim'").fetchone()
            self._dim = int(dim[0]) if dim else None
        except BaseException:
            db.close()
            raise
        return db

    def _disable(self, why: str) -> None:
        log.warning("the vector cache %s is off for this process (%s): vectors are computed, nothing is lost",
                    self.path, why)
        self._broken = True
        self.close()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # ------------------------------------------------------------------ read and write

    def get_many(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        db = self._connect()
        out: dict[str, np.ndarray] = {}
        if db is None or self._dim is None or not texts:
            self.misses += len(texts)
            return out
        keys = {key_of(t): t for t in texts}
        try:
            ks = list(keys)
            for b in range(0, len(ks), 500):
                part = ks[b:b + 500]
                rows = db.execute(f"SELECT key, vec FROM vectors WHERE key IN ({','.join('?' * len(part))})",
                                  part).fetchall()
                for k, blob in rows:
                    if len(blob) == 4 * self._dim:
                        out[keys[k]] = np.frombuffer(blob, dtype=np.float32).copy()
        except sqlite3.Error as e:
            self._disable(f"read failed: {e}")
        self.hits += len(out)
        self.misses += len(texts) - len(out)
        return out

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        db = self._connect()
        if db is None or not items:
            return
        try:
            if self._dim is None:
                self._dim = int(next(iter(items.values())).shape[-1])
                db.execute("INSERT OR REPLACE INTO meta VALUES ('dim', ?)", (str(self._dim),))
            rows = [(key_of(t), np.asarray(v, dtype=np.float32).tobytes()) for t, v in items.items()
                    if np.asarray(v).shape[-1] == self._dim]
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?)", rows)
            limit = int(self.max_mb * 1024 * 1024 // (4 * self._dim + ROW_OVERHEAD))
            (n,) = db.execute("SELECT max(rowid) - min(rowid) + 1 FROM vectors").fetchone()
            if n is not None and n > limit:  # rowids grow with insertion: a rowid range bounds the count
                (count,) = db.execute("SELECT count(*) FROM vectors").fetchone()
                if count > limit:  # the oldest tenth beyond the limit goes
                    db.execute("DELETE FROM vectors WHERE rowid IN (SELECT rowid FROM vectors ORDER BY rowid "
                               "LIMIT ?)", (count - limit + limit // 10,))
            db.execute("COMMIT")
        except sqlite3.OperationalError as e:  # locked past the timeout, disk full: skip this write
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            log.warning("could not write %d vectors to the cache %s (%s): they will be computed again next time",
                        len(items), self.path, e)
        except sqlite3.Error as e:
            self._disable(f"write failed: {e}")

    def stats(self) -> dict[str, object]:
        return {"path": str(self.path), "hits": self.hits, "misses": self.misses}
