"""Lexical (BM25) retrieval over one Chroma collection version, and reciprocal rank fusion.

Dense retrieval misses exact identifiers, error codes and rare terms; a BM25 index over the
same chunks catches them, and :func:`rrf` merges both rankings without calibrating scores.

One index is built per collection version (the folder is :func:`folder_for`) so a swap or a
rollback of the alias switches the lexical side together with the vectors. The index is built
with ``bm25s`` (sparse, precomputed scores: querying is a sum over the query terms' postings)
and, when it is installed, PyStemmer for stemming so "retries" matches "retry".

On disk a folder holds the ``bm25s`` files, ``ids.json`` (chunk ids and doc ids, in index
order) and ``manifest.json`` (written last; its presence marks a complete index). Saving is
atomic: readers see the old folder or the new one, never a half-written one.

Rankings are a total order, so the same query on the same index version gives the same list in
every process: an index is built in chunk-id order whatever order the chunks come in, and a
query ranks by (BM25 score desc, chunk id) over every chunk that ties at the k-th score, instead
of letting a partial sort pick among equal scores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
import uuid
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
from sqlalchemy import select

from ragops import state
from ragops.config import Settings
from ragops.errors import LexicalIndexError

log = logging.getLogger(__name__)
# bm25s sets its own logger to DEBUG at import, which makes its debug lines pass any handler
# that has no level of its own (e.g. logging.basicConfig); let it inherit like other libraries.
logging.getLogger("bm25s").setLevel(logging.NOTSET)

FORMAT_VERSION = 1
BUILD_BATCH = 1000  # chunk texts tokenized (and read from the state store) at a time
MANIFEST = "manifest.json"
IDS_FILE = "ids.json"
_FIX = ("re-run the ingest of that index (`ragops ingest SOURCE --index NAME` or the ingest_documents DAG): a sync "
        "rebuilds a BM25 index that is missing or unreadable")

Stem = Callable[[list[str]], list[str]]


@dataclass(frozen=True)
class Bm25Settings:
    """BM25 parameters and text analysis. Changing any of them needs a rebuild of the index."""

    k1: float = 1.5
    b: float = 0.75
    stemmer: str | None = "english"  # a PyStemmer (Snowball) algorithm name, or None
    stopwords: str | None = "en"  # a bm25s stop-word list name ("en", "de", ...), or None


def folder_for(data_dir: Path, collection: str) -> Path:
    """Folder of the lexical index of one collection version."""
    return Path(data_dir) / "lexical" / collection


def folder_bytes(data_dir: Path, collection: str) -> int:
    """Size on disk of a collection's BM25 index (0 when it has none)."""
    folder = folder_for(data_dir, collection)
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.exists() else 0


def ids_digest(chunk_ids: Sequence[str]) -> str:
    """sha256 (hex) of the sorted chunk ids joined by newlines: compares the id set with Chroma's."""
    h = hashlib.sha256()
    for i, cid in enumerate(sorted(chunk_ids)):
        h.update(("\n" if i else "").encode() + cid.encode())
    return h.hexdigest()


def _stemmer(name: str | None) -> Stem | None:
    """A fresh PyStemmer stemmer (instances are not thread-safe; creating one costs < 1 µs).

    Returns None when ``name`` is None; raises ImportError when PyStemmer is not installed.
    """
    if name is None:
        return None
    import Stemmer  # PyStemmer; imported here so a missing install is handled by the callers

    try:
        return Stemmer.Stemmer(name).stemWords
    except KeyError:
        raise LexicalIndexError(
            f"unknown stemmer {name!r} in the BM25 settings; use one of {sorted(Stemmer.algorithms())}, or "" for no stemming"
        ) from None


def _tokenize(texts: list[str], stopwords: str | None, stem: Stem | None, return_ids: bool) -> Any:
    """bm25s tokenization (lower case, ``\\w\\w+`` tokens, stop words, stems) without progress bars."""
    try:
        return bm25s.tokenize(texts, lower=True, stopwords=stopwords, stemmer=stem,
                              return_ids=return_ids, show_progress=False)
    except ValueError as e:  # bm25s rejects unknown stop-word list names with ValueError
        raise LexicalIndexError(f"bad stop-word setting {stopwords!r} in the BM25 settings: {e}") from e


