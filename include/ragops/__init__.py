"""ragops: the operations library behind the Airflow DAGs and the `ragops` CLI.

Pure Python; nothing here imports Airflow except the ``ragops.airflow`` subpackage.
"""

from __future__ import annotations

__version__ = "0.1.0"
