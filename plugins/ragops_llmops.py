"""The LLMOps page in Airflow's navigation: the ragops FastAPI app (mounted at /ragops) and an
external view that shows it inside the Airflow UI. The app itself lives in
include/ragops/airflow/llmops.py; this file only registers it."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from ragops.airflow.llmops import app


class RagopsLlmopsPlugin(AirflowPlugin):
    name = "ragops_llmops"
    fastapi_apps = [{"app": app, "url_prefix": "/ragops", "name": "ragops LLMOps"}]
    external_views = [{"name": "LLMOps", "href": "ragops/", "destination": "nav", "url_route": "llmops",
                       "icon": "ragops/icon.svg"}]
