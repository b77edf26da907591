"""ChromaHook: the Connection ``chroma_default`` (host, port, schema http/https, password =
token) turned into the library's ChromaSettings. Nothing is read until ``get_conn()``."""

from __future__ import annotations

import dataclasses
from typing import Any

from airflow.sdk import BaseHook

from ragops.config import ChromaSettings


class ChromaHook(BaseHook):
    conn_name_attr = "chroma_conn_id"
    default_conn_name = "chroma_default"
    conn_type = "http"
    hook_name = "Chroma (ragops)"

    def __init__(self, chroma_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.chroma_conn_id = chroma_conn_id

    def get_conn(self) -> ChromaSettings:  # type: ignore[override]
        conn = self.get_connection(self.chroma_conn_id)
        scheme = "https" if (conn.schema or conn.conn_type or "").lower() == "https" else "http"
        url = f"{scheme}://{conn.host or '127.0.0.1'}:{conn.port or 8000}"
        return ChromaSettings(mode="server", conn_id=self.chroma_conn_id, url=url, token=conn.password or None)

    def settings_for(self, base: ChromaSettings) -> ChromaSettings:
        got = self.get_conn()
        return dataclasses.replace(base, mode="server", url=got.url, token=got.token)


class LlmHook(BaseHook):
    """The Connection ``llm_default``: an OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama,
    llama.cpp server). Host = base URL (``https://api.openai.com/v1``,
    ``http://ollama:11434/v1``), password = API key, extra ``{"model": "..."}`` = default model."""

    conn_name_attr = "llm_conn_id"
    default_conn_name = "llm_default"
    conn_type = "http"
    hook_name = "LLM endpoint (ragops)"

    def __init__(self, llm_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.llm_conn_id = llm_conn_id

    def get_conn(self) -> Any:
        from ragops.config import load_settings
        from ragops.llm import LlmSettings

        conn = self.get_connection(self.llm_conn_id)
        extra = conn.extra_dejson or {}
        url = extra.get("base_url") or conn.host or ""
        if url and "://" not in url:
            scheme = "https" if (conn.schema or "https") == "https" else "http"
            url = f"{scheme}://{url}{f':{conn.port}' if conn.port else ''}/v1"
        elif url and conn.port and url.count(":") == 1:
            url = f"{url.rstrip('/')}:{conn.port}"
        if not url:
            raise ValueError(f"Connection {self.llm_conn_id} has no host: set it to the endpoint's base URL, "
                             "e.g. https://api.openai.com/v1")
        ev = load_settings().eval
        return LlmSettings(base_url=url, api_key=conn.password or "", model=extra.get("model"),
                           timeout=float(extra.get("timeout", ev.llm_timeout_seconds)),
                           max_retries=int(extra.get("max_retries", ev.llm_max_retries)))

    @classmethod
    def optional(cls, conn_id: str) -> Any:
        """The endpoint's settings, or None when the Connection does not exist (offline default)."""
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            return cls(conn_id).get_conn()
        except AirflowNotFoundException:
            return None
