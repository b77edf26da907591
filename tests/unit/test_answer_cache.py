"""The semantic answer cache on known-bad input, against a real SQLite state store and the bundled
MiniLM: another index or prompt version is never served, a question that reads alike but asks
something else is never served, expired entries and failed answers are never served, eviction
keeps the most recently used; then ``ragops.app.answer`` end to end (hit, trace, new version)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select, update

from ragops import state
from ragops.config import load_settings
from ragops.production import cache
from tests.conftest import write

ROOT = Path(__file__).resolve().parents[2]
SCOPE = cache.scope("docs", 1, "rag_answer", 1)
PAYLOAD = {"answer": "Set production.cache.enabled to true [1].", "refused": False, "citations": [1], "chunks": [],
           "served_model": "extractive", "tokens_in": 120, "tokens_out": 12, "cost_usd": None}


@pytest.fixture(scope="module")
def store_settings(tmp_path_factory: pytest.TempPathFactory):
    """One migrated SQLite state store for the cache tests (a migration per test would cost most of
    the file's time); each test starts from an empty cache (the ``settings`` fixture below)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAGOPS_DATA_DIR", str(tmp_path_factory.mktemp("cache") / "data"))
        s = load_settings()
    state.upgrade(s.state_db_url)
    yield s
    state.get_engine(s.state_db_url).dispose()


@pytest.fixture
def settings(store_settings):
    """The shared store with an empty cache (overrides the conftest fixture of the same name)."""
    cache.clear(store_settings)
    return store_settings


@pytest.fixture(scope="module")
def encode(embedder):
    """One question's vector, embedded as ``ragops.app`` does (normalised MiniLM)."""
    from ragops.llm import SentenceEncoder

    enc = SentenceEncoder(embedder)
    return lambda text: enc([text])[0]


def with_cache(settings, **kw):
    c = dataclasses.replace(settings.production.cache, enabled=True, **kw)
    return settings.replace(production=dataclasses.replace(settings.production, cache=c))


def entries(settings, key: str | None = None) -> list[str]:
    with state.session_scope(settings.state_db_url) as s:
        q = select(state.AnswerCacheEntry.question).order_by(state.AnswerCacheEntry.id)
        if key is not None:
            q = q.where(state.AnswerCacheEntry.scope == key)
        return list(s.execute(q).scalars())


def put(settings, encode, question: str, key: str = SCOPE, **payload) -> bool:
    return cache.store(settings, key, question, encode(question), "t" * 32, {**PAYLOAD, **payload})


# ----------------------------------------------------------------------------------------------
# scope: index version and prompt version


def test_an_entry_is_never_served_for_another_index_or_prompt_version(settings, encode) -> None:
    s = with_cache(settings)
    q = "How do I enable the semantic cache?"
    assert put(s, encode, q)
    assert cache.lookup(s, SCOPE, encode(q), question=q)["payload"]["answer"] == PAYLOAD["answer"]
    for other in (cache.scope("docs", 2, "rag_answer", 1), cache.scope("docs", 1, "rag_answer", 2),
                  cache.scope("docs", 11, "rag_answer", 1), cache.scope("docs", 1, "rag_answer", 11),
                  cache.scope("docs", 2, "rag_answer", 2), cache.scope("other", 1, "rag_answer", 1),
                  cache.scope("docs", 1, "rag_local", 1)):
        assert cache.lookup(s, other, encode(q), question=q) is None, other
        assert cache.lookup(s, other, encode(q)) is None, other
    assert cache.scope("docs", 1, "rag_answer", 2) == "docs@1|rag_answer@2"


# ----------------------------------------------------------------------------------------------
# near-misses at the default threshold


SERVED = [
    ("How do I enable the semantic cache?", "How do I enable the semantic cache?"),
    ("How do I enable the semantic cache?", "how do i enable the semantic cache"),
    ("What is the default chunk size?", "What's the default chunk size?"),
    ("Why was my document quarantined?", "Why was my document quarantined ?"),
    ("What does rag_answer@2 change compared with rag_answer@1?",
     "what does rag_answer@2 change compared with rag_answer@1"),
]
NOT_SERVED = [  # (stored, asked, why): the first group scores above the default threshold on MiniLM
    ("Why was my document quarantined?", "Why was my document not quarantined?", "negation"),
    ("Which file formats are supported?", "Which file formats are not supported?", "negation"),
    ("How do I roll back the docs index to version 3?", "How do I roll back the docs index to version 4?", "number"),
    ("What happens if more than 20% of documents are quarantined?",
     "What happens if more than 50% of documents are quarantined?", "number"),
    ("Why did the sync take 30 seconds?", "Why did the sync take 30 minutes?", "unit"),
    ("What does rag_answer@2 change compared with rag_answer@1?",
     "What does rag_answer@3 change compared with rag_answer@1?", "literal"),
    ("What does ragops do before the commit?", "What does ragops do after the commit?", "opposite"),
    ("How do I increase the chunk overlap?", "How do I decrease the chunk overlap?", "opposite"),
    ("How do I enable the semantic cache?", "How do I disable the semantic cache?", "opposite"),
    ("Does ragops support PostgreSQL for the state store?", "Does ragops support MySQL for the state store?", "name"),
    ("What is the default value of chunking.chunk_tokens?",
     "What is the default value of chunking.overlap_tokens?", "name"),
    ("How do I connect ragops to Chroma?", "How do I connect ragops to Qdrant?", "name"),
]


@pytest.mark.parametrize(("stored", "asked"), SERVED)
def test_the_same_question_reworded_trivially_is_served(settings, encode, stored: str, asked: str) -> None:
    s = with_cache(settings)
    put(s, encode, stored)
    hit = cache.lookup(s, SCOPE, encode(asked), question=asked)
    assert hit is not None and hit["question"] == stored and hit["similarity"] >= 0.95


@pytest.mark.parametrize(("stored", "asked", "why"), NOT_SERVED)
def test_a_question_that_reads_alike_but_asks_something_else_is_not_served(settings, encode, stored: str, asked: str,
                                                                            why: str) -> None:
    s = with_cache(settings)
    put(s, encode, stored)
    assert cache.lookup(s, SCOPE, encode(asked), question=asked) is None
    assert cache.lookup(s, SCOPE, encode(stored), question=stored) is not None  # the entry itself is there


def test_the_guard_refuses_what_similarity_alone_would_serve(settings, encode) -> None:
    """The reason the guard exists: on these the bundled model scores 0.95 or more."""
    for a, b, _ in NOT_SERVED[:8]:
        assert float(encode(a) @ encode(b)) >= 0.95, (a, b)
        assert cache.mismatch(a, b) is not None, (a, b)
        put(settings, encode, a)
        assert cache.lookup(with_cache(settings, threshold=0.95), SCOPE, encode(b), question=b) is None


def test_at_a_low_threshold_the_guard_still_refuses_names_and_literals_but_serves_paraphrases(settings,
                                                                                             encode) -> None:
    s = with_cache(settings, threshold=0.5)
    put(s, encode, "Does ragops support PostgreSQL for the state store?")
    put(s, encode, "What is the default value of chunking.chunk_tokens?")
    assert cache.lookup(s, SCOPE, encode(q := "Does ragops support MySQL for the state store?"), question=q) is None
    assert cache.lookup(s, SCOPE, encode(q := "What is the default value of chunking.overlap_tokens?"),
                        question=q) is None
    hit = cache.lookup(s, SCOPE, encode(q := "Can ragops use PostgreSQL as its state store?"), question=q)
    assert hit is not None and "PostgreSQL" in hit["question"]


@pytest.mark.parametrize(("a", "b"), [
    ("Why did the sync take 30 seconds?", "Why did the sync take 30s?"),
    ("Can I ingest a 20 MB file?", "Can I ingest a 20MB file?"),
    ("Is 3 seconds enough?", "Is three seconds enough?"),
    ("How does ragops compare with LangChain's indexing API?", "How is ragops different from the LangChain indexing API?"),
    ("What does `ragops ingest --dry-run` print?", "what does ragops ingest --dry-run print"),
    ("What is the default value of chunk_tokens?", "What's the default value of the chunk tokens setting?"),
])
def test_mismatch_lets_the_same_meaning_through(a: str, b: str) -> None:
    assert cache.mismatch(a, b) is None
    assert cache.mismatch(b, a) is None


@pytest.mark.parametrize(("a", "b", "reason"), [
    ("Can I lock the index?", "Can I unlock the index?", "opposite"),
    ("Is the record valid?", "Is the record invalid?", "opposite"),
    ("What does ragops ingest --dry-run do?", "What does ragops ingest --full-resync do?", "literal"),
    ("How do I keep 3 versions?", "How do I keep three versions?", None),
    ("How do I keep 3 versions?", "How do I keep 30 versions?", "numbers"),
    ("Why doesn't search find it?", "Why does search find it?", "negated"),
])
def test_mismatch_names_the_difference(a: str, b: str, reason: str | None) -> None:
    why = cache.mismatch(a, b)
    assert (why is None) if reason is None else (why is not None and reason in why), why


# ----------------------------------------------------------------------------------------------
# TTL, eviction, failed answers


def test_an_expired_entry_is_not_served_and_is_dropped_on_the_next_store(settings, encode) -> None:
    s = with_cache(settings, ttl_hours=1.0)
    q = "How do I enable the semantic cache?"
    put(s, encode, q)
    put(s, encode, fresh := "What is the default chunk size?")
    with state.session_scope(s.state_db_url) as sess:
        sess.execute(update(state.AnswerCacheEntry).where(state.AnswerCacheEntry.question == q)
                     .values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1, minutes=1),
                             last_hit_at=dt.datetime.now(dt.UTC)))  # used recently, but made too long ago
    assert cache.lookup(s, SCOPE, encode(q), question=q) is None
    assert cache.lookup(s, SCOPE, encode(fresh), question=fresh) is not None
    assert cache.lookup(with_cache(settings, ttl_hours=2.0), SCOPE, encode(q), question=q) is not None
    put(s, encode, "Where does ragops store its data?")
    assert q not in entries(s)


