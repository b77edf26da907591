"""Property-based tests (hypothesis) of the chunker and of the record manager's sync.

Example-based tests check the cases someone thought of; these generate the ones nobody did:
Markdown with random headings and empty sections, combining characters, emoji, CJK, control
characters and very long words for the chunker, and random add / change / delete sequences on a
small source folder for ``ragops.indexing.sync`` against the real parts (SQLite state store,
embedded Chroma, the bundled model). Hypothesis' example database is off (``database=None``) so a
run writes nothing into the checkout; a failure prints the minimal example instead.
"""

from __future__ import annotations

import operator
import os
import shutil
import sqlite3
import string
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from ragops import state
from ragops.chunking import Chunker, ChunkPiece, chunk_id
from ragops.config import ChunkingSettings, Settings, load_settings
from ragops.embedding import Embedder
from ragops.indexing import pipeline_fingerprint, self_check, sync
from ragops.parsing import ParsedDoc, normalise, parse_file, parse_markdown
from ragops.vectorstore import VectorStore

SOURCE = "file:///props/src"
INDEX = "props"

# the same examples on every run (CI stays deterministic); RAGOPS_HYPOTHESIS_RANDOM=1 explores new ones
DERANDOMIZE = not os.environ.get("RAGOPS_HYPOTHESIS_RANDOM")
CHUNKER_SETTINGS = hsettings(max_examples=60, deadline=None, database=None, derandomize=DERANDOMIZE,
                             suppress_health_check=[HealthCheck.too_slow])
SYNC_SETTINGS = hsettings(max_examples=15, stateful_step_count=6, deadline=None, database=None, derandomize=DERANDOMIZE,
                          suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------------------------
# helpers


@cache
def _project_settings() -> Settings:
    """The project's settings file, as process_batch sees it for a new index."""
    return load_settings()


_CHUNKERS: dict[tuple[str, int, int], Chunker] = {}


def chunker_for(embedder: Embedder, chunking: ChunkingSettings) -> Chunker:
    """Built exactly as ``process_batch`` builds it: the model's own tokenizer and limits."""
    key = (embedder.fingerprint, chunking.chunk_tokens, chunking.overlap_tokens)
    if key not in _CHUNKERS:
        _CHUNKERS[key] = Chunker(chunking, embedder.tokenizer, embedder.max_tokens, embedder.fingerprint)
    return _CHUNKERS[key]


def project_chunking() -> ChunkingSettings:
    return _project_settings().chunking


SMALL_CHUNKING = ChunkingSettings(chunk_tokens=40, overlap_tokens=5)  # many cuts with modest documents
BIG_CHUNKING = ChunkingSettings(chunk_tokens=512, overlap_tokens=50)  # asks for more than the model takes
CHUNKINGS = st.sampled_from(["project", "small", "big"])


def chunking_of(name: str) -> ChunkingSettings:
    return {"small": SMALL_CHUNKING, "big": BIG_CHUNKING}.get(name) or project_chunking()


def visible(text: str) -> str:
    """What must survive Markdown chunking: every printable, non-space character. The header
    splitter drops non-printable characters (controls, zero-width joiners, other line separators);
    the tokenizer ignores them too and the quality suite quarantines control characters."""
    return "".join(ch for ch in text if ch.isprintable() and ch != " ")


def no_space(text: str) -> str:
    """Whitespace normalisation only: what must survive plain-text chunking."""
    return "".join(text.split())


def is_subsequence(needle: str, haystack: str) -> bool:
    """``needle``'s characters occur in ``haystack`` in order (overlaps only add characters)."""
    it = iter(haystack)
    return all(ch in it for ch in needle)


def ids_of(pieces: list[ChunkPiece], doc_id: str, fingerprint: str) -> list[str]:
    return [chunk_id(SOURCE, doc_id, p.position, p.text, fingerprint) for p in pieces]


def assert_well_formed(chunker: Chunker, embedder: Embedder, pieces: list[ChunkPiece]) -> None:
    """Invariants of every split: the model never truncates, positions are dense, bodies are
    non-empty and what is embedded is the context line plus the body."""
    assert [p.position for p in pieces] == list(range(len(pieces)))
    for p in pieces:
        with_specials = len(embedder.tokenizer(p.text, add_special_tokens=True)["input_ids"])
        assert with_specials <= embedder.max_seq_length, f"chunk {p.position} has {with_specials} word pieces"
        assert p.n_tokens == chunker.count(p.text) <= chunker.max_tokens
        assert p.body and p.body == p.body.strip(), f"chunk {p.position} has an empty or unstripped body"
        assert p.text == (f"{p.context}\n\n{p.body}" if p.context else p.body)


# ----------------------------------------------------------------------------------------------
# chunker strategies

ASCII_WORD = st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=12)
# Any non-space character but '#', so a paragraph line can never become a heading.
SPACES = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
ANY_CHAR = st.characters(codec="utf-8", exclude_characters="#" + SPACES)
UNICODE_WORD = st.text(alphabet=ANY_CHAR, min_size=1, max_size=12)
COMBINING_WORD = st.builds(operator.add, st.sampled_from("aeiouAEIOUnczs"),
                           st.text(alphabet=st.characters(categories=["Mn"]), min_size=1, max_size=4))
