"""Engines and sessions.

One :class:`Database` per process, made on first use. Workers make theirs
after the fork (``worker_process_init``); the API scopes a session to each
request; tasks open one per unit of work with :meth:`Database.session`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from threading import Lock

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)


def normalize_url(url: str) -> str:
    """Use psycopg 3 whatever spelling of the PostgreSQL URL was configured."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def create_db_engine(url: str, *, pool_size: int = 5, application_name: str = "whales") -> Engine:
    return create_engine(
        normalize_url(url),
        # A connection killed by a database restart is noticed before use.
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        connect_args={"application_name": application_name, "connect_timeout": 5},
    )


class Database:
    """An engine and its session factory."""

    def __init__(self, url: str, *, pool_size: int = 5, application_name: str = "whales") -> None:
        self.url = url
        self.engine = create_db_engine(url, pool_size=pool_size, application_name=application_name)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.pid = os.getpid()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on any error."""
        session = self.sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """A connection on which each statement commits by itself: for work
        that is one statement, it saves the BEGIN and COMMIT round trips."""
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            yield connection

    def dispose(self) -> None:
        self.engine.dispose()


_database: Database | None = None
_lock = Lock()


def get_database(url: str | None = None, *, application_name: str = "whales") -> Database:
    """The process's database, made on first call.

    A process forked from one that already had a database gets a new engine:
    connections must never be shared across a fork.
    """
    global _database
    with _lock:
        if _database is not None and _database.pid != os.getpid():
            # Inherited from the parent: drop the pool without closing its sockets,
            # which still belong to the parent.
            _database.engine.dispose(close=False)
            _database = None
        if _database is None:
            if url is None:
                from shared.services import resolve_database_url

                url = resolve_database_url()
            _database = Database(url, application_name=application_name)
        return _database


def close_database() -> None:
    """Dispose of the process's database (tests, shutdown)."""
    global _database
    with _lock:
        if _database is not None:
            _database.dispose()
            _database = None
