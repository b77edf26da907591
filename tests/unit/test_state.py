from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from ragops import state
from ragops.errors import StateStoreError


def test_upgrade_is_idempotent_and_matches_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert state.upgrade(url) == state.head_revision()
    assert state.upgrade(url) == state.head_revision()
    with state.get_engine(url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), state.Base.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"


def test_require_schema_names_the_fix(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(StateStoreError, match="ragops db upgrade"):
        state.require_schema(url)


def test_postgres_migrations(postgres_url: str) -> None:
    assert state.upgrade(postgres_url) == state.head_revision()
    state.require_schema(postgres_url)
    with state.get_engine(postgres_url).connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), state.Base.metadata) == []


def test_redact_url() -> None:
    assert "secret" not in state.redact_url("postgresql+psycopg2://user:secret@host:5432/db")
