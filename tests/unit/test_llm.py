"""ChatClient, ChatGenerator and Judge against a real OpenAI-compatible server on loopback, with the
response cache in a real (SQLite) state store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from ragops import state
from ragops.errors import LlmError
from ragops.llm import ChatClient, ChatGenerator, Context, Judge, LlmSettings, is_refusal, render_messages
from ragops.prompts import Prompt, parse_prompt
from ragops.registry import load_prompt
from tests.conftest import free_port
from tests.llm_server import REFUSAL, LlmServer

API_KEY = "sk-test-Zq7xSECRETkey-0123456789"
QUESTION = "How often does the scheduler run?"
CONTEXTS = [
    Context(1, "c1", "alpha.md", 0.82, "Alpha guide", "Scheduling",
            "The scheduler runs every hour on the hour. It retries a failed run twice."),
    Context(2, "c2", "beta.md", 0.61, "Beta guide", "", "Retries back off exponentially. The cap is one minute."),
]
CHAT_PROMPT: dict[str, Any] = {
    "name": "rag_chat",
    "version": 1,
    "author": "tests",
    "message": "chat model through the llm_default Connection",
    "variables": ["question", "context"],
    "system": "You answer questions about the docs. Use only the numbered context passages and cite them.",
    "template": "Context passages:\n{context}\n\nQuestion: {question}\nAnswer briefly, citing passages like [1].",
    "model": {"provider": "openai", "name": "test-chat-model", "temperature": 0, "max_tokens": 128},
    "retrieval": {"top_k": 5, "mode": "dense"},
    "refusal": {"threshold": 0.3, "message": "I don't know: the documents do not answer this."},
}


def chat_prompt(**model: Any) -> Prompt:
    raw = {**CHAT_PROMPT, "model": {**CHAT_PROMPT["model"], **model}}
    return parse_prompt(raw, Path("/prompts/rag_chat/v1.yaml"), "test-hash")


def llm(server: LlmServer, **kw: Any) -> LlmSettings:
    return LlmSettings(**{"base_url": server.base_url, "api_key": API_KEY, "model": "default-model",
                          "timeout": 5.0, "max_retries": 0, **kw})


def cache_rows(settings) -> int:
    with state.session_scope(settings.state_db_url) as s:
        return s.query(state.LlmCacheEntry).count()


@pytest.fixture
def prompt(settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Prompt:
    """An ``openai``-provider prompt written as a v1.yaml into a prompts dir and loaded like any other."""
    folder = tmp_path / "prompts" / "rag_chat"
    folder.mkdir(parents=True)
    (folder / "v1.yaml").write_text(yaml.safe_dump(CHAT_PROMPT, sort_keys=False), encoding="utf-8")
    monkeypatch.setenv("RAGOPS_PROMPTS_DIR", str(tmp_path / "prompts"))
    return load_prompt(settings, "rag_chat@1")


def test_openai_prompt_loads_from_prompts_dir(prompt: Prompt) -> None:
    assert prompt.ref == "rag_chat@1"
    assert (prompt.model.provider, prompt.model.name) == ("openai", "test-chat-model")
    assert prompt.model.params == {"temperature": 0, "max_tokens": 128}
    assert prompt.variables == ("question", "context")
    assert prompt.content_hash and prompt.path.endswith("rag_chat/v1.yaml")
    assert chat_prompt().model == prompt.model


def test_chat_generator_answers_through_the_server(settings, prompt: Prompt, llm_server: LlmServer) -> None:
    llm_server.response_model = "test-chat-model-2025-01-01"  # endpoints report a dated snapshot
    client = ChatClient(llm(llm_server), settings)
    gen = ChatGenerator(client).generate(prompt, QUESTION, CONTEXTS)

    assert gen.answer == "The scheduler runs every hour on the hour. [1]"
    assert (gen.refused, gen.citations, gen.cached) == (False, [1], False)
    assert gen.model == "test-chat-model-2025-01-01"
    usage = llm_server.responses[-1]["usage"]
    assert (gen.tokens_in, gen.tokens_out) == (usage["prompt_tokens"], usage["completion_tokens"])
    messages = render_messages(prompt, QUESTION, CONTEXTS)
    assert gen.tokens_in == sum(len(m["content"].split()) for m in messages)
    assert gen.tokens_out == len(gen.answer.split())
    assert gen.latency_ms > 0

    assert llm_server.count == 1 and client.calls == 1
    body = llm_server.requests[0]
    assert body["model"] == "test-chat-model"
    assert body["messages"] == messages
    assert messages[0]["role"] == "system" and "[1] Alpha guide › Scheduling\n" in messages[1]["content"]
    assert (body["temperature"], body["max_tokens"]) == (0, 128)
    assert llm_server.headers[0]["authorization"] == f"Bearer {API_KEY}"


def test_empty_answer_is_an_error_and_a_cut_answer_is_marked(settings, llm_server: LlmServer) -> None:
    """An empty answer is no refusal: a clear LlmError naming the fix. An answer cut at max_tokens is
    kept, marked truncated."""
    empty = parse_prompt({**CHAT_PROMPT, "system": "ANSWER_EMPTY " + CHAT_PROMPT["system"]},
                         Path("/prompts/rag_chat/v1.yaml"), "h-empty")
    gen = ChatGenerator(ChatClient(llm(llm_server), settings))
    with pytest.raises(LlmError, match=r"empty answer.*max_tokens \(128\)"):
        gen.generate(empty, QUESTION, CONTEXTS)
    cut = gen.generate(chat_prompt(max_tokens=3), QUESTION, CONTEXTS)
    assert cut.answer == "The scheduler runs" and cut.detail == {"truncated": True}
    whole = gen.generate(chat_prompt(), QUESTION, CONTEXTS)
    assert "truncated" not in whole.detail


def test_no_passages_is_a_refusal(settings, prompt: Prompt, llm_server: LlmServer) -> None:
    gen = ChatGenerator(ChatClient(llm(llm_server), settings)).generate(prompt, QUESTION, [])
    assert "(no passages)" in llm_server.requests[0]["messages"][-1]["content"]
    assert gen.answer == REFUSAL
    assert (gen.refused, gen.citations) == (True, [])


def test_cache_hits_skip_the_endpoint_and_survive_a_new_client(settings, prompt: Prompt,
                                                               llm_server: LlmServer) -> None:
    client = ChatClient(llm(llm_server), settings)  # the shared cache (cache_scope None: --reuse-cache)
    first = ChatGenerator(client).generate(prompt, QUESTION, CONTEXTS)
    again = ChatGenerator(client).generate(prompt, QUESTION, CONTEXTS)
    assert (first.cached, again.cached) == (False, True)
    assert (again.answer, again.tokens_in, again.tokens_out, again.model) == \
        (first.answer, first.tokens_in, first.tokens_out, first.model)
    assert llm_server.count == 1 and client.calls == 1

    warmer = ChatGenerator(client).generate(chat_prompt(temperature=0.7), QUESTION, CONTEXTS)
    assert not warmer.cached and llm_server.count == 2 and client.calls == 2
    assert llm_server.requests[-1]["temperature"] == 0.7
    other = ChatGenerator(client).generate(prompt, "Who retries failed runs?", CONTEXTS)
    assert not other.cached and llm_server.count == 3 and client.calls == 3
    fewer = ChatGenerator(client).generate(prompt, QUESTION, CONTEXTS[1:])
    assert not fewer.cached and llm_server.count == 4
    assert cache_rows(settings) == 4

    # a new client (a new process) does not know what the endpoint serves: this endpoint lists no
    # models, so its first request per model goes to the endpoint; after that, hits are served
    fresh = ChatClient(llm(llm_server), settings)
    assert not ChatGenerator(fresh).generate(prompt, QUESTION, CONTEXTS).cached
    for p, q, ctx in ((chat_prompt(temperature=0.7), QUESTION, CONTEXTS), (prompt, "Who retries failed runs?", CONTEXTS)):
        assert ChatGenerator(fresh).generate(p, q, ctx).cached
    assert fresh.calls == 1 and llm_server.count == 5

    elsewhere = LlmServer().start()  # another endpoint serving the same model name is another cache
    try:
        gen = ChatGenerator(ChatClient(llm(elsewhere), settings)).generate(prompt, QUESTION, CONTEXTS)
        assert not gen.cached and elsewhere.count == 1
    finally:
        elsewhere.stop()


def test_cache_scope_separates_runs_and_the_served_model_is_part_of_the_key(settings, prompt: Prompt,
                                                                           llm_server: LlmServer) -> None:
    llm_server.response_model = "served-a"  # a single-model server: GET /v1/models lists it
    night1 = ChatClient(llm(llm_server), settings, cache_scope="nightly-1")
    assert not ChatGenerator(night1).generate(prompt, QUESTION, CONTEXTS).cached
    night2 = ChatClient(llm(llm_server), settings, cache_scope="nightly-2")  # the next night calls the model
    assert not ChatGenerator(night2).generate(prompt, QUESTION, CONTEXTS).cached
    assert llm_server.count == 2

    retry = ChatClient(llm(llm_server), settings, cache_scope="nightly-1")  # a retry of night 1, new process
    gen = ChatGenerator(retry).generate(prompt, QUESTION, CONTEXTS)
    assert gen.cached and gen.model == "served-a" and retry.calls == 0 and llm_server.count == 2
    assert llm_server.model_listings >= 1  # it learned the served model from GET /v1/models

    llm_server.response_model = "served-b"  # the endpoint now serves another model under the same name
    retry_b = ChatClient(llm(llm_server), settings, cache_scope="nightly-1")
    gen = ChatGenerator(retry_b).generate(prompt, QUESTION, CONTEXTS)
    assert not gen.cached and gen.model == "served-b" and llm_server.count == 3
    assert retry_b.served == {"test-chat-model": "served-b"}
    # in one process: the first live answer tells the served model; an entry of the old one is never served
    shared = ChatClient(llm(llm_server), settings)
    assert not ChatGenerator(shared).generate(prompt, QUESTION, CONTEXTS).cached
    assert ChatGenerator(shared).generate(prompt, QUESTION, CONTEXTS).cached
    llm_server.response_model = "served-c"
    shared2 = ChatClient(llm(llm_server), settings)
    assert not ChatGenerator(shared2).generate(prompt, QUESTION, CONTEXTS).cached
    assert llm_server.count == 5


def test_retries_with_backoff_then_succeeds(settings, prompt: Prompt, llm_server: LlmServer) -> None:
    llm_server.mode = "flaky"
    llm_server.flaky_failures = 2
    client = ChatClient(llm(llm_server, max_retries=3, timeout=2.0), settings)
    t0 = time.monotonic()
    gen = ChatGenerator(client).generate(prompt, QUESTION, CONTEXTS)
    elapsed = time.monotonic() - t0
    assert gen.answer.endswith("[1]") and not gen.cached
    assert llm_server.count == 3 and client.calls == 1
    assert elapsed >= 1.0, f"two retries with exponential backoff (~0.5 s + ~1 s) took only {elapsed:.2f}s"
    assert ChatGenerator(client).generate(prompt, QUESTION, CONTEXTS).cached
    assert llm_server.count == 3


def test_server_error_after_retries_is_transient_and_not_cached(settings, prompt: Prompt,
                                                                llm_server: LlmServer) -> None:
    llm_server.mode = "error500"
    llm_server.retry_after_ms = 10
    client = ChatClient(llm(llm_server, max_retries=2), settings)
    with pytest.raises(LlmError, match=r"answered HTTP 500") as exc_info:
        ChatGenerator(client).generate(prompt, QUESTION, CONTEXTS)
    assert llm_server.base_url in str(exc_info.value)
    assert exc_info.value.permanent is False
    assert llm_server.count == 3  # the first try and two retries
    assert cache_rows(settings) == 0


def test_unreachable_endpoint_is_transient_and_names_the_url(settings, prompt: Prompt) -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there any more
    client = ChatClient(LlmSettings(base_url=base_url, api_key=API_KEY, timeout=1.0, max_retries=1), settings)
    t0 = time.monotonic()
    with pytest.raises(LlmError) as exc_info:
        ChatGenerator(client).generate(prompt, QUESTION, CONTEXTS)
    assert time.monotonic() - t0 < 5
    msg = str(exc_info.value)
    assert base_url in msg and "unreachable" in msg and "llm_default" in msg
    assert exc_info.value.permanent is False
    assert API_KEY not in msg
    assert cache_rows(settings) == 0


@pytest.mark.parametrize(("mode", "expected"), [
    ("garbage", "without an answer text"),
    ("bad_json", "not a chat completion"),
    ("no_choices", "without an answer text"),
])
def test_unusable_responses_raise_and_are_not_cached(settings, prompt: Prompt, llm_server: LlmServer,
                                                     mode: str, expected: str) -> None:
    llm_server.mode = mode
    client = ChatClient(llm(llm_server), settings)
    with pytest.raises(LlmError, match=expected) as exc_info:
        ChatGenerator(client).generate(prompt, QUESTION, CONTEXTS)
    assert llm_server.base_url in str(exc_info.value)
    assert exc_info.value.permanent is False
    assert llm_server.count == 1 and cache_rows(settings) == 0

    llm_server.mode = "ok"
    gen = ChatGenerator(client).generate(prompt, QUESTION, CONTEXTS)
    assert not gen.cached and gen.answer.endswith("[1]")
    assert llm_server.count == 2 and client.calls == 2 and cache_rows(settings) == 1


def test_rejected_api_key_is_permanent_and_never_leaks(settings, prompt: Prompt, llm_server: LlmServer) -> None:
    llm_server.mode = "auth"  # the server echoes the key it got in its error body, like a careless proxy
    client = ChatClient(llm(llm_server, max_retries=3), settings)
    with pytest.raises(LlmError) as exc_info:
        ChatGenerator(client).generate(prompt, QUESTION, CONTEXTS)
    err = exc_info.value
    assert err.permanent is True
    msg = str(err)
    assert "API key" in msg and "llm_default Connection" in msg and llm_server.base_url in msg
    assert API_KEY not in msg and API_KEY not in repr(err) and API_KEY not in str(err.args)
    assert llm_server.count == 1  # a 401 is not retried
    assert cache_rows(settings) == 0


def test_slow_endpoint_times_out_quickly(settings, prompt: Prompt, llm_server: LlmServer) -> None:
    llm_server.mode = "slow"
    llm_server.slow_seconds = 10
    client = ChatClient(llm(llm_server, timeout=0.5, max_retries=0), settings)
    t0 = time.monotonic()
    with pytest.raises(LlmError, match=r"did not answer within 0\.5s") as exc_info:
        ChatGenerator(client).generate(prompt, QUESTION, CONTEXTS)
    assert time.monotonic() - t0 < 3
    assert llm_server.base_url in str(exc_info.value) and "unreachable" not in str(exc_info.value)
    assert exc_info.value.permanent is False
    assert llm_server.count == 1 and cache_rows(settings) == 0


JUDGE_CONTEXTS = [
    Context(1, "c1", "alpha.md", 0.82, "Alpha guide", "Scheduling",
            "The scheduler runs every hour on the hour. A failed run is retried 2 times before anyone is paged."),
    Context(2, "c2", "beta.md", 0.61, "Beta guide", "Retention",
            "Old index versions are not deleted immediately. The last 2 versions are kept for rollback."),
]
GROUNDED = ("The scheduler runs every hour on the hour. [1] A failed run is retried 2 times before anyone is "
            "paged. [1] Old index versions are not deleted immediately. [2]")
NEGATED = GROUNDED.replace("are not deleted immediately", "are deleted immediately")
NUMBER = GROUNDED.replace("retried 2 times", "retried 5 times")


def judge_requests(server: LlmServer) -> list[dict[str, Any]]:
    return [r for r in server.requests if r["messages"][0]["content"].startswith("You grade answers")]


def test_judge_faithfulness_is_claim_based_and_drops_for_contradicted_answers(settings, llm_server: LlmServer) -> None:
    judge = Judge(ChatClient(llm(llm_server), settings), "judge-model", runs=2)
    good = judge.score(QUESTION, GROUNDED, JUDGE_CONTEXTS)
    good_stats = judge.take_stats()
    negated = judge.score(QUESTION, NEGATED, JUDGE_CONTEXTS)
    neg_stats = judge.take_stats()
    number = judge.score(QUESTION, NUMBER, JUDGE_CONTEXTS)
    both = judge.score(QUESTION, NEGATED.replace("retried 2 times", "retried 5 times"), JUDGE_CONTEXTS)

    assert good["judge_faithfulness"] == 1.0 and good["judge_faithfulness_samples"] == [1.0, 1.0]
    assert negated["judge_faithfulness"] == pytest.approx(2 / 3)  # one claim of three contradicted
    assert number["judge_faithfulness"] == pytest.approx(2 / 3)
    assert both["judge_faithfulness"] == pytest.approx(1 / 3)
    assert good["judge_faithfulness"] > negated["judge_faithfulness"] > both["judge_faithfulness"]
    assert "judge_faithfulness_unparsed" not in good
    # the verdict names the unsupported claim and why
    assert good_stats["unsupported_claims"] == []
    [claim] = neg_stats["unsupported_claims"]
    assert "deleted immediately" in claim["claim"] and "negation" in claim["reason"]

    # the request asks for claims with the JSON schema, and carries the three sections
    req = judge_requests(llm_server)[0]
    assert '"claims"' in req["messages"][0]["content"] and '"supported"' in req["messages"][0]["content"]
    assert all(f"{h}:\n" in req["messages"][1]["content"] for h in ("QUESTION", "CONTEXT", "ANSWER"))
    # judge accounting, apart from the generator: 2 tasks x 2 runs per answer
    assert good_stats["calls"] == 4 and good_stats["cached_calls"] == 0
    assert good_stats["tokens_in"] > 0 and good_stats["tokens_out"] > 0 and good_stats["ms"] > 0
    assert good_stats["served_models"] == ["judge-model"]


def test_judge_relevance_does_not_reward_an_echo(settings, llm_server: LlmServer) -> None:
    judge = Judge(ChatClient(llm(llm_server), settings), "judge-model", runs=1)
    answer = judge.score(QUESTION, "The scheduler runs every hour on the hour. [1]", JUDGE_CONTEXTS)
    echo = judge.score(QUESTION, "How often does the scheduler run?", JUDGE_CONTEXTS)
    assert answer["judge_relevance"] > echo["judge_relevance"] == 0.0


def test_unparseable_verdicts_are_counted_not_dropped(settings, llm_server: LlmServer) -> None:
    llm_server.mode = "judge_garbage"
    llm_server.judge_garbage_every = 2  # every second judge request gets prose instead of JSON
    judge = Judge(ChatClient(llm(llm_server), settings), "judge-model", runs=2)
    scores = judge.score(QUESTION, GROUNDED, JUDGE_CONTEXTS)
    stats = judge.take_stats()
    # requests: faith#0 ok, faith#1 garbage, rel#0 ok, rel#1 garbage
    assert scores["judge_faithfulness_unparsed"] == 1 and scores["judge_relevance_unparsed"] == 1
    assert scores["judge_faithfulness_samples"] == [1.0] and len(scores["judge_relevance_samples"]) == 1
    assert stats["unparsed"] == {"faithfulness": 1, "relevance": 1} and stats["calls"] == 4

    llm_server.judge_garbage_every = 1  # nothing parseable: no score at all, and every failure counted
    none = judge.score(QUESTION, "The scheduler runs every hour. [1]", JUDGE_CONTEXTS)
    assert "judge_faithfulness" not in none and "judge_relevance" not in none
    assert none["judge_faithfulness_unparsed"] == 2 and none["judge_relevance_unparsed"] == 2
    assert judge.take_stats()["unparsed"] == {"faithfulness": 2, "relevance": 2}


@pytest.mark.parametrize(("reply", "expected"), [
    ('{"claims": [{"claim": "a", "supported": true, "reason": "r"}, {"claim": "b", "supported": false}]}', [True, False]),
    ('Here you go: {"claims": [{"claim": "a", "supported": "yes"}]} done', [True]),
    ('{"claims": []}', None),
    ('{"claims": [{"claim": "a", "supported": "maybe"}]}', None),
    ('{"score": 5}', None),
    ("Everything is supported.", None),
    ('{"claims": [{"claim": "a", "supported": tru', None),
])
def test_parse_claims(reply: str, expected: list[bool] | None) -> None:
    from ragops.llm import parse_claims

    got = parse_claims(reply)
    assert (None if got is None else [c["supported"] for c in got]) == expected


def test_judge_is_cached_only_within_its_scope(settings, llm_server: LlmServer) -> None:
    scoped = ChatClient(llm(llm_server), settings, cache_scope="run-1")
    first = Judge(scoped, "judge-model", runs=2).score(QUESTION, GROUNDED, JUDGE_CONTEXTS)
    assert llm_server.count == 4
    again = Judge(ChatClient(llm(llm_server), settings, cache_scope="run-1"), "judge-model", runs=2)
    assert again.score(QUESTION, GROUNDED, JUDGE_CONTEXTS) == first
    # this endpoint lists no models: the first request of the new client goes out, the rest are hits
    assert llm_server.count == 5 and again.take_stats()["cached_calls"] == 3
    other = Judge(ChatClient(llm(llm_server), settings, cache_scope="run-2"), "judge-model", runs=2)
    other.score(QUESTION, GROUNDED, JUDGE_CONTEXTS)
    assert llm_server.count == 9


def test_is_refusal(settings) -> None:
    bundled = load_prompt(settings, "rag_answer@1")  # the shipped prompt's refusal message
    for p in (bundled, chat_prompt()):
        assert is_refusal(p.refusal_message, p.refusal_message)
        assert is_refusal(f"{p.refusal_message} Try another question.", p.refusal_message)
        assert is_refusal(REFUSAL, p.refusal_message)
        assert is_refusal("I do not know the answer.", p.refusal_message)
        assert is_refusal("", p.refusal_message)
        assert not is_refusal("The scheduler runs every hour on the hour. [1]", p.refusal_message)
        assert not is_refusal("Knowing the schedule helps: it runs hourly. [1]", p.refusal_message)
