"""The schema comes only from migrations, and the models agree with it."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from shared.db.engine import normalize_url
from shared.db.migrate import alembic_config, current_revision, downgrade, upgrade
from shared.db.models import Base
from tests.services import _libpq_url

# Catalog queries: what autogenerate does not compare (partial index predicates,
# INCLUDE columns, check constraint bodies) and what it cannot see (views).
INDEXES = """
    SELECT tablename, indexname, indexdef FROM pg_indexes
     WHERE schemaname = current_schema() AND tablename <> 'alembic_version'
"""
CONSTRAINTS = """
    SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
     WHERE connamespace = current_schema()::regnamespace
       AND conrelid::regclass::text <> 'alembic_version'
"""
VIEWS = """
    SELECT viewname, definition FROM pg_views WHERE schemaname = current_schema()
"""


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


def _catalog(url: str, query: str) -> set[tuple[str, ...]]:
    with psycopg.connect(_libpq_url(url)) as conn:
        return set(conn.execute(query).fetchall())


def _revisions(url: str) -> list[str]:
    """Every revision, oldest first."""
    script = ScriptDirectory.from_config(alembic_config(url))
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def test_models_agree_with_migrated_schema(make_database: Callable[[], str]) -> None:
    url = make_database()
    upgrade(url)
    assert _schema_diff(url) == []


def test_indexes_and_constraints_equal_those_the_models_create(
    make_database: Callable[[], str],
) -> None:
    migrated, from_models = make_database(), make_database()
    upgrade(migrated)
    engine = create_engine(normalize_url(from_models))
    try:
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()
    for query in (INDEXES, CONSTRAINTS):
        assert _catalog(migrated, query) == _catalog(from_models, query)
    # The drift window's predicate must be the one shared.drift queries with.
    assert any(
        name == "ix_detections_drift_window"
        and "WHERE ((error IS NULL) AND (rejection_reason IS DISTINCT FROM" in definition
        for _, name, definition in _catalog(migrated, INDEXES)
    )


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


def test_each_migration_steps_down_and_up_again(make_database: Callable[[], str]) -> None:
    url = make_database()
    revisions = _revisions(url)
    assert revisions[0] == "0001" and len(revisions) >= 3
    schemas = []
    for revision in revisions:
        upgrade(url, revision)
        schemas.append([_catalog(url, query) for query in (INDEXES, CONSTRAINTS, VIEWS)])
    # From the head down, one step at a time: each downgrade restores exactly
    # the schema its revision's predecessor had.
    for index in range(len(revisions) - 1, 0, -1):
        downgrade(url, "-1")
        assert current_revision(url) == revisions[index - 1]
        assert [_catalog(url, q) for q in (INDEXES, CONSTRAINTS, VIEWS)] == schemas[index - 1]
    upgrade(url)
    assert [_catalog(url, q) for q in (INDEXES, CONSTRAINTS, VIEWS)] == schemas[-1]
