"""Which workers are alive and what they loaded, for ``/ready`` and ``/health``.

Each worker process, once its models are warm, keeps a small record in Redis
with a short expiry and refreshes it; a record that stops being refreshed
disappears on its own, so a dead worker is never reported alive.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import redis

KEY_PREFIX = "whales:worker:"
TTL_S = 30
REFRESH_S = 10


@dataclass(frozen=True)
class WorkerInfo:
    hostname: str
    pid: int
    queues: list[str]
    model_version: str
    device: str
    started_at: float


def worker_key(info: WorkerInfo) -> str:
    return f"{KEY_PREFIX}{info.hostname}:{info.pid}"


def publish(client: redis.Redis, info: WorkerInfo) -> None:
    client.set(worker_key(info), json.dumps(asdict(info)), ex=TTL_S)


def withdraw(client: redis.Redis, info: WorkerInfo) -> None:
    client.delete(worker_key(info))


def live_workers(client: redis.Redis) -> list[WorkerInfo]:
    workers = []
    for key in client.scan_iter(match=f"{KEY_PREFIX}*", count=100):
        raw = client.get(key)
        if raw is not None:
            workers.append(WorkerInfo(**json.loads(raw)))
    return sorted(workers, key=lambda w: (w.hostname, w.pid))
