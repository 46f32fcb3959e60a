"""Services for a benchmark run: a scratch database and a broker, then gone.

The configured server (WHALES_DATABASE_URL / WHALES_BROKER_URL) when there is
one, with a database of the run's own that is dropped afterwards; otherwise
embedded Postgres and Redis in the run's directory, stopped afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from shared.db.engine import close_database
from shared.db.migrate import upgrade


@contextmanager
def scratch_database(configured: str | None, pg_dir: Path) -> Iterator[str]:
    """A fresh, migrated database, dropped when the run ends."""
    if configured:
        server = make_url(configured).set(drivername="postgresql")
    else:
        from shared.services.embedded_postgres import ensure_embedded_postgres

        server = make_url(ensure_embedded_postgres(pg_dir)).set(drivername="postgresql")
    name = f"whales_bench_{uuid.uuid4().hex[:8]}"
    admin = server.set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        close_database()
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        if not configured:
            from shared.services.embedded_postgres import stop_embedded_postgres

            stop_embedded_postgres(pg_dir)


@contextmanager
def scratch_broker(configured: str | None, redis_dir: Path) -> Iterator[str]:
    if configured:
        yield configured
        return
    from shared.services.embedded_redis import ensure_embedded_redis, stop_embedded_redis

    try:
        yield ensure_embedded_redis(redis_dir)
    finally:
        stop_embedded_redis(redis_dir)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