def test_eviction_keeps_at_most_max_entries_per_scope_and_drops_the_least_recently_used(settings, encode) -> None:
    s = with_cache(settings, max_entries=3)
    other = cache.scope("docs", 2, "rag_answer", 1)
    qs = ["How do I enable the semantic cache?", "What is the default chunk size?",
          "Where does ragops store its data?", "Which embedding model does ragops use?",
          "How do I roll back a prompt promotion?"]
    for q in qs[:3]:
        put(s, encode, q)
    put(s, encode, qs[0], key=other)
    assert cache.lookup(s, SCOPE, encode(qs[0]), question=qs[0]) is not None  # qs[0] used: qs[1] is now the LRU
    put(s, encode, qs[3])
    assert entries(s, SCOPE) == [qs[0], qs[2], qs[3]]
    for q in (qs[2], qs[0]):  # qs[3] (stored after qs[0]'s first use) is now the LRU
        assert cache.lookup(s, SCOPE, encode(q), question=q) is not None
    put(s, encode, qs[4])
    assert entries(s, SCOPE) == [qs[0], qs[2], qs[4]]
    put(s, encode, qs[1])  # qs[2] was used before qs[0]: it is the LRU now
    assert entries(s, SCOPE) == [qs[0], qs[4], qs[1]]
    assert entries(s, other) == [qs[0]]  # another scope's entries are not counted nor evicted


