"""Drift: reference snapshots of an index (sampled vectors, length distributions) and check results.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drift_snapshots",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("index_name", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("named", sa.Integer, nullable=False, server_default="0"),
        sa.Column("collection", sa.String(128), nullable=False),
        sa.Column("index_version", sa.Integer, nullable=False),
        sa.Column("embedding_model", sa.Text, nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("n_vectors", sa.Integer, nullable=False),
        sa.Column("stats", sa.JSON, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("index_name", "name", name="uq_drift_snapshots_name"),
    )
    op.create_table(
        "drift_checks",
        sa.Column("check_id", sa.String(128), primary_key=True),
        sa.Column("index_name", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("snapshot_id", sa.Integer, nullable=True),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("results", sa.JSON, nullable=False),
        sa.Column("breaches", sa.JSON, nullable=False),
        sa.Column("report_path", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_drift_checks_index", "drift_checks", ["index_name", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_drift_checks_index", table_name="drift_checks")
    op.drop_table("drift_checks")
    op.drop_table("drift_snapshots")
