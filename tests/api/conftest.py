"""Fixtures of the API tests: apps made by the real factory, on the run's
Postgres, Redis and blob store, and test clients that each look like a
different client address (so one test's rate-limit budget is its own)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.app import app_services, create_app
from shared.settings import Settings

_addresses = itertools.count(1)


def next_client_address() -> str:
    number = next(_addresses)
    return f"10.77.{number // 250}.{number % 250 + 1}"


@pytest.fixture(scope="session")
def make_app(stack_env: dict[str, str]) -> Iterator[Callable[..., Flask]]:
    """Apps on the run's stack; keyword arguments override settings."""
    apps: list[Flask] = []

    def make(**overrides: Any) -> Flask:
        app = create_app(Settings(**overrides))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app_services(app).close()


@pytest.fixture(scope="session")
def api_app(make_app: Callable[..., Flask]) -> Flask:
    """The app with the default settings (rate limits on)."""
    return make_app()


def client_for(app: Flask, address: str | None = None) -> FlaskClient:
    """A test client that comes from a client address of its own."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address or next_client_address()
    return client


@pytest.fixture
def client(api_app: Flask) -> FlaskClient:
    return client_for(api_app)