class LexicalIndex:
    """A BM25 index over chunks; results carry the chunk id and its document id.

    Build with :meth:`build` or read with :meth:`load`; the chunk texts are not kept.
    """

    def __init__(self, chunk_ids: list[str], doc_ids: list[str], settings: Bm25Settings,
                 stemmer_applied: str | None, bm25: bm25s.BM25 | None, ids_sha256: str | None = None) -> None:
        """Internal: use :meth:`build` or :meth:`load`. ``bm25`` is None when nothing has any term."""
        self._chunk_ids = chunk_ids
        self._doc_ids = doc_ids
        self._settings = settings
        self._stemmer_applied = stemmer_applied
        self._bm25 = bm25
        self._ids_sha256 = ids_sha256 or ids_digest(chunk_ids)

    # ------------------------------------------------------------ build

    @classmethod
    def build(cls, chunk_ids: list[str], texts: list[str], doc_ids: list[str],
              settings: Bm25Settings = Bm25Settings()) -> LexicalIndex:
        """Index ``texts`` (one per chunk). Empty input gives an index that returns no results."""
        if not (len(chunk_ids) == len(texts) == len(doc_ids)):
            raise LexicalIndexError(
                f"cannot build a lexical index from {len(chunk_ids)} chunk ids, {len(texts)} texts and "
                f"{len(doc_ids)} doc ids; pass one text and one doc id per chunk id")
        seen: set[str] = set()
        for dup in chunk_ids:
            if dup in seen:
                raise LexicalIndexError(
                    f"chunk id {dup!r} appears more than once; pass each chunk once (as stored in Chroma)")
            seen.add(dup)
        del seen
        # chunk-id order whatever order the caller passed (e.g. a database's collation): the same
        # chunks give the same index, and equal scores rank in chunk-id order
        order = sorted(range(len(chunk_ids)), key=chunk_ids.__getitem__)
        texts = list(texts)
        return cls.build_sorted([chunk_ids[i] for i in order], [doc_ids[i] for i in order],
                                ([texts[i] for i in order[b:b + BUILD_BATCH]]
                                 for b in range(0, len(order), BUILD_BATCH)), settings)

    @classmethod
    def build_sorted(cls, chunk_ids: list[str], doc_ids: list[str], text_batches: Iterable[list[str]],
                     settings: Bm25Settings = Bm25Settings()) -> LexicalIndex:
        """Index chunks given in chunk-id order, their texts in batches (the same order), so a caller
        can stream texts from a database. Only each chunk's token ids are kept (4 bytes a token),
        never every text or a Python list of tokens: the build's memory is the index's, not the corpus'."""
        started = time.perf_counter()
        stem: Stem | None = None
        stemmer_applied = settings.stemmer
        if settings.stemmer is not None:
            try:
                stem = _stemmer(settings.stemmer)
            except ImportError:
                log.warning("PyStemmer is not installed: building the lexical index without stemming "
                            "(install it with `pip install -r requirements.txt -c constraints.txt` and rebuild)")
                stemmer_applied = None
        vocab: dict[str, int] = {}
        docs: list[array] = []
        for batch in text_batches:
            if not batch:
                continue
            for toks in _tokenize(list(batch), settings.stopwords, stem, return_ids=False):
                docs.append(array("i", [vocab.setdefault(t, len(vocab)) for t in toks]))
        if len(docs) != len(chunk_ids):
            raise LexicalIndexError(f"cannot build a lexical index from {len(chunk_ids)} chunk ids and "
                                    f"{len(docs)} texts; pass one text per chunk id")
        bm25: bm25s.BM25 | None = None
        if vocab:  # bm25s cannot index a corpus without a single term
            bm25 = bm25s.BM25(k1=settings.k1, b=settings.b)
            bm25.index(bm25s.tokenization.Tokenized(ids=docs, vocab=vocab), show_progress=False)
            bm25.unique_token_ids_set = None  # only used by bm25s for int-id queries; saves memory
        del docs
        index = cls(list(chunk_ids), list(doc_ids), settings, stemmer_applied, bm25)
        log.info("built lexical index: %s chunks, %s terms in %.2f s", len(chunk_ids),
                 len(bm25.vocab_dict) - 1 if bm25 is not None else 0, time.perf_counter() - started)
        return index

    # ------------------------------------------------------------ properties

    @property
    def n_chunks(self) -> int:
        """Number of indexed chunks (including any with no searchable term)."""
        return len(self._chunk_ids)

    @property
    def ids_sha256(self) -> str:
        """:func:`ids_digest` of the chunk ids: compare it with the collection's to detect drift."""
        return self._ids_sha256

    @property
    def settings(self) -> Bm25Settings:
        """The settings the index was built with."""
        return self._settings

    # ------------------------------------------------------------ query

    def query(self, text: str, k: int) -> list[tuple[str, str, float]]:
        """Best-first ``(chunk_id, doc_id, score)`` of at most ``k`` chunks with a positive score."""
        return self.query_many([text], k)[0]

    def query_many(self, texts: list[str], k: int) -> list[list[tuple[str, str, float]]]:
        """:meth:`query` for many texts in one bm25s call (one tokenization pass, one retrieve)."""
        out: list[list[tuple[str, str, float]]] = [[] for _ in texts]
        if not texts or k <= 0 or self._bm25 is None:
            return out
        stem = _stemmer(self._stemmer_applied)
        tokens = _tokenize(list(texts), self._settings.stopwords, stem, return_ids=False)
        vocab = self._bm25.vocab_dict
        # Queries with no indexed term score 0 everywhere: skip them (bm25s would log each one).
        todo = [(i, [t for t in toks if t in vocab]) for i, toks in enumerate(tokens)]
        todo = [(i, toks) for i, toks in todo if toks]
        if not todo:
            return out
        for i, toks in todo:
            out[i] = [(self._chunk_ids[d], self._doc_ids[d], s) for d, s in self._top(toks, k)]
        return out

    def _top(self, tokens: list[str], k: int) -> list[tuple[int, float]]:
        """The k best ``(row, score)`` with a positive score, ranked by (score desc, chunk id).

        Every chunk that ties with the k-th score is a candidate before the cut, so which of several
        equal scores makes the list never depends on a partial sort (bm25s' top-k picks among ties
        by position in memory)."""
        scores = self._bm25.get_scores(tokens)  # type: ignore[union-attr]
        rows = np.flatnonzero(scores > 0)
        if rows.size > k:
            kth = np.partition(scores[rows], rows.size - k)[rows.size - k]  # the k-th largest score
            rows = rows[scores[rows] >= kth]
        ids = self._chunk_ids
        best = sorted(((float(scores[d]), int(d)) for d in rows), key=lambda p: (-p[0], ids[p[1]]))[:k]
        return [(d, s) for s, d in best]

    # ------------------------------------------------------------ persistence

    def save(self, folder: Path) -> None:
        """Write the index to ``folder`` atomically, replacing any index already there."""
        folder = Path(folder)
        started = time.perf_counter()
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            # not tempfile.mkdtemp: its 0700 mode would survive the rename and lock other users out
            tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:12]}"
            tmp.mkdir()
        except OSError as e:
            raise LexicalIndexError(f"cannot create the lexical index folder {folder}: {e}; "
                                    "check the data directory's permissions and free space") from e
        try:
            self._write(tmp)
            _swap_in(tmp, folder)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError):
                raise LexicalIndexError(f"cannot write the lexical index {folder}: {e}; "
                                        "check the data directory's permissions and free space") from e
            raise
        log.info("saved lexical index (%s chunks) to %s in %.2f s", self.n_chunks, folder,
                 time.perf_counter() - started)

    def _write(self, tmp: Path) -> None:
        """All files into the temporary folder, manifest last, each flushed to disk."""
        if self._bm25 is not None:
            self._bm25.save(tmp, show_progress=False)
        (tmp / IDS_FILE).write_text(json.dumps({"chunk_ids": self._chunk_ids, "doc_ids": self._doc_ids}),
                                    encoding="utf-8")
        manifest = {
            "format": FORMAT_VERSION,
            "n_chunks": self.n_chunks,
            "ids_sha256": self._ids_sha256,
            "settings": asdict(self._settings),
            "stemmer_applied": self._stemmer_applied,
            "has_bm25": self._bm25 is not None,
            "bm25s_version": bm25s.__version__,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        for p in tmp.iterdir():
            _fsync(p)
        _fsync(tmp)

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex:
        """Read an index written by :meth:`save`; a missing or damaged one raises LexicalIndexError."""
        folder = Path(folder)
        if not (folder / MANIFEST).is_file():
            what = "has no manifest.json (incomplete or not an index)" if folder.is_dir() else "does not exist"
            raise LexicalIndexError(f"lexical index {folder} {what}; {_FIX}")
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            if manifest.get("format") != FORMAT_VERSION:
                raise ValueError(f"format {manifest.get('format')!r}, expected {FORMAT_VERSION}")
            known = {f.name for f in fields(Bm25Settings)}
            settings = Bm25Settings(**{k: v for k, v in manifest["settings"].items() if k in known})
            ids = json.loads((folder / IDS_FILE).read_text(encoding="utf-8"))
            chunk_ids, doc_ids = list(ids["chunk_ids"]), list(ids["doc_ids"])
            n = int(manifest["n_chunks"])
            if not (len(chunk_ids) == len(doc_ids) == n):
                raise ValueError(f"{len(chunk_ids)} chunk ids and {len(doc_ids)} doc ids for {n} chunks")
            digest = ids_digest(chunk_ids)
            if digest != manifest["ids_sha256"]:
                raise ValueError("chunk ids do not match the manifest's ids_sha256")
            bm25 = None
            if manifest["has_bm25"]:
                bm25 = bm25s.BM25.load(folder, show_progress=False)
                bm25.unique_token_ids_set = None
                _check_matrix(bm25, n)
        except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
            raise LexicalIndexError(f"lexical index {folder} is corrupt ({type(e).__name__}: {e}); {_FIX}") from e
        stemmer_applied = manifest.get("stemmer_applied")
        if stemmer_applied is not None:
            try:
                _stemmer(stemmer_applied)
            except ImportError:
                raise LexicalIndexError(
                    f"lexical index {folder} was built with the {stemmer_applied!r} stemmer but PyStemmer is "
                    "not installed, so queries would not match; install it with "
                    "`pip install -r requirements.txt -c constraints.txt`") from None
        log.info("loaded lexical index %s: %s chunks, bm25s %s", folder, n, manifest.get("bm25s_version"))
        return cls(chunk_ids, doc_ids, settings, stemmer_applied, bm25, ids_sha256=digest)


def _check_matrix(bm25: bm25s.BM25, n: int) -> None:
    """Cheap consistency checks, so a damaged index fails at load rather than at query time."""
    sc = bm25.scores
    data, indices, indptr = sc["data"], sc["indices"], sc["indptr"]
    if sc["num_docs"] != n:
        raise ValueError(f"BM25 matrix has {sc['num_docs']} documents for {n} chunks")
    n_terms = len(indptr) - 1
    if not (len(data) == len(indices) == int(indptr[-1])) or (len(indices) and int(indices.max()) >= n):
        raise ValueError("BM25 matrix arrays are inconsistent")
    vocab = bm25.vocab_dict
    # bm25s adds an empty token "" after the real terms; every real term must have a column.
    if any(not 0 <= v < n_terms for t, v in vocab.items() if t != ""):
        raise ValueError(f"vocabulary refers to terms outside the {n_terms} columns of the BM25 matrix")


def _fsync(path: Path) -> None:
    """Flush a file or folder to disk so a crash after the rename cannot expose empty files."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap_in(tmp: Path, folder: Path) -> None:
    """Move ``tmp`` to ``folder``; an existing ``folder`` is renamed aside, then deleted.

    Between the two renames ``folder`` is briefly absent (readers get a clear "does not exist");
    if the second rename fails the old folder is put back.
    """
    if not os.path.lexists(folder):
        os.rename(tmp, folder)
    else:
        old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:12]}"
        os.rename(folder, old)
        try:
            os.rename(tmp, folder)
        except BaseException:
            os.rename(old, folder)
            raise
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
        if os.path.lexists(old):
            log.warning("could not delete the replaced lexical index %s; delete it by hand", old)
    try:
        _fsync(folder.parent)
    except OSError:  # some filesystems do not allow fsync on a directory; the rename still happened
        pass


# ---------------------------------------------------------------- fusion


def rrf(rankings: list[list[str]], weights: list[float] | None = None, k: int = 60) -> list[tuple[str, float]]:
    """Weighted reciprocal rank fusion: score(id) = sum_i w_i / (k + rank_i(id)), ranks from 1.

    Rank-based, so BM25 and cosine scores need no calibration. Best first; equal scores keep the
    order of first appearance (first ranking that has the id, then its position there). An id
    repeated within one ranking counts once, at its best rank.
    """
    if weights is None:
        weights = [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise LexicalIndexError(f"rrf got {len(rankings)} rankings but {len(weights)} weights; "
                                "pass one weight per ranking")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise LexicalIndexError(f"rrf weights must be finite and >= 0, got {weights}")
    if k < 0:
        raise LexicalIndexError(f"rrf k must be >= 0, got {k}")
    terms: dict[str, list[float]] = {}  # insertion order = order of first appearance
    for ranking, w in zip(rankings, weights, strict=True):
        seen: set[str] = set()
        for rank, item in enumerate(ranking, start=1):
            if item in seen:
                continue
            seen.add(item)
            terms.setdefault(item, []).append(w / (k + rank))
    # fsum is exact for the same terms in any order, so equal contributions tie exactly.
    scored = [(item, math.fsum(ts)) for item, ts in terms.items()]
    scored.sort(key=lambda p: -p[1])  # stable: ties keep first-appearance order
    return scored


# ---------------------------------------------------------------- the BM25 index of an index version


def build_lexical(settings: Settings, index: str, collection: str) -> dict[str, Any]:
    """(Re)build the BM25 index of ``collection`` from the state store's chunks of ``index``.

    Here, not in ``retrieval``: the writer side (``indexing``, ``lifecycle``) builds it and the
    reader side (``retrieval``) loads it, so neither has to import the other."""
    t0 = time.perf_counter()
    with state.session_scope(settings.state_db_url) as s:
        rows = sorted(s.execute(select(state.Chunk.chunk_id, state.Chunk.doc_id)
                                .where(state.Chunk.index_name == index)).all())
    ids = [r[0] for r in rows]

    def texts() -> Iterator[list[str]]:  # in chunk-id order, a batch at a time: never every text at once
        for b in range(0, len(ids), BUILD_BATCH):
            part = ids[b:b + BUILD_BATCH]
            with state.session_scope(settings.state_db_url) as s:
                got = dict(s.execute(select(state.Chunk.chunk_id, state.Chunk.text).where(
                    state.Chunk.index_name == index, state.Chunk.chunk_id.in_(part))).all())
            missing = [c for c in part if c not in got]
            if missing:
                raise LexicalIndexError(f"chunks {missing[:3]} of {index!r} vanished while the BM25 index was "
                                        "built (another sync wrote the index): run the sync again")
            yield [got[c] for c in part]

    r = settings.retrieval
    idx = LexicalIndex.build_sorted(ids, [row[1] for row in rows], texts(),
                                    Bm25Settings(k1=r.bm25_k1, b=r.bm25_b,
                                                 stemmer=None if r.stemmer.lower() in ("", "none") else r.stemmer))
    folder = folder_for(settings.data_dir, collection)
    idx.save(folder)
    out = {"collection": collection, "chunks": len(rows), "seconds": round(time.perf_counter() - t0, 3),
           "folder": str(folder)}
    log.info("built the BM25 index of %s: %d chunks in %.1fs", collection, len(rows), out["seconds"])
    return out
