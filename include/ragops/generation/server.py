"""An OpenAI-compatible HTTP server for the local model (FastAPI + uvicorn, already Airflow's).

Endpoints: ``POST /v1/chat/completions`` (non-streaming, ``n=1``), ``GET /v1/models`` (the served
model with its GGUF file's sha256) and ``GET /health``. A request the server cannot honour gets
HTTP 400 (404 for an unknown model) with an OpenAI-style ``{"error": {"message", "type",
"param", "code"}}`` body naming the problem. Generation runs in FastAPI's thread pool; the
model's lock makes it one request at a time (two cores: parallel generates only slow each other).

Why not ``transformers serve``: docs/llm.md (it crashes on this GGUF's config, and cannot report
the file's sha256).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ragops.generation.local import LocalChatModel

log = logging.getLogger(__name__)
MAX_TOKENS_LIMIT = 2048  # SmolLM2's context is 8k; a 135M model does not write more than this usefully


class Message(BaseModel):
    """One chat message (text content only)."""


    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    """The subset of OpenAI's chat completion request this server honours."""


    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields we ignore (user, logprobs=false...)
    model: str
    messages: list[Message] = Field(min_length=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False

    @field_validator("n")
    @classmethod
    def _one(cls, v: int) -> int:
        if v != 1:
            raise ValueError("only n=1 is supported")
        return v

    @field_validator("stream")
    @classmethod
    def _no_stream(cls, v: bool) -> bool:
        if v:
            raise ValueError("streaming is not supported; send stream=false")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v


def _error(status: int, message: str, param: str | None = None, code: str | None = None,
           type_: str = "invalid_request_error") -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status,
                        content={"error": {"message": message, "type": type_, "param": param, "code": code}})


def create_app(model: LocalChatModel) -> Any:
    """The FastAPI app serving ``model`` (loaded by the caller, so /health means ready)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError

    app = FastAPI(title="ragops local LLM", version="1")
    created = int(time.time())

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, exc: RequestValidationError) -> Any:
        errs = exc.errors()
        first = errs[0] if errs else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        msg = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        if first.get("type") == "json_invalid":
            msg, param = f"the request body is not valid JSON ({msg})", None
        elif first.get("type") == "missing":
            msg = f"missing required field '{param}'"
        elif param:
            msg = f"invalid '{param}': {msg}"
        more = f" (and {len(errs) - 1} more problem(s))" if len(errs) > 1 else ""
        return _error(400, msg + more, param=param, code="invalid_value")

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": model.served_name, "sha256": model.file.sha256}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{
            "id": model.served_name, "object": "model", "created": created, "owned_by": "ragops",
            "metadata": {**model.file.info(), "loaded_from": model.loaded_from, "load_seconds": model.load_seconds}}]}

    @app.post("/v1/chat/completions")
    def chat_completions(req: ChatRequest) -> Any:
        if req.model != model.served_name:
            return _error(404, f"model '{req.model}' is not served here; this server serves "
                               f"'{model.served_name}' (GET /v1/models)", param="model", code="model_not_found")
        max_tokens = req.max_completion_tokens or req.max_tokens or 256
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        t0 = time.perf_counter()
        out = model.chat([{"role": m.role, "content": m.content} for m in req.messages], max_tokens=max_tokens,
                         temperature=req.temperature, top_p=req.top_p, seed=req.seed, stop=stops)
        log.info("chat: %d prompt + %d completion tokens in %.2fs (%s)", out.prompt_tokens, out.completion_tokens,
                 time.perf_counter() - t0, out.finish_reason)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model.served_name, "system_fingerprint": f"sha256-{model.file.sha256[:16]}",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": out.text},
                         "finish_reason": out.finish_reason, "logprobs": None}],
            "usage": {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens,
                      "total_tokens": out.prompt_tokens + out.completion_tokens},
        }

    return app


def serve(model: LocalChatModel, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Run in the foreground until SIGINT/SIGTERM (uvicorn handles both and shuts down cleanly).

    Prints ``ragops llm serving <name> at http://host:port/v1`` once the socket accepts requests."""
    import uvicorn

    model.load()
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - only for the printed URL

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                print(f"ragops llm serving {model.served_name} at http://{shown}:{port}/v1", flush=True)

    config = uvicorn.Config(create_app(model), host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal: end with exit code 0
    # instead of a KeyboardInterrupt traceback or death by SIGTERM.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        _Server(config).run()
    except KeyboardInterrupt:
        pass
    print("ragops llm server stopped", file=sys.stderr, flush=True)


def _raise_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt
