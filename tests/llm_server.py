"""A real OpenAI-compatible chat server on loopback for the tests (standard library only).

``POST /v1/chat/completions`` answers deterministically:

- a judge request (system message starting with "You grade answers") is graded BY CONTENT: the
  QUESTION, CONTEXT and ANSWER sections of its user message are read, the answer is split into
  sentences (citations ``[n]`` stripped), and a sentence is supported only when the context
  contains it (normalised) or one context sentence contains all its content words and numbers
  with the same negation words (not, no, never, ...). A request that asks for ``"claims"`` gets
  ``{"claims": [{"claim", "supported", "reason"}, ...]}`` (one claim per sentence); any other gets
  ``{"score": N, "reason": "..."}``: for faithfulness 5 when every sentence is supported, 1 when
  none is, linear between; for relevance the share of the question's content words the answer
  covers (an echo of the question, a refusal or an empty answer gets 1); for toxicity (a system
  message that says "toxic") 5 when the answer uses a word of ``INSULTS``, else 1;
- a user message with numbered passages ("[1] heading\\ntext\\n\\n[2] ...") gets the first
  sentence of passage [1]'s text followed by " [1]"; when the system message contains
  ``ANSWER_EMPTY`` nothing at all (an empty answer); ``max_tokens`` cuts an answer to that many
  words with finish_reason "length"; with ``ANSWER_WRONG`` that sentence is contradicted first (its first number changed, else a
  negation inserted), so a prompt can steer the generator into wrong answers;
- a user message with "(no passages)" (or without passages) gets the refusal "I don't know.";
- a system message "Refuse any question that mentions A, B or C." is obeyed BY CONTENT: a question
  that names one of them gets the refusal (the bias test's known-bad prompt);
- a system message "Answer any question that mentions A, B or C coldly." is obeyed the same way:
  the answer to a question that names one of them starts with a cold, negative sentence (the bias
  test's known-bad prompt for sentiment).

Usage: prompt_tokens = whitespace tokens of all messages, completion_tokens = those of the answer.

``mode`` switches the behaviour at runtime: ``ok``, ``garbage`` (HTTP 200, HTML body), ``bad_json``
(HTTP 200, JSON content type, body that is not JSON), ``no_choices`` (valid JSON without choices),
``error500`` (always HTTP 500), ``flaky`` (the first ``flaky_failures`` requests after the mode was
set get HTTP 500, then ok), ``slow`` (sleeps ``slow_seconds`` before answering) and ``auth`` (HTTP
401 with an OpenAI-style error body that echoes the API key it received, as a leak trap),
``down_after`` (``ok_requests`` answers, then HTTP 500 for good), ``garbage_some`` (every
``garbage_every``-th request gets an HTML body) and ``judge_garbage`` (every
``judge_garbage_every``-th judge request gets a verdict that is not JSON; answers stay ok).

``GET /v1/models`` lists ``[response_model]`` when it is set (a single-model server, like a
llama.cpp or vLLM server), else answers 404 (as some endpoints do).

Every request is recorded: ``requests`` (parsed JSON bodies of POST requests), ``headers``,
``responses`` (the JSON bodies sent back with HTTP 200), ``model_listings`` (GET /v1/models count).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

MODES = ("ok", "garbage", "bad_json", "no_choices", "error500", "flaky", "slow", "auth", "down_after",
         "garbage_some", "judge_garbage")
JUDGE_PREFIX = "You grade answers"
REFUSAL = "I don't know."
_PASSAGE_RE = re.compile(r"(?ms)^\[1\] (.*?)(?:\n\n|\Z)")
_SENTENCE_RE = re.compile(r"\S.*?[.!?](?=\s|$)", re.S)


def tokens(text: str) -> int:
    return len(text.split())


def first_sentence(text: str) -> str:
    text = " ".join(text.split())
    m = _SENTENCE_RE.match(text)
    return m.group(0) if m else text


NEGATIONS = frozenset({"not", "no", "never", "none", "nothing", "nobody", "neither", "nor", "without"})
STOPWORDS = frozenset("""a an and are as at be by can do does for from how i if in into is it its my of on or
should so that the their then there these this to was what when where which who why will with you your
""".split())
_WORD_RE = re.compile(r"[a-z0-9]+")
_CITATION_RE = re.compile(r"\s*\[\d+\]")
_NUMBER_RE = re.compile(r"\d+")
_AUX_RE = re.compile(r"\b(is|are|was|were|can|will|does|do|did|has|have|had|should|must|may|would|could)\b", re.I)
_SECTION_RE = re.compile(r"(?ms)^(QUESTION|CONTEXT|ANSWER):\n(.*?)(?=^(?:QUESTION|CONTEXT|ANSWER):\n|\Z)")


def words(text: str) -> list[str]:
    """Lower-case words and numbers; "n't" and "cannot" become "not" (a negation is a word)."""
    text = text.lower().replace("cannot", "can not").replace("n't", " not").replace("\u2019", "'")
    return _WORD_RE.findall(text)


def normalised(text: str) -> str:
    return " ".join(words(text))


def sentences(text: str) -> list[str]:
    text = " ".join(_CITATION_RE.sub("", text).split())
    return [m.group(0).strip() for m in _SENTENCE_RE.finditer(text)] or ([text] if text.strip() else [])


def support(claim: str, context: str) -> tuple[bool, str]:
    """(supported?, reason) of one answer sentence against the context, by content."""
    if not words(claim):
        return False, "empty claim"
    if normalised(claim) in normalised(context):
        return True, "stated in the context"
    ws = words(claim)
    content = {w for w in ws if w not in STOPWORDS and w not in NEGATIONS}
    nums = {w for w in ws if _NUMBER_RE.fullmatch(w)}
    neg = {w for w in ws if w in NEGATIONS}
    best = "no context sentence has its words"
    for sent in sentences(context.replace("\n", " . ")) or [context]:
        cw = set(words(sent))
        if not content <= cw:
            continue
        if not nums <= cw:
            best = f"number(s) {', '.join(sorted(nums - cw))} not in the context"
            continue
        if neg != {w for w in cw if w in NEGATIONS}:
            best = "contradicts the context (negation differs)"
            continue
        return True, "every word, number and negation is in one context sentence"
    missing = sorted(content - set(words(context)))
    if missing:
        best = f"not in the context: {', '.join(missing[:5])}"
    return False, best


INSULTS = {"idiot", "idiots", "moron", "morons", "stupid", "imbecile", "fool", "useless", "pathetic", "brainless",
           "loser", "losers", "worthless", "clueless", "dumb"}


def grade(user: str, claims_format: bool, task: str) -> str:
    """The judge's verdict on the QUESTION / CONTEXT / ANSWER of a judge request."""
    parts = {name: body.strip() for name, body in _SECTION_RE.findall(user)}
    question, context, answer = parts.get("QUESTION", ""), parts.get("CONTEXT", ""), parts.get("ANSWER", "")
    sents = sentences(answer)
    verdicts = [(c, *support(c, context)) for c in sents]
    if claims_format:
        return json.dumps({"claims": [{"claim": c, "supported": ok, "reason": why} for c, ok, why in verdicts]})
    if task == "toxicity":  # by content: an insult word in the answer (the judge is not the checker under test)
        found = sorted(set(words(answer)) & INSULTS)
        return json.dumps({"score": 5 if found else 1, "reason": f"insults: {', '.join(found)}" if found
                           else "no insult"})
    if task == "relevance":
        q = {w for w in words(question) if w not in STOPWORDS}
        a = {w for w in words(answer) if w not in STOPWORDS}
        if not a or a <= q or answer.strip() == REFUSAL:
            return json.dumps({"score": 1, "reason": "no answer beyond the question's own words"})
        share = len(q & a) / max(len(q), 1)
        score = 1 + round(4 * min(1.0, share * 1.5))
        return json.dumps({"score": score, "reason": f"covers {share:.0%} of the question's terms"})
    share = sum(ok for _, ok, _ in verdicts) / len(verdicts) if verdicts else 0.0
    return json.dumps({"score": 1 + round(4 * share),
                       "reason": f"{sum(ok for _, ok, _ in verdicts)} of {len(verdicts)} sentences supported"})


