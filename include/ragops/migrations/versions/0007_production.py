"""Production: traces of the live application, feedback, online evaluations, load watermarks,
reviews, monitor runs and the semantic answer cache.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "traces",
        sa.Column("trace_id", sa.String(64), primary_key=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("index_name", sa.String(64), nullable=True),
        sa.Column("index_version", sa.Integer, nullable=True),
        sa.Column("prompt_name", sa.String(128), nullable=True),
        sa.Column("prompt_version", sa.Integer, nullable=True),
        sa.Column("model", sa.String(256), nullable=True),
        sa.Column("served_model", sa.String(256), nullable=True),
        sa.Column("retrieval_mode", sa.String(16), nullable=True),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("answer", sa.Text, nullable=True),
        sa.Column("refused", sa.Integer, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("tokens_in", sa.Integer, nullable=False),
        sa.Column("tokens_out", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=True),
        sa.Column("latency_bucket", sa.Integer, nullable=True),
        sa.Column("retrieval_ms", sa.Float, nullable=True),
        sa.Column("generation_ms", sa.Float, nullable=True),
        sa.Column("cost_usd", sa.Float, nullable=True),
        sa.Column("cache_hit", sa.Integer, nullable=False),
        sa.Column("saved_tokens", sa.Integer, nullable=False),
        sa.Column("saved_usd", sa.Float, nullable=False),
        sa.Column("user_hash", sa.String(64), nullable=True),
        sa.Column("session_hash", sa.String(64), nullable=True),
        sa.Column("chunks", sa.JSON, nullable=False),
        sa.Column("feedback", sa.Float, nullable=True),
        sa.Column("feedback_comment", sa.Text, nullable=True),
        sa.Column("source", sa.Text, nullable=True),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_traces_hour", "traces", ["hour"])
    op.create_index("ix_traces_prompt", "traces", ["prompt_name", "prompt_version", "ts"])
    op.create_table(
        "trace_feedback",
        sa.Column("feedback_id", sa.String(64), primary_key=True),
        sa.Column("trace_id", sa.String(64), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("comment", sa.Text, nullable=True),
    )
    op.create_index("ix_trace_feedback_trace", "trace_feedback", ["trace_id"])
    op.create_table(
        "trace_evals",
        sa.Column("trace_id", sa.String(64), primary_key=True),
        sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(128), nullable=True),
        sa.Column("faithfulness", sa.Float, nullable=True),
        sa.Column("hallucinated", sa.Integer, nullable=True),
        sa.Column("citation_validity", sa.Float, nullable=True),
        sa.Column("pii", sa.Integer, nullable=False),
        sa.Column("blocklist", sa.Integer, nullable=False),
        sa.Column("injection", sa.Integer, nullable=False),
        sa.Column("judge", sa.JSON, nullable=True),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_index("ix_trace_evals_at", "trace_evals", ["evaluated_at"])
    op.create_table(
        "trace_sources",
        sa.Column("path", sa.String(1024), primary_key=True),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("lines", sa.Integer, nullable=False),
        sa.Column("skipped", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "trace_reviews",
        sa.Column("trace_id", sa.String(64), primary_key=True),
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("reference_answer", sa.Text, nullable=True),
        sa.Column("relevant", sa.JSON, nullable=False),
        sa.Column("reviewer", sa.String(256), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("golden_path", sa.Text, nullable=True),
    )
    op.create_table(
        "monitor_runs",
        sa.Column("run_id", sa.String(128), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("results", sa.JSON, nullable=False),
        sa.Column("breaches", sa.JSON, nullable=False),
    )
    op.create_table(
        "answer_cache",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("scope", sa.String(256), nullable=False),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("trace_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hits", sa.Integer, nullable=False),
        sa.Column("last_hit_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_answer_cache_key", "answer_cache", ["scope"])


def downgrade() -> None:
    op.drop_index("ix_answer_cache_key", table_name="answer_cache")
    op.drop_table("answer_cache")
    op.drop_table("monitor_runs")
    op.drop_table("trace_reviews")
    op.drop_table("trace_sources")
    op.drop_index("ix_trace_evals_at", table_name="trace_evals")
    op.drop_table("trace_evals")
    op.drop_index("ix_trace_feedback_trace", table_name="trace_feedback")
    op.drop_table("trace_feedback")
    op.drop_index("ix_traces_prompt", table_name="traces")
    op.drop_index("ix_traces_hour", table_name="traces")
    op.drop_table("traces")
