"""Index versions: the retrieval mode and fusion weights tuned on the index's golden set.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-14
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("index_versions") as batch:
        batch.add_column(sa.Column("retrieval", sa.JSON))  # NULL: not tuned, the settings' retrieval serves


def downgrade() -> None:
    with op.batch_alter_table("index_versions") as batch:
        batch.drop_column("retrieval")
