"""Celery tasks, one module per flow. Names are explicit and never change."""

from __future__ import annotations

import kombu.exceptions
import redis
import sqlalchemy.exc

# Faults that pass: the task is retried with backoff, up to a maximum.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    redis.ConnectionError,
    redis.TimeoutError,
    kombu.exceptions.OperationalError,
)
