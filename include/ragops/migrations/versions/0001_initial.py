"""Initial state store: record manager, index versions and alias, runs, quarantine, audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("index_name", sa.String(64), nullable=False),
        sa.Column("source_id", sa.String(1024), nullable=False),
        sa.Column("doc_id", sa.String(1024), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("settings_hash", sa.String(32), nullable=False),
        sa.Column("title", sa.Text),
        sa.Column("uri", sa.Text),
        sa.Column("origin", sa.Text, nullable=False),
        sa.Column("n_chunks", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(128), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.UniqueConstraint("index_name", "source_id", "doc_id", name="uq_documents_key"),
    )
    op.create_table(
        "chunks",
        sa.Column("index_name", sa.String(64), primary_key=True),
        sa.Column("chunk_id", sa.String(96), primary_key=True),
        sa.Column("source_id", sa.String(1024), nullable=False),
        sa.Column("doc_id", sa.String(1024), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("text_hash", sa.String(64), nullable=False),
        sa.Column("n_tokens", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("meta", sa.JSON, nullable=False),
    )
    op.create_index("ix_chunks_doc", "chunks", ["index_name", "source_id", "doc_id"])
    op.create_table(
        "index_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("index_name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("collection", sa.String(128), nullable=False, unique=True),
        sa.Column("embedding_model", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("index_name", "version", name="uq_index_versions"),
    )
    op.create_table(
        "index_aliases",
        sa.Column("index_name", sa.String(64), primary_key=True),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("index_versions.id"), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_table(
        "sync_runs",
        sa.Column("run_id", sa.String(128), primary_key=True),
        sa.Column("index_name", sa.String(64), nullable=False),
        sa.Column("source_id", sa.String(1024), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("trigger", sa.String(64), nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("finished_at", TZ),
        sa.Column("stats", sa.JSON, nullable=False),
    )
    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(128), nullable=False),
        sa.Column("index_name", sa.String(64), nullable=False),
        sa.Column("source_id", sa.String(1024), nullable=False),
        sa.Column("doc_id", sa.String(1024), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_index("ix_quarantine_run", "quarantine", ["run_id"])
    op.create_index("ix_quarantine_index", "quarantine", ["index_name"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", TZ, nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("index_name", sa.String(64)),
        sa.Column("detail", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    for name in ("audit_log", "quarantine", "sync_runs", "index_aliases", "index_versions", "chunks", "documents"):
        op.drop_table(name)