EMOJI = st.sampled_from(["😀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "❤️", "🧑🏿‍🚀", "☕"])
CJK_WORD = st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=60)
CONTROL = st.text(alphabet=st.characters(categories=["Cc", "Cf"], exclude_characters=SPACES), min_size=1, max_size=3)
CONTROL_WORD = st.builds(lambda a, c, b: a + c + b, ASCII_WORD, CONTROL, ASCII_WORD)
LONG_WORD = st.one_of(
    st.builds(operator.mul, st.sampled_from(["x", "é", "中", "!", "ab", "👍"]), st.integers(101, 1200)),
    st.text(alphabet=string.ascii_lowercase, min_size=101, max_size=400),
    st.text(alphabet=ANY_CHAR, min_size=40, max_size=300),
)
WORD = st.one_of(ASCII_WORD, ASCII_WORD, UNICODE_WORD, COMBINING_WORD, EMOJI, CJK_WORD, CONTROL_WORD, LONG_WORD)
# Any of them separates two words, in Markdown too (parsing turns a no-break space into a space, the
# chunker every other space but the newline, before langchain's header splitter drops it).
SEPARATOR = st.sampled_from([" ", " ", " ", "  ", "\t", "\u3000", "\u2003", "\u00a0"])
LINE = st.lists(st.tuples(WORD, SEPARATOR), min_size=1, max_size=30).map(lambda ws: "".join(w + s for w, s in ws))
PARAGRAPH = st.lists(LINE, min_size=1, max_size=3).map("\n".join)
HEADING = st.builds(lambda level, words: "#" * level + " " + " ".join(words), st.integers(1, 6),
                    st.lists(st.one_of(ASCII_WORD, UNICODE_WORD, EMOJI, CJK_WORD), max_size=6))


@st.composite
def markdown_docs(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A Markdown document and its paragraphs in order (sections may be empty)."""
    paragraphs: list[str] = []
    blocks: list[str] = []
    for para in draw(st.lists(PARAGRAPH, max_size=2)):  # text before the first heading
        blocks.append(para)
        paragraphs.append(para)
    for heading, paras in draw(st.lists(st.tuples(HEADING, st.lists(PARAGRAPH, max_size=3)), max_size=6)):
        blocks.append(heading)
        blocks.extend(paras)
        paragraphs.extend(paras)
    return "\n\n".join(blocks) + draw(st.sampled_from(["", "\n"])), paragraphs


# ----------------------------------------------------------------------------------------------
# chunker properties


@given(doc=markdown_docs(), chunking=CHUNKINGS)
@CHUNKER_SETTINGS
def test_markdown_chunks_fit_the_model_cover_the_body_and_have_stable_ids(
        embedder: Embedder, doc: tuple[str, list[str]], chunking: str) -> None:
    """A chunk over the model's limit is silently truncated, a lost word is unfindable and an
    unstable id re-embeds unchanged text on every sync: none of these may happen for any input."""
    text, paragraphs = doc
    chunker = chunker_for(embedder, chunking_of(chunking))
    title, body = parse_markdown(normalise(text), "doc.md")  # what parse_file hands the chunker
    parsed = ParsedDoc("doc.md", title, body, "md", {})
    pieces = chunker.split(parsed)
    assert_well_formed(chunker, embedder, pieces)

    # coverage: the paragraphs' visible characters, in document order
    joined = visible("".join(p.body for p in pieces))
    assert is_subsequence(visible("".join(paragraphs)), joined), "text of the body is missing from the chunks"
    # and every word that fits in a chunk is a whole word of some chunk (not cut, not glued), in a
    # section without any separator too
    chunk_words = {visible(w) for p in pieces for w in p.body.split()}
    for para in paragraphs:
        for word in para.split():
            w = visible(word)
            if w and chunker.count(w) <= 32:
                assert w in chunk_words, f"word {word!r} is not a whole word of any chunk"

    # determinism: a fresh chunker on the same input gives the same chunks and ids
    again = Chunker(chunking_of(chunking), embedder.tokenizer, embedder.max_tokens, embedder.fingerprint).split(parsed)
    assert again == pieces
    assert ids_of(again, "doc.md", chunker.fingerprint) == ids_of(pieces, "doc.md", chunker.fingerprint)
    assert len(set(ids_of(pieces, "doc.md", chunker.fingerprint))) == len(pieces)


@given(text=st.lists(st.tuples(WORD, SEPARATOR | st.just("\n") | st.just("\n\n")), max_size=80)
       .map(lambda ws: "".join(w + s for w, s in ws)),
       title=st.text(max_size=400), chunking=CHUNKINGS)
@CHUNKER_SETTINGS
def test_plain_text_chunks_lose_nothing_but_whitespace(embedder: Embedder, text: str, title: str,
                                                       chunking: str) -> None:
    """Plain text bypasses the header splitter: its chunks must hold every non-space character in
    order, even under a title long enough to be cut to the context limit."""
    chunker = chunker_for(embedder, chunking_of(chunking))
    pieces = chunker.split(ParsedDoc("doc.txt", title, text, "txt", {}))
    assert_well_formed(chunker, embedder, pieces)
    assert is_subsequence(no_space(text), no_space("".join(p.body for p in pieces)))
    assert bool(pieces) == bool(no_space(text)), "a document with text must give at least one chunk"


@given(text=st.one_of(st.text(max_size=500), st.text(min_size=300, max_size=2000)), title=st.text(max_size=200),
       fmt=st.sampled_from(["md", "txt"]), chunking=CHUNKINGS)
@CHUNKER_SETTINGS
def test_splitting_any_text_never_raises(embedder: Embedder, text: str, title: str, fmt: str, chunking: str) -> None:
    """Whatever a source contains, chunking returns well-formed chunks instead of failing a batch."""
    chunker = chunker_for(embedder, chunking_of(chunking))
    pieces = chunker.split(ParsedDoc(f"doc.{fmt}", title, text, fmt, {}))
    assert_well_formed(chunker, embedder, pieces)


@given(text=st.one_of(st.text(max_size=600), LONG_WORD, PARAGRAPH), budget=st.integers(8, 64))
@CHUNKER_SETTINGS
def test_hard_split_loses_no_text(embedder: Embedder, text: str, budget: int) -> None:
    """The last resort for a piece that does not fit cuts on token boundaries: whatever it cuts,
    no character may be lost, no piece may be empty and none may exceed the budget."""
    chunker = chunker_for(embedder, project_chunking())
    pieces = chunker.hard_split(text, budget)
    assert no_space("".join(pieces)) == no_space(text)
    if chunker.count(text) > budget:
        assert all(p and p == p.strip() for p in pieces)
        assert max(chunker.count(p) for p in pieces) <= budget


def test_hard_split_keeps_its_budget(embedder: Embedder) -> None:
    """Minimal example hypothesis found for the documented promise of ``Chunker.hard_split``."""
    chunker = chunker_for(embedder, project_chunking())
    pieces = chunker.hard_split("01000000000000000000061:0A0S0000000000000", 8)
    assert [chunker.count(p) for p in pieces] == [min(chunker.count(p), 8) for p in pieces]


def test_markdown_keeps_words_apart_that_tabs_or_ideographic_spaces_separate(embedder: Embedder) -> None:
    """Found by the Markdown property: words separated only by a tab, U+3000 or U+2003 must stay
    separate words, or neither BM25 nor the embedding model sees them."""
    chunker = chunker_for(embedder, project_chunking())
    text = normalise("# Guide\n\n## Table\n\nalpha\tbeta\u3000gamma\u2003delta and more words here\n")
    pieces = chunker.split(ParsedDoc("t.md", "Guide", text, "md", {}))
    assert pieces[0].body.split()[:4] == ["alpha", "beta", "gamma", "delta"], pieces[0].body


def test_a_section_that_fits_is_not_cut_even_without_separators(embedder: Embedder) -> None:
    """Found by the Markdown property (minimal case: one 41-character word with chunk_tokens=40):
    a section that fits the chunk size must stay one chunk, whole."""
    chunker = chunker_for(embedder, project_chunking())
    url = "https://example.com/" + "/".join(f"segment{i}" for i in range(25))
    assert len(url) > chunker.settings.chunk_tokens > chunker.count(url)  # long in characters, short in tokens
    pieces = chunker.split(ParsedDoc("l.md", "Links", f"# Links\n\n## Download\n\n{url}\n", "md", {}))
    assert [p.body for p in pieces] == [url]


# ----------------------------------------------------------------------------------------------
# sync property: any sequence of add / change / delete keeps the index equal to the source

NAMES = ("alpha.md", "beta.md", "notes/gamma.md", "delta.md")  # distinct stems: distinct titles
HEADINGS = ("Setup", "Usage", "Limits", "Retries", "Pools", "Assets")
SENTENCES = (
    "Pools cap how many tasks run at once.",
    "Assets let one DAG trigger another when data changes.",
    "Retries with a delay absorb transient failures.",
    "The scheduler parses DAG files every few seconds.",
    "Chroma stores one vector per chunk of text.",
    "A content hash decides whether a document changed.",
    "Blue green rebuilds swap an alias in one transaction.",
    "Quarantined documents keep their last good version.",
)
Section = tuple[str, str]  # (heading, paragraph); heading "" = text before the first heading
PARA = st.lists(st.sampled_from(SENTENCES), min_size=1, max_size=2, unique=True).map(" ".join)
# Headings are unique within a document and titles differ between files, so no two chunks of a
# run share a text (the duplicate-text quality check would rightly call that a data incident).
DOC = st.tuples(
    st.one_of(st.none(), PARA),
    st.lists(st.tuples(st.sampled_from(HEADINGS), PARA), min_size=1, max_size=3, unique_by=lambda s: s[0]),
).map(lambda t: ([("", t[0])] if t[0] else []) + t[1])


def render(sections: list[Section]) -> str:
    parts: list[str] = []
    for heading, para in sections:
        if heading:
            parts.append(f"## {heading}")
        parts.append(para)
    return "\n\n".join(parts) + "\n"


def suffix(cid: str) -> str:
    """The content part of a chunk id (hash of settings and text): equal suffix, equal vector."""
    return cid.rsplit("-", 1)[-1]


def copy_db(template: Path, target: Path) -> None:
    """A migrated state store in milliseconds: copy a template instead of running Alembic."""
    src, dst = sqlite3.connect(template), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


class SyncMachine(RuleBasedStateMachine):
    """Random edits of a small Markdown folder, each (mostly) followed by a real sync."""

    embedder: Embedder
    template_db: Path

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="ragops-prop-"))
        self.src = self.root / "src"
        self.src.mkdir()
        data = self.root / "data"
        data.mkdir()
        copy_db(self.template_db, data / "state.db")
        self.settings = _project_settings().replace(data_dir=data, state_db_url=f"sqlite:///{data / 'state.db'}")
        self.source_id = "file://" + os.path.realpath(self.src)
        self.files: dict[str, list[Section]] = {}
        self.indexed: dict[str, str] = {}  # file -> text at the last sync
        self.chunks: dict[str, str] = {}  # chunk id -> doc id after the last sync

    def teardown(self) -> None:
        state.get_engine(self.settings.state_db_url).dispose()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- operations

    @initialize(files=st.dictionaries(st.sampled_from(NAMES), DOC, min_size=1, max_size=len(NAMES)))
    def populate(self, files: dict[str, list[Section]]) -> None:
        """Start from an indexed folder, so the rules exercise changes rather than a first load."""
        for name, sections in files.items():
            self._write(name, sections)
        self.check_sync()

    def _write(self, name: str, sections: list[Section]) -> None:
        path = self.src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(sections), encoding="utf-8")
        self.files[name] = sections

    @rule(name=st.sampled_from(NAMES), sections=DOC, then_sync=st.sampled_from([True, True, True, False]))
    def write(self, name: str, sections: list[Section], then_sync: bool) -> None:
        """Add a file, or replace one's content entirely."""
        self._write(name, sections)
        if then_sync:
            self.check_sync()

    @precondition(lambda self: bool(self.files))
    @rule(data=st.data(), then_sync=st.sampled_from([True, True, True, False]))
    def edit(self, data: st.DataObject, then_sync: bool) -> None:
        """Change part of a file: insert, drop, reorder or reword sections (moves chunks)."""
        name = data.draw(st.sampled_from(sorted(self.files)), label="file")
        sections = list(self.files[name])
        kind = data.draw(st.sampled_from(["insert", "drop", "reverse", "reword"]), label="edit")
        free = [h for h in HEADINGS if h not in {s[0] for s in sections}]
        headed = [i for i, s in enumerate(sections) if s[0]]
        if kind == "insert" and free:
            at = data.draw(st.integers(0, len(sections)), label="at")
            at = max(at, 1) if sections[0][0] == "" else at  # intro text stays first
            sections.insert(at, (data.draw(st.sampled_from(free), label="heading"), data.draw(PARA, label="para")))
        elif kind == "drop" and len(sections) > 1:
            sections.pop(data.draw(st.integers(0, len(sections) - 1), label="at"))
        elif kind == "reverse" and len(headed) > 1:
            sections = [s for s in sections if not s[0]] + [sections[i] for i in reversed(headed)]
        else:
            i = data.draw(st.integers(0, len(sections) - 1), label="at")
            sections[i] = (sections[i][0], data.draw(PARA, label="para"))
        self._write(name, sections)
        if then_sync:
            self.check_sync()

    @precondition(lambda self: bool(self.files))
    @rule(data=st.data(), then_sync=st.sampled_from([True, True, True, False]))
    def delete(self, data: st.DataObject, then_sync: bool) -> None:
        """Remove a file: its document, chunks and vectors must go (mass-delete guard off)."""
        name = data.draw(st.sampled_from(sorted(self.files)), label="file")
        (self.src / name).unlink()
        del self.files[name]
        if then_sync:
            self.check_sync()

    @precondition(lambda self: {n: render(s) for n, s in self.files.items()} != self.indexed)
    @rule()
    def sync_now(self) -> None:
        """Sync several deferred edits at once."""
        self.check_sync()

    # -- the property

    def expected_chunks(self) -> dict[str, tuple[str, str]]:
        """chunk id -> (doc id, text) from chunking the files as they are now."""
        chunker = chunker_for(self.embedder, self.settings.chunking)
        fp = pipeline_fingerprint(self.settings, self.embedder)
        out: dict[str, tuple[str, str]] = {}
        for name in sorted(self.files):
            doc = parse_file(name, (self.src / name).read_bytes(), "md")
            for p in chunker.split(doc):
                out[chunk_id(self.source_id, name, p.position, p.text, fp)] = (name, p.text)
        return out

    def check_sync(self) -> None:
        """After a sync the index equals the source, exactly what had to be embedded was, and a
        second sync with no change embeds, copies and deletes nothing."""
        expected = self.expected_chunks()
        current = {n: render(s) for n, s in self.files.items()}
        added = set(current) - set(self.indexed)
        deleted = set(self.indexed) - set(current)
        changed = {n for n in set(current) & set(self.indexed) if current[n] != self.indexed[n]}

        report = sync(self.settings, str(self.src), INDEX, embedder=self.embedder, allow_mass_delete=True)

        counts = report["counts"]
        assert (counts["added"], counts["changed"], counts["deleted"], counts["unchanged"]) == (
            len(added), len(changed), len(deleted), len(current) - len(added) - len(changed))
        assert (counts["indexed"], counts["quarantined"]) == (len(added | changed), 0)
        # vectors: reuse what exists, copy what moved, embed only new text
        embedded = copied = reused = 0
        for name in added | changed:
            old = {c for c, d in self.chunks.items() if d == name}
            old_suffixes = {suffix(c) for c in old}
            for cid, (doc_id, _) in expected.items():
                if doc_id == name:
                    reused += cid in old
                    copied += cid not in old and suffix(cid) in old_suffixes
                    embedded += suffix(cid) not in old_suffixes
        assert report["chunks"] == {"upserted": embedded + copied, "embedded": embedded, "reused": reused,
                                    "copied": copied, "deleted": len(set(self.chunks) - set(expected)),
                                    "repaired_orphans": 0}
        self.assert_index_equals_source(expected, check_vectors=True)

        again = sync(self.settings, str(self.src), INDEX, embedder=self.embedder, allow_mass_delete=True)
        assert again["chunks"] == {"upserted": 0, "embedded": 0, "reused": 0, "copied": 0, "deleted": 0,
                                   "repaired_orphans": 0}
        assert (again["counts"]["added"], again["counts"]["changed"], again["counts"]["deleted"],
                again["counts"]["unchanged"]) == (0, 0, 0, len(current))
        self.assert_index_equals_source(expected, check_vectors=False)

        self.indexed = current
        self.chunks = {cid: doc_id for cid, (doc_id, _) in expected.items()}

    def assert_index_equals_source(self, expected: dict[str, tuple[str, str]], check_vectors: bool) -> None:
        with state.session_scope(self.settings.state_db_url) as s:
            docs = set(s.execute(select(state.Document.doc_id).where(state.Document.index_name == INDEX)).scalars())
            rows = {r.chunk_id: (r.doc_id, r.text) for r in s.execute(
                select(state.Chunk.chunk_id, state.Chunk.doc_id, state.Chunk.text)
                .where(state.Chunk.index_name == INDEX))}
            collection = state.live_version(s, INDEX).collection
        assert docs == set(self.files), "the state store's documents are not the source's files"
        assert rows == expected, "the state store's chunks are not what chunking the files gives"
        store = VectorStore(self.settings)
        ids = sorted(store.ids(collection))
        assert set(ids) == set(expected), "Chroma has orphaned or missing vectors"
        stored = {cid: (meta.get("doc_id"), text) for cid, (text, meta) in store.get_chunks(collection, ids).items()}
        assert stored == expected, "Chroma's texts are not what chunking the files gives"
        if check_vectors and ids:  # a copied vector must be the one of its text, not of a neighbour
            vectors = store.get_embeddings(collection, ids)
            fresh = self.embedder.encode([expected[c][1] for c in ids])
            assert np.allclose(np.stack([vectors[c] for c in ids]), fresh, atol=1e-4)
        assert self_check(self.settings, INDEX)["ok"]


def test_any_edit_sequence_keeps_the_index_equal_to_the_source(embedder: Embedder,
                                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    """The record manager's promise (DESIGN.md, identity and idempotency) for every sequence of
    adds, changes and deletes, not only the ones in test_sync.py."""
    template = tmp_path_factory.mktemp("ragops-prop-template") / "state.db"
    url = f"sqlite:///{template}"
    state.upgrade(url)
    state.get_engine(url).dispose()
    machine = type("SyncMachineWithModel", (SyncMachine,), {"embedder": embedder, "template_db": template})
    run_state_machine_as_test(machine, settings=SYNC_SETTINGS)

