from __future__ import annotations

import re

import pytest

from ragops.chunking import Chunker, chunk_id
from ragops.config import ChunkingSettings
from ragops.parsing import ParsedDoc


@pytest.fixture(scope="module")
def chunker(embedder) -> Chunker:
    return Chunker(ChunkingSettings(), embedder.tokenizer, embedder.max_tokens, embedder.fingerprint)


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def covered(source: str, pieces) -> bool:
    """Every word of the source appears, in order, in the concatenated chunk bodies."""
    joined = " ".join(p.body for p in pieces)
    it = iter(words(joined))
    return all(any(w == x for x in it) for w in words(source))


def test_markdown_headings_are_context_and_metadata(chunker: Chunker) -> None:
    text = "# Guide\n\nIntro text.\n\n## Install\n\nRun the installer.\n\n### Linux\n\nUse apt.\n"
    pieces = chunker.split(ParsedDoc("g.md", "Guide", text, "md", {}))
    by_body = {p.body: p for p in pieces}
    linux = next(p for p in pieces if "Use apt" in p.body)
    assert linux.headings == "Install > Linux"
    assert linux.text.startswith("Guide > Install > Linux\n\n")
    assert "Intro text." in by_body


def test_no_chunk_exceeds_the_model_and_no_text_is_lost(chunker: Chunker, embedder) -> None:
    long_para = " ".join(f"word{i} antidisestablishmentarianism" for i in range(900))
    no_spaces = "x" * 20000  # a single enormous token run: must be hard-split, never truncated
    text = f"# T\n\n{long_para}\n\n## Blob\n\n{no_spaces}\n"
    pieces = chunker.split(ParsedDoc("t.md", "T", text, "md", {}))
    assert len(pieces) > 10
    for p in pieces:
        n = len(embedder.tokenizer(p.text, add_special_tokens=True)["input_ids"])
        assert n <= embedder.max_seq_length, f"chunk {p.position} has {n} tokens"
        assert p.n_tokens == chunker.count(p.text)
    assert covered(long_para, pieces)
    assert sum(p.body.count("x") for p in pieces) >= 20000
    assert [p.position for p in pieces] == list(range(len(pieces)))


def test_chunk_size_follows_settings(embedder) -> None:
    small = Chunker(ChunkingSettings(chunk_tokens=40, overlap_tokens=5), embedder.tokenizer,
                    embedder.max_tokens, embedder.fingerprint)
    text = " ".join(f"Sentence number {i} talks about retrieval." for i in range(200))
    pieces = small.split(ParsedDoc("s.txt", "S", text, "txt", {}))
    assert all(small.count(p.body) <= 40 for p in pieces)
    assert len(pieces) >= 30
    assert covered(text, pieces)


def test_fingerprint_and_chunk_ids(embedder) -> None:
    a = Chunker(ChunkingSettings(), embedder.tokenizer, embedder.max_tokens, embedder.fingerprint)
    b = Chunker(ChunkingSettings(chunk_tokens=120), embedder.tokenizer, embedder.max_tokens, embedder.fingerprint)
    c = Chunker(ChunkingSettings(), embedder.tokenizer, embedder.max_tokens, "other-model")
    assert len({a.fingerprint, b.fingerprint, c.fingerprint}) == 3
    cid = chunk_id("file:///src", "a.md", 3, "text", a.fingerprint)
    assert cid == chunk_id("file:///src", "a.md", 3, "text", a.fingerprint)
    assert cid != chunk_id("file:///other", "a.md", 3, "text", a.fingerprint)  # sources never collide
    assert cid != chunk_id("file:///src", "a.md", 3, "text", b.fingerprint)
    assert cid.split("-")[1] == "00003"
