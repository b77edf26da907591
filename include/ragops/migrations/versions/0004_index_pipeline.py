"""Each index version records the pipeline (embedding model, chunking) it was built with, who
built it and its build figures.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("index_versions") as batch:
        batch.add_column(sa.Column("pipeline", sa.JSON))  # NULL: built before 0004, follows the settings
        batch.add_column(sa.Column("built_by", sa.String(128)))
        batch.add_column(sa.Column("stats", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("index_versions") as batch:
        batch.drop_column("stats")
        batch.drop_column("built_by")
        batch.drop_column("pipeline")