def contradict(sentence: str) -> str:
    """The sentence made wrong: its first number changed, else a negation inserted."""
    m = _NUMBER_RE.search(sentence)
    if m:
        return f"{sentence[:m.start()]}{int(m.group(0)) + 3}{sentence[m.end():]}"
    m = _AUX_RE.search(sentence)
    if m:
        return f"{sentence[:m.end()]} not{sentence[m.end():]}"
    return f"It is not true that {sentence[:1].lower()}{sentence[1:]}"


_REFUSE_RE = re.compile(r"[Rr]efuse (?:any|every) question that mentions ([^.\n]+)")
_COLD_RE = re.compile(r"[Aa]nswer (?:any|every) question that mentions (.+?) coldly")
COLD_OPENING = "Unfortunately, this is a poor question and the answer is disappointing."


def refuses_by_instruction(system: str, user: str, pattern: re.Pattern[str] = _REFUSE_RE) -> bool:
    """A system message "Refuse any question that mentions A, B or C." is obeyed: the question
    (the text after "Question:" in the user message, else all of it) is refused when it names one."""
    m = pattern.search(system)
    if not m:
        return False
    terms = [t.strip(" '\"") for t in re.split(r",|\bor\b|\band\b", m.group(1)) if t.strip(" '\"")]
    q = user.rsplit("Question:", 1)[-1]
    return any(re.search(rf"(?<!\w){re.escape(t)}(?!\w)", q, re.IGNORECASE) for t in terms)


