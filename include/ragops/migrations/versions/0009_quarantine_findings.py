"""Quarantine entries get a severity and a fingerprint.

``severity``: ``failure`` (quarantined, as before), or ``repaired`` / ``warning`` for documents
that were indexed after ragops.repair fixed or flagged their text. ``fingerprint``: the content,
pipeline and quality settings a failure was found with, so an unchanged document is reported as
still quarantined instead of being read again as new.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("quarantine") as batch:
        batch.add_column(sa.Column("severity", sa.String(16), nullable=False, server_default="failure"))
        batch.add_column(sa.Column("fingerprint", sa.String(64), nullable=True))
        batch.create_index("ix_quarantine_doc", ["index_name", "source_id", "doc_id"])


def downgrade() -> None:
    with op.batch_alter_table("quarantine") as batch:
        batch.drop_index("ix_quarantine_doc")
        batch.drop_column("fingerprint")
        batch.drop_column("severity")
