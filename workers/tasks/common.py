"""Pieces shared by the task modules: retries, counters, drift, priority."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from contextlib import suppress
from typing import Any, NoReturn

import redis
from sqlalchemy.orm import Session

from shared.counters import record_outcomes
from shared.jobs import DetectionRecord
from workers.state import WorkerState

log = logging.getLogger(__name__)

_BACKOFF_BASE_S = 1.0
_BACKOFF_MAX_S = 60.0


def retry_transient(task: Any, exc: BaseException, settings_max: int) -> NoReturn:
    """Retry after a transient database or broker fault: exponential backoff
    with jitter, up to a maximum number of retries."""
    retries = task.request.retries
    countdown = min(_BACKOFF_MAX_S, _BACKOFF_BASE_S * 2**retries) * random.uniform(0.5, 1.0)  # noqa: S311
    log.warning(
        "transient fault in %s (retry %d/%d in %.1f s): %s",
        task.name, retries + 1, settings_max, countdown, exc,
    )  # fmt: skip
    raise task.retry(exc=exc, countdown=countdown, max_retries=settings_max)


def count_outcomes(state: WorkerState, records: Sequence[DetectionRecord]) -> None:
    """Feed /metrics; a Redis hiccup must not fail work already stored."""
    count_outcome_tuples(
        state, [(r.rejected, r.rejection_reason, r.error is not None) for r in records]
    )


def count_outcome_tuples(
    state: WorkerState, outcomes: Sequence[tuple[bool, str | None, bool]]
) -> None:
    """``(rejected, rejection_reason, failed)`` per image, into the metrics counters."""
    try:
        record_outcomes(state.redis, outcomes)
    except redis.RedisError as exc:
        log.warning("could not count outcomes: %s", exc)


def evaluate_drift_in(session: Session, state: WorkerState) -> None:
    from shared.drift import evaluate_drift

    alarm = evaluate_drift(
        session,
        state.pipeline.model_version,
        window=state.settings.drift_window,
        threshold=state.settings.drift_threshold,
    )
    if alarm is not None:
        log.warning(
            "drift alarm for %s: window mean %.3f vs baseline %.3f",
            alarm.model_version, alarm.window_mean, alarm.baseline_mean,
        )  # fmt: skip


# --- interactive requests go first ------------------------------------------------

_PRIORITY_KEY = "whales:interactive:{scope}"
_PRIORITY_LEASE_S = 120
_PAUSE_POLL_S = 0.01
_PAUSE_MAX_S = 30.0


def _priority_key(state: WorkerState) -> str:
    return _PRIORITY_KEY.format(scope=state.settings.priority_scope or state.info.hostname)


def interactive_lease(state: WorkerState, task_id: str) -> tuple[Any, ...]:
    """The Redis command that announces an interactive request on this
    device, so batch work on the same device pauses between model steps until
    it is released. The caller sends it with its own commands, saving a round
    trip on the client's time. A lease not released (a crashed worker) lapses
    after ``_PRIORITY_LEASE_S``."""
    return ("ZADD", _priority_key(state), time.time() + _PRIORITY_LEASE_S, task_id)


def release_interactive_lease(state: WorkerState, task_id: str) -> None:
    with suppress(redis.RedisError):
        state.redis.zrem(_priority_key(state), task_id)


def yield_to_interactive(state: WorkerState) -> None:
    """Called by batch work between model steps: wait while an interactive
    request is being served on the same device (bounded, never forever)."""
    if not state.settings.batch_yields:
        return
    key = _priority_key(state)
    deadline = time.monotonic() + _PAUSE_MAX_S
    try:
        while time.monotonic() < deadline:
            now = time.time()
            pipe = state.redis.pipeline(transaction=False)
            pipe.zremrangebyscore(key, "-inf", now)  # leases of crashed workers
            pipe.zcard(key)
            if not pipe.execute()[1]:
                return
            time.sleep(_PAUSE_POLL_S)
    except redis.RedisError:
        return
