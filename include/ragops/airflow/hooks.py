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
