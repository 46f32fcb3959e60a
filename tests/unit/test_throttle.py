"""The throttle of post-answer bookkeeping: once per interval, the last request never lost."""

from __future__ import annotations

import threading
import time

import pytest

from workers.throttle import Throttle


def test_a_burst_runs_once_at_once_and_once_when_the_interval_ends() -> None:
    runs: list[float] = []
    done = threading.Event()

    def action() -> None:
        runs.append(time.monotonic())
        if len(runs) == 2:
            done.set()

    throttle = Throttle(action, interval_s=0.3)
    started = time.monotonic()
    for _ in range(20):
        throttle.request()

    assert len(runs) == 1, "the first request runs at once, the rest wait"
    assert done.wait(5), "the burst's skipped requests are made up once"
    time.sleep(0.5)
    assert len(runs) == 2
    assert runs[1] - started >= 0.29


def test_requests_spaced_beyond_the_interval_each_run_at_once() -> None:
    runs: list[int] = []
    throttle = Throttle(lambda: runs.append(1), interval_s=0.05)

    for expected in range(1, 4):
        throttle.request()
        assert len(runs) == expected
        time.sleep(0.08)


def test_a_failing_action_is_logged_and_does_not_escape(caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[int] = []

    def action() -> None:
        attempts.append(1)
        raise RuntimeError("database away")

    Throttle(action, interval_s=1.0).request()

    assert attempts == [1]
    assert "throttled action failed" in caplog.text
    assert "database away" in caplog.text