@pytest.mark.parametrize("answer", ["", "   \n", None])
def test_an_empty_answer_is_never_stored(settings, encode, answer) -> None:
    s = with_cache(settings)
    q = "How do I enable the semantic cache?"
    assert put(s, encode, q, answer=answer) is False
    payload = {k: v for k, v in PAYLOAD.items() if k != "answer"}
    assert cache.store(s, SCOPE, q, encode(q), None, payload) is False
    assert entries(s) == []
    assert cache.lookup(s, SCOPE, encode(q), question=q) is None


def test_vectors_of_another_size_are_never_compared(settings, encode) -> None:
    s = with_cache(settings)
    q = "How do I enable the semantic cache?"
    cache.store(s, SCOPE, q, np.ones(8, dtype=np.float32), None, PAYLOAD)
    assert cache.lookup(s, SCOPE, encode(q), question=q) is None


# ----------------------------------------------------------------------------------------------
# ragops.app.answer end to end


DOCS = {
    "cache.md": "# Semantic answer cache\n\n## Turning it on\n\nThe semantic answer cache is enabled with the "
                "setting production.cache.enabled. A question whose embedding is at least as similar as "
                "production.cache.threshold to an earlier question, asked of the same index version with the same "
                "prompt version, gets the earlier answer without a new generation.\n",
    "ttl.md": "# Cache lifetime\n\n## Expiry\n\nEntries of the answer cache expire after production.cache.ttl_hours "
              "hours. Beyond production.cache.max_entries entries per index version and prompt version, the least "
              "recently used entries are evicted.\n",
    "chroma.md": "# Chroma server mode\n\n## Starting a server\n\nStart a Chroma server with chroma run and point "
                 "ragops at it with RAGOPS_CHROMA_URL. Embedded mode serialises writers with a file lock.\n",
}


