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
import time
import uuid
from collections.abc import Callable
from typing import Any

from celery import states

from api.context import ApiServices
from shared.db.models import Job
from shared.jobs import get_job
from shared.schemas import TERMINAL_STATUSES

_JOB_POLL_FIRST_S = 0.05
_JOB_POLL_MAX_S = 0.5


class TaskWait:
    """A subscription to one task's result, opened before the task is sent."""

    def __init__(self, services: ApiServices, task_id: str) -> None:
        backend = services.celery.backend
        self._client = backend.client
        self._key = backend.get_key_for_task(task_id)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(self._key)
        self.started = False  # a worker took the task (state STARTED was seen)

    def result(self, timeout: float) -> dict[str, Any] | None:
        """The task's result meta once it is ready, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                message = self._pubsub.get_message(timeout=remaining)
                if message is None or message.get("type") != "message":
                    continue
                meta = _decode(message["data"])
                if meta.get("status") == states.STARTED:
                    self.started = True
                if meta.get("status") in states.READY_STATES:
                    self._client.delete(self._key)
                    return meta
            # A result stored in the last instant, after the final read.
            stored = self._client.get(self._key)
            if stored is not None:
                meta = _decode(stored)
                if meta.get("status") in states.READY_STATES:
                    self._client.delete(self._key)
                    return meta
            return None
        finally:
            self.close()

    def close(self) -> None:
        self._pubsub.close()


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