def answer_for(messages: list[dict[str, Any]]) -> str:
    """The deterministic answer to a (non-judge) chat request."""
    user = "\n\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "user")
    system = "\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "system")
    if refuses_by_instruction(system, user):
        return REFUSAL
    m = _PASSAGE_RE.search(user)
    if m:
        block = m.group(1).split("\n", 1)
        body = block[1] if len(block) > 1 and block[1].strip() else block[0]  # line 1 is the heading
        sentence = first_sentence(body)
        if "ANSWER_WRONG" in system:
            sentence = contradict(sentence)
        if refuses_by_instruction(system, user, _COLD_RE):
            return f"{COLD_OPENING} {sentence} [1]"
        return f"{sentence} [1]"
    return REFUSAL


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def do_GET(self) -> None:  # noqa: N802 - http.server's hook name
        owner = self.server.owner
        if self.path.rstrip("/") == "/v1/models" and owner.response_model:
            with owner._lock:
                owner.model_listings += 1
            self._json(200, {"object": "list", "data": [{"id": owner.response_model, "object": "model",
                                                         "created": 0, "owned_by": "tests"}]})
            return
        self._json(404, {"error": {"message": f"no route GET {self.path}", "type": "invalid_request_error"}})

    def do_POST(self) -> None:  # noqa: N802 - http.server's hook name
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._json(404, {"error": {"message": f"no route POST {self.path}", "type": "invalid_request_error"}})
            return
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self.server.owner._handle(self, body)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: LlmServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeout test) closes the socket before the answer is written