def trace_line(settings, trace_id: str) -> dict:
    for path in Path(settings.traces_uri).rglob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row.get("trace_id") == trace_id:
                return row
    raise AssertionError(f"no trace line {trace_id} under {settings.traces_uri}")


def test_app_answer_serves_a_repeated_question_from_the_cache_until_the_prompt_version_changes(
        data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedder) -> None:
    from ragops import app, registry
    from ragops.indexing import sync

    prompts = tmp_path / "prompts" / "rag_answer"
    v1 = (ROOT / "include" / "prompts" / "rag_answer" / "v1.yaml").read_text(encoding="utf-8")
    write(prompts, "v1.yaml", v1)
    monkeypatch.setenv("RAGOPS_PROMPTS_DIR", str(prompts.parent))
    s = load_settings()
    state.upgrade(s.state_db_url)
    s = with_cache(s)
    corpus = tmp_path / "corpus"
    for name, text in DOCS.items():
        write(corpus, name, text)
    sync(s, str(corpus), "docs", embedder=embedder)
    app.reset()
    try:
        q = "How do I turn on the semantic answer cache?"
        first = app.answer(q, "docs", settings=s, prompt_ttl_seconds=0)
        assert not first.cache_hit and first.answer.strip() and first.tokens_in > 0
        second = app.answer(q + "  ", "docs", settings=s, prompt_ttl_seconds=0)
        assert second.cache_hit and second.answer == first.answer and second.prompt == "rag_answer@1"
        assert (second.tokens_in, second.tokens_out, second.cost_usd) == (0, 0, 0.0)
        assert second.detail["cache"]["saved_tokens"] == first.tokens_in + first.tokens_out
        row = trace_line(s, second.trace_id)["attributes"]
        assert row["ragops.cache.hit"] is True and row["ragops.cache.saved_tokens"] > 0
        assert row["ragops.prompt.version"] == 1 and row["ragops.index.version"] == 1
        assert trace_line(s, first.trace_id)["attributes"]["ragops.cache.hit"] is False

        near = app.answer("How do I turn off the semantic answer cache?", "docs", settings=s, prompt_ttl_seconds=0)
        assert not near.cache_hit
        # similar enough for the embedding (0.97 on MiniLM), but negated: the app passes the question to the guard
        assert not app.answer("Why is the semantic answer cache enabled?", "docs", settings=s,
                              prompt_ttl_seconds=0).cache_hit
        assert not app.answer("Why is the semantic answer cache not enabled?", "docs", settings=s,
                              prompt_ttl_seconds=0).cache_hit

        # a new production prompt version: nothing made by v1 is served
        write(prompts, "v2.yaml", re.sub(r"(?m)^version: 1$", "version: 2", v1).replace(
            "First version.", "Second version, same text."))
        registry.sync(s)
        registry.promote(s, "rag_answer", 2, actor="test")
        third = app.answer(q, "docs", settings=s, prompt_ttl_seconds=0)
        assert not third.cache_hit and third.prompt == "rag_answer@2"
        assert trace_line(s, third.trace_id)["attributes"]["ragops.cache.hit"] is False
        assert app.answer(q, "docs", settings=s, prompt_ttl_seconds=0).cache_hit  # v2's own entry now
        assert app.answer(q, "docs", prompt="rag_answer@1", settings=s, prompt_ttl_seconds=0).cache_hit
        assert sorted(e.split("|")[1] for e in scopes(s)) == ["rag_answer@1", "rag_answer@2"]
    finally:
        app.reset()


def scopes(settings) -> list[str]:
    with state.session_scope(settings.state_db_url) as s:
        return list(s.execute(select(state.AnswerCacheEntry.scope).distinct()).scalars())
