"""The workers' result backend, on the real Redis: one round trip, same contract."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery, states

from shared.queue import create_celery_app
from shared.settings import get_settings
from workers.app import WorkerCelery
from workers.result_store import OneTripRedisBackend


@pytest.fixture
def worker_app(broker_url: str) -> Iterator[Celery]:
    app = create_celery_app(get_settings(), broker_url, app_class=WorkerCelery)
    yield app
    app.close()


def _new_task(app: Celery) -> tuple[Any, str, bytes]:
    """The app's backend, a fresh task id and its result key."""
    task_id = str(uuid.uuid4())
    return app.backend, task_id, app.backend.get_key_for_task(task_id)


def _stored(client: redis.Redis, key: bytes) -> dict[str, Any]:
    raw = client.get(key)
    assert raw is not None
    decoded: dict[str, Any] = json.loads(raw)
    return decoded


def _next_message(pubsub: Any, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=deadline - time.monotonic())
        if message is not None and message["type"] == "message":
            decoded: dict[str, Any] = json.loads(message["data"])
            return decoded
    raise AssertionError("no result was published")


def test_a_result_is_stored_with_its_expiry_and_published(
    worker_app: Celery, redis_client: redis.Redis
) -> None:
    backend, task_id, key = _new_task(worker_app)
    assert isinstance(backend, OneTripRedisBackend)
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(key)
    try:
        backend.store_result(task_id, {"ok": True}, states.SUCCESS)
        published = _next_message(pubsub)
    finally:
        pubsub.close()

    stored = _stored(redis_client, key)
    assert (stored["status"], stored["result"], stored["task_id"]) == (
        states.SUCCESS,
        {"ok": True},
        task_id,
    )
    assert published == stored
    assert 0 < redis_client.ttl(key) <= worker_app.conf.result_expires


def test_a_success_is_never_overwritten_but_other_states_are(
    worker_app: Celery, redis_client: redis.Redis
) -> None:
    backend, task_id, key = _new_task(worker_app)

    backend.store_result(task_id, None, states.STARTED)
    backend.store_result(task_id, {"ok": True}, states.SUCCESS)
    assert _stored(redis_client, key)["status"] == states.SUCCESS

    # A late duplicate delivery that fails must not hide the answer.
    backend.store_result(task_id, ValueError("late duplicate"), states.FAILURE)
    assert _stored(redis_client, key)["result"] == {"ok": True}


def test_a_result_whose_stored_value_is_not_json_is_replaced(
    worker_app: Celery, redis_client: redis.Redis
) -> None:
    backend, task_id, key = _new_task(worker_app)
    redis_client.set(key, b"\xff not json")

    backend.store_result(task_id, 7, states.SUCCESS)

    assert _stored(redis_client, key)["result"] == 7
