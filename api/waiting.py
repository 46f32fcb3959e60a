"""Waiting for work done elsewhere: one single-image task, or a whole job.

A single image waits on its Celery result through a Redis subscription opened
*before* the task is sent, so the answer cannot slip by unseen and arrives
without polling delay. Each wait has its own subscription (a pooled
connection), which keeps gunicorn's request threads independent of each other:
Celery's shared result consumer is not meant to be used from many threads.

A batch waits on its ``jobs`` row, the source of truth for its status.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from celery import states
from redis.client import PubSub

from api.context import ApiServices
from shared.db.models import Job
from shared.jobs import get_job
from shared.schemas import TERMINAL_STATUSES

log = logging.getLogger(__name__)

_JOB_POLL_FIRST_S = 0.05
_JOB_POLL_MAX_S = 0.5


_threads = threading.local()


def _thread_pubsub(client: redis.Redis) -> PubSub:
    """This request thread's subscription connection to ``client``'s server.

    Opening a connection per request (TCP, handshake) cost more than the rest
    of the wait; a thread serves one request at a time, so it keeps one
    connection and only changes its subscription.
    """
    held: dict[int, tuple[redis.Redis, PubSub]] = _threads.__dict__.setdefault("pubsubs", {})
    entry = held.get(id(client))
    if entry is None or entry[0] is not client:
        entry = (client, client.pubsub(ignore_subscribe_messages=True))
        held[id(client)] = entry
    return entry[1]


def _drop_thread_pubsub(client: redis.Redis) -> None:
    held: dict[int, tuple[redis.Redis, PubSub]] = _threads.__dict__.get("pubsubs", {})
    entry = held.pop(id(client), None)
    if entry is not None:
        entry[1].close()


class TaskWait:
    """A subscription to one task's result, opened before the task is sent."""

    def __init__(self, services: ApiServices, task_id: str) -> None:
        backend = services.celery.backend
        self._client: redis.Redis = backend.client
        self._key = backend.get_key_for_task(task_id)
        self._channel = self._key.decode() if isinstance(self._key, bytes) else str(self._key)
        self._pubsub = _thread_pubsub(self._client)
        try:
            self._pubsub.subscribe(self._key)
        except redis.RedisError:
            _drop_thread_pubsub(self._client)
            raise

    def _ours(self, message: dict[str, Any] | None) -> bool:
        if message is None or message.get("type") != "message":
            return False
        channel = message.get("channel")
        channel = channel.decode() if isinstance(channel, bytes) else channel
        # A late message for an earlier request of this thread is not ours.
        return bool(channel == self._channel)

    def result(self, timeout: float) -> dict[str, Any] | None:
        """The task's result meta once it is ready, or None after ``timeout``.
        The stored result stays until :meth:`forget`."""
        deadline = time.monotonic() + timeout
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                message = self._pubsub.get_message(timeout=remaining)
                if message is None or not self._ours(message):
                    continue
                meta = _decode(message["data"])
                if meta.get("status") in states.READY_STATES:
                    return meta
            # A result stored in the last instant, after the final read.
            stored = self._client.get(self._key)
            if stored is not None:
                meta = _decode(stored)
                if meta.get("status") in states.READY_STATES:
                    return meta
            return None
        finally:
            self.close()

    def forget(self) -> None:
        """Delete the stored result (it would otherwise wait out
        ``result_expires``). The API calls this once its answer is sent: the
        round trip is not on the client's time."""
        try:
            self._client.delete(self._key)
        except redis.RedisError:
            log.warning("result %s not deleted; it expires by itself", self._channel)

    def close(self) -> None:
        try:
            self._pubsub.unsubscribe(self._key)
        except redis.RedisError:
            _drop_thread_pubsub(self._client)


def _decode(raw: bytes | str) -> dict[str, Any]:
    # The result serializer is JSON (shared.queue), never pickle.
    decoded = json.loads(raw)
    return decoded if isinstance(decoded, dict) else {}


def wait_for_job(
    services: ApiServices,
    job_id: uuid.UUID,
    timeout: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> Job | None:
    """The job once it has ended, or None if it still runs after ``timeout``.
    Polls its row, quickly at first (small batches end fast), then every 0.5 s.
    Raises LookupError if the job does not exist."""
    deadline = time.monotonic() + timeout
    interval = _JOB_POLL_FIRST_S
    while True:
        with services.session() as session:
            job = get_job(session, job_id)
        if job is None:
            raise LookupError(f"no job {job_id}")
        if job.status in TERMINAL_STATUSES:
            return job
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        sleep(min(interval, remaining))
        interval = min(_JOB_POLL_MAX_S, interval * 2)
