"""What one API app holds: settings and clients, made by the factory.

The clients connect lazily (first use, in the serving process), so making an
app opens no connection, and a gunicorn worker never shares a socket with its
parent.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis
from celery import Celery
from flask import Flask, current_app
from sqlalchemy.orm import Session

from shared.blobs import BlobStore
from shared.db.engine import Database
from shared.queue import SendOnlyCelery, create_celery_app
from shared.services import resolve_broker_url, resolve_database_url, to_redis_py_url
from shared.settings import Settings

EXTENSION_KEY = "whales"


@dataclass
class ApiServices:
    settings: Settings
    database: Database
    redis: redis.Redis
    celery: Celery
    blobs: BlobStore
    broker_url: str

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.database.session() as session:
            yield session

    def close(self) -> None:
        self.database.dispose()
        self.celery.close()
        self.redis.close()


def build_services(settings: Settings) -> ApiServices:
    """Resolve the service URLs (starting embedded servers when none are
    configured) and make lazy clients for them."""
    broker_url = resolve_broker_url(settings)
    database_url = resolve_database_url(settings)
    return ApiServices(
        settings=settings,
        database=Database(database_url, pool_size=10, application_name="whales-api"),
        redis=redis.Redis.from_url(
            to_redis_py_url(broker_url), socket_timeout=5, socket_connect_timeout=3
        ),
        celery=create_celery_app(settings, broker_url, app_class=SendOnlyCelery),
        blobs=BlobStore(settings.blobs_path),
        broker_url=broker_url,
    )


def init_services(app: Flask, services: ApiServices) -> None:
    app.extensions[EXTENSION_KEY] = services


def services() -> ApiServices:
    """The services of the app serving the current request."""
    found: ApiServices = current_app.extensions[EXTENSION_KEY]
    return found
