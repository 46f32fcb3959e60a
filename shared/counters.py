"""Prediction counters shared by every worker and read by every API replica.

Workers add to one Redis hash after each stored batch; ``/metrics`` reads it.
Redis is the right home: one place for all replicas, cheap increments, and a
reset on a Redis restart is an ordinary Prometheus counter reset.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

METRICS_KEY = "whales:metrics"
_REASON_PREFIX = "rejections_by_reason:"


def record_outcomes(client: redis.Redis, outcomes: Iterable[tuple[bool, str | None, bool]]) -> None:
    """Count stored detections: (rejected, rejection_reason, failed) per image."""
    counts: dict[str, int] = {}
    for rejected, reason, failed in outcomes:
        counts["predictions_total"] = counts.get("predictions_total", 0) + 1
        if failed:
            counts["failed_total"] = counts.get("failed_total", 0) + 1
        elif rejected:
            counts["rejections_total"] = counts.get("rejections_total", 0) + 1
            field = _REASON_PREFIX + (reason or "unknown")
            counts[field] = counts.get(field, 0) + 1
    if not counts:
        return
    pipe = client.pipeline(transaction=False)
    for field, amount in counts.items():
        pipe.hincrby(METRICS_KEY, field, amount)
    pipe.execute()


def read_counters(client: redis.Redis) -> tuple[dict[str, int], dict[str, int]]:
    """(totals, rejections by reason) as stored."""
    raw = client.hgetall(METRICS_KEY)
    totals: dict[str, int] = {}
    by_reason: dict[str, int] = {}
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        if name.startswith(_REASON_PREFIX):
            by_reason[name.removeprefix(_REASON_PREFIX)] = int(value)
        else:
            totals[name] = int(value)
    return totals, by_reason
