"""The schema comes only from migrations, and the models agree with it."""

from __future__ import annotations

from collections.abc import Callable

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from shared.db.engine import normalize_url
from shared.db.migrate import current_revision, downgrade, upgrade
from shared.db.models import Base


def _schema_diff(url: str) -> list[object]:
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(normalize_url(url))
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_models_agree_with_migrated_schema(make_database: Callable[[], str]) -> None:
    url = make_database()
    upgrade(url)
    assert _schema_diff(url) == []


def test_upgrade_downgrade_upgrade_round_trip(make_database: Callable[[], str]) -> None:
    url = make_database()
    upgrade(url)
    head = current_revision(url)
    assert head is not None
    assert {"jobs", "detections", "job_chunks"} <= _tables(url)

    downgrade(url, "base")
    assert current_revision(url) is None
    assert _tables(url) <= {"alembic_version"}

    upgrade(url)
    assert current_revision(url) == head
    assert _schema_diff(url) == []
