"""Assets the ragops DAGs produce and consume.

An index is chosen per run (a Param), so the ingest DAG emits through an AssetAlias and
attaches the concrete ``ragops://index/<name>`` asset at run time; downstream DAGs schedule on
:func:`index_asset` of the index they care about.
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetAlias

INDEX_UPDATES = AssetAlias("ragops_index_updates")


def index_asset(index: str) -> Asset:
    return Asset(name=f"ragops_index_{index}", uri=f"ragops://index/{index}", group="ragops")
