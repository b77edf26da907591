"""Evaluation runs, per-question results and the LLM response cache.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "eval_runs",
        sa.Column("run_id", sa.String(128), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("index_name", sa.String(64), nullable=False),
        sa.Column("index_version", sa.Integer),
        sa.Column("collection", sa.String(128)),
        sa.Column("prompt_name", sa.String(128), nullable=False),
        sa.Column("prompt_version", sa.Integer, nullable=False),
        sa.Column("prompt_hash", sa.String(64), nullable=False),
        sa.Column("dataset_path", sa.Text, nullable=False),
        sa.Column("dataset_hash", sa.String(64), nullable=False),
        sa.Column("n_questions", sa.Integer, nullable=False),
        sa.Column("generator", sa.String(256), nullable=False),
        sa.Column("output_dir", sa.Text),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_eval_runs_index", "eval_runs", ["index_name", "started_at"])
    op.create_table(
        "eval_results",
        sa.Column("run_id", sa.String(128), sa.ForeignKey("eval_runs.run_id", ondelete="CASCADE"), primary_key=True),
        sa.Column("question_id", sa.String(256), primary_key=True),
        sa.Column("ok", sa.Integer, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
    )
    op.create_table(
        "llm_cache",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("response", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("llm_cache")
    op.drop_table("eval_results")
    op.drop_index("ix_eval_runs_index", "eval_runs")
    op.drop_table("eval_runs")