class LlmServer:
    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self.responses: list[dict[str, Any]] = []
        self.flaky_failures = 2
        self.ok_requests = 3  # down_after: this many answers, then HTTP 500 for good
        self.garbage_every = 3  # garbage_some: every n-th request gets an HTML body
        self.slow_seconds = 5.0
        self.judge_garbage_every = 1  # judge_garbage: every n-th judge request gets a verdict that is not JSON
        self.model_listings = 0  # GET /v1/models requests answered
        self.response_model: str | None = None  # None = echo the requested model
        self.retry_after_ms: int | None = None  # sent with HTTP 500 when set (shortens the client's backoff)
        self._mode = "ok"
        self._mode_requests = 0
        self._judge_requests = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _HttpServer(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.port = int(self._httpd.server_address[1])
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"llm-server-{self.port}", daemon=True)

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"unknown mode {value!r}; one of {', '.join(MODES)}")
        with self._lock:
            self._mode, self._mode_requests = value, 0

    @property
    def count(self) -> int:
        return len(self.requests)

    def start(self) -> LlmServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in "slow" mode
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # ------------------------------------------------------------------ request handling

    def _handle(self, h: _Handler, body: Any) -> None:
        with self._lock:
            self.requests.append(body)
            self.headers.append({k.lower(): v for k, v in h.headers.items()})
            self._mode_requests += 1
            mode, nth = self._mode, self._mode_requests
        if mode == "garbage" or (mode == "garbage_some" and nth % self.garbage_every == 0):
            h._send(200, b"<html>oops</html>", content_type="text/html")
        elif mode == "bad_json":
            h._send(200, b"<html>oops</html>")
        elif mode == "no_choices":
            h._json(200, {"id": "chatcmpl-x", "object": "chat.completion", "created": int(time.time()),
                          "model": "broken"})
        elif (mode == "error500" or (mode == "flaky" and nth <= self.flaky_failures)
              or (mode == "down_after" and nth > self.ok_requests)):
            extra = {"retry-after-ms": str(self.retry_after_ms)} if self.retry_after_ms is not None else None
            h._json(500, {"error": {"message": "The server had an error while processing your request.",
                                    "type": "server_error", "param": None, "code": None}}, headers=extra)
        elif mode == "auth":
            key = h.headers.get("Authorization", "").removeprefix("Bearer ")
            h._json(401, {"error": {"message": f"Incorrect API key provided: {key}.",
                                    "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}})
        elif not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            h._json(400, {"error": {"message": "request body must be a JSON object with messages",
                                    "type": "invalid_request_error", "param": "messages", "code": None}})
        else:
            if mode == "slow":
                self._stopping.wait(self.slow_seconds)
            h._json(200, self._completion(body))

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body["messages"]
        system = next((str(m.get("content") or "") for m in messages if m.get("role") == "system"), "")
        if system.startswith(JUDGE_PREFIX):
            with self._lock:
                self._judge_requests += 1
                garbage = self._mode == "judge_garbage" and self._judge_requests % self.judge_garbage_every == 0
            user = "\n\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "user")
            asks_claims = '"claims"' in system or '"claims"' in user
            task = ("toxicity" if "toxic" in system.lower() else
                    "relevance" if "relevan" in (system + user.split("QUESTION:", 1)[0]).lower() else "faithfulness")
            content = ("Looks fine to me, mostly supported I would say." if garbage
                       else grade(user, asks_claims, task))
        else:
            content = "" if "ANSWER_EMPTY" in system else answer_for(messages)
        finish = "stop"
        limit = body.get("max_tokens")
        if isinstance(limit, int) and limit > 0 and tokens(content) > limit:  # cut like a real server
            content, finish = " ".join(content.split()[:limit]), "length"
        prompt_tokens = sum(tokens(str(m.get("content") or "")) for m in messages)
        completion_tokens = tokens(content)
        out = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
               "model": self.response_model or body.get("model") or "test-model",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                            "finish_reason": finish, "logprobs": None}],
               "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                         "total_tokens": prompt_tokens + completion_tokens}}
        with self._lock:
            self.responses.append(out)
        return out


@pytest.fixture
def llm_server() -> Iterator[LlmServer]:
    """An OpenAI-compatible chat server on 127.0.0.1 (``.base_url``, ``.mode``, ``.requests``)."""
    server = LlmServer().start()
    yield server
    server.stop()
