"""The read-only reporting role: what it may read, what it may not, and its
life across several databases of one server."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import errors, sql
from sqlalchemy.engine import make_url

from shared.db.engine import Database
from shared.db.migrate import current_revision, downgrade, upgrade
from shared.reporting import REPORT_VIEWS
from shared.settings import get_settings, reset_settings_cache
from tests.services import _libpq_url

INTERNAL_TABLES = (
    "jobs",
    "job_chunks",
    "image_attempts",
    "detections",
    "drift_baselines",
    "drift_alarms",
)


@pytest.fixture
def as_reporting_role(clean_database: Database) -> Iterator[psycopg.Connection]:
    """A superuser connection that has become the (NOLOGIN) reporting role."""
    with psycopg.connect(_libpq_url(clean_database.url), autocommit=True) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(get_settings().reporting_role)))
        yield conn


def test_the_role_reads_every_view(as_reporting_role: psycopg.Connection) -> None:
    assert set(REPORT_VIEWS) == {
        "report_identifications",
        "report_sightings",
        "report_species_daily",
        "report_rejections_daily",
        "report_drift_alarms",
    }
    for view in REPORT_VIEWS:
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(view))
        assert as_reporting_role.execute(query).fetchone() == (0,)
    row = as_reporting_role.execute("SELECT current_user").fetchone()
    assert row == (get_settings().reporting_role,)


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO jobs (id, kind) VALUES (gen_random_uuid(), 'single')",
        "UPDATE detections SET id_animal = 'x'",
        "DELETE FROM detections",
        "TRUNCATE detections",
        "UPDATE drift_baselines SET in_alarm = false",
        "CREATE TABLE analyst_scratch (x int)",
        "CREATE VIEW analyst_view AS SELECT 1 AS x",
    ]
    + [f"SELECT * FROM {table} LIMIT 1" for table in INTERNAL_TABLES],
)
def test_the_role_cannot_write_nor_read_job_internals(
    as_reporting_role: psycopg.Connection, statement: str
) -> None:
    with pytest.raises(errors.InsufficientPrivilege):
        as_reporting_role.execute(statement)


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO report_drift_alarms (alarm_id) VALUES (1)",
        "UPDATE report_identifications SET species = 'x'",
        "DELETE FROM report_sightings",
    ],
)
def test_the_role_cannot_write_through_the_views(
    as_reporting_role: psycopg.Connection, statement: str
) -> None:
    # None of the views is auto-updatable, so PostgreSQL refuses the write
    # before it looks at privileges; the privileges are checked just below.
    with pytest.raises((errors.InsufficientPrivilege, errors.ObjectNotInPrerequisiteState)):
        as_reporting_role.execute(statement)


def test_the_role_holds_select_on_the_views_and_nothing_else(
    as_reporting_role: psycopg.Connection,
) -> None:
    privileges = ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"]
    held = {
        (relation, privilege)
        for relation in (*REPORT_VIEWS, *INTERNAL_TABLES)
        for privilege in privileges
        if as_reporting_role.execute(
            "SELECT has_table_privilege(current_user, %s, %s)", (relation, privilege)
        ).fetchone()
        == (True,)
    }
    assert held == {(view, "SELECT") for view in REPORT_VIEWS}
    schema = as_reporting_role.execute(
        "SELECT has_schema_privilege(current_user, current_schema(), 'USAGE'),"
        " has_schema_privilege(current_user, current_schema(), 'CREATE')"
    ).fetchone()
    assert schema == (True, False)


def test_the_role_cannot_log_in_and_views_run_with_owner_rights(
    clean_database: Database,
) -> None:
    with psycopg.connect(_libpq_url(clean_database.url), autocommit=True) as conn:
        login = conn.execute(
            "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles"
            " WHERE rolname = %s",
            (get_settings().reporting_role,),
        ).fetchone()
        options = conn.execute(
            "SELECT relname, coalesce(array_to_string(reloptions, ','), '') FROM pg_class"
            " WHERE relkind = 'v' AND relname = ANY(%s)",
            (list(REPORT_VIEWS),),
        ).fetchall()
    assert login == (False, False, False, False)
    assert len(options) == len(REPORT_VIEWS)
    # security_invoker would make the role need grants on the base tables.
    assert all("security_invoker=true" not in opts for _, opts in options)


def _role_exists(admin_url: str, role: str) -> bool:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        return (
            conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            is not None
        )


@pytest.fixture
def private_role(
    pg_admin_url: str, make_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, list[str]]]:
    """A reporting role name of this test alone (roles are server-wide, and other
    databases of this run keep the default one alive), and databases to use it."""
    role = f"whales_reporting_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("WHALES_REPORTING_ROLE", role)
    reset_settings_cache()
    urls: list[str] = []
    yield role, urls
    monkeypatch.undo()
    reset_settings_cache()
    for url in urls:
        with psycopg.connect(url, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_role_survives_while_another_database_or_a_member_uses_it(
    pg_admin_url: str,
    make_database: Callable[[], str],
    private_role: tuple[str, list[str]],
) -> None:
    role, urls = private_role
    first, second = make_database(), make_database()
    urls += [first, second]
    upgrade(first)
    upgrade(second)  # the role exists already: the migration must not fail
    assert _role_exists(pg_admin_url, role)

    downgrade(first, "base")  # the second database still grants to the role
    assert _role_exists(pg_admin_url, role)
    with psycopg.connect(second, autocommit=True) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        assert conn.execute("SELECT count(*) FROM report_sightings").fetchone() == (0,)

    member = f"{role}_analyst"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(member)))
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(member)))
    try:
        downgrade(second, "base")  # an operator's analyst is a member: kept
        assert _role_exists(pg_admin_url, role)
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(member)))

    upgrade(second)
    downgrade(second, "base")  # nothing uses it any more: dropped
    assert not _role_exists(pg_admin_url, role)
    upgrade(first)  # and created again on the next upgrade
    assert _role_exists(pg_admin_url, role)


def _schema_grants(url: str, role: str) -> int:
    """Privileges granted to the role itself on the schema (PUBLIC may hold
    USAGE there anyway)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_namespace n, aclexplode(n.nspacl) acl"
            " WHERE n.nspname = current_schema() AND acl.grantee = %s::regrole",
            (role,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_role_given_login_connects_reads_only_views_and_is_kept(
    pg_admin_url: str,
    make_database: Callable[[], str],
    private_role: tuple[str, list[str]],
) -> None:
    role, urls = private_role
    url = make_database()
    urls.append(url)
    upgrade(url)
    # What docs/reporting.md tells an operator to do.
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal("analyst-pw")
            )
        )
    analyst_url = make_url(url).set(username=role, password="analyst-pw")
    with psycopg.connect(analyst_url.render_as_string(hide_password=False)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (role,)
        assert conn.execute("SELECT count(*) FROM report_species_daily").fetchone() == (0,)
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM jobs")

    assert _schema_grants(url, role) == 1
    downgrade(url, "base")  # an operator set it up to log in: kept
    assert _role_exists(pg_admin_url, role)
    assert _schema_grants(url, role) == 0  # but its grants in this database are gone


def test_a_superuser_is_refused_as_the_reporting_role(
    pg_admin_url: str,
    make_database: Callable[[], str],
    private_role: tuple[str, list[str]],
) -> None:
    role, urls = private_role
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} SUPERUSER NOLOGIN").format(sql.Identifier(role)))
    url = make_database()
    urls.append(url)
    with pytest.raises(Exception, match="is a superuser"):
        upgrade(url)
    assert current_revision(url) == "0001"


def test_databases_migrated_at_once_share_the_role(
    pg_admin_url: str,
    make_database: Callable[[], str],
    private_role: tuple[str, list[str]],
) -> None:
    role, urls = private_role
    urls += [make_database() for _ in range(3)]
    for url in urls:
        upgrade(url, "0001")
    # Separate processes (Alembic's context is process-global): each one checks
    # that the role is missing, and all but one lose the race to create it.
    script = "import sys; from shared.db.migrate import upgrade; upgrade(sys.argv[1])"
    env = {**os.environ, "WHALES_REPORTING_ROLE": role}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, url],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for url in urls
    ]
    outputs = [process.communicate(timeout=120)[0].decode() for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], outputs
    for url in urls:
        assert current_revision(url) is not None
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            assert conn.execute("SELECT count(*) FROM report_identifications").fetchone() == (0,)
