"""What one worker process holds for its lifetime: warm models and clients.

Made in ``worker_process_init``, i.e. after the fork, so no CUDA context,
database connection or socket is ever shared with the parent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis

from shared.blobs import BlobStore
from shared.db.engine import Database, get_database
from shared.services import resolve_broker_url, to_redis_py_url
from shared.settings import Settings, get_settings
from shared.worker_registry import REFRESH_S, WorkerInfo, publish, withdraw

if TYPE_CHECKING:
    from shared.inference.pipeline import Pipeline

log = logging.getLogger(__name__)


@dataclass
class WorkerState:
    settings: Settings
    pipeline: Pipeline
    database: Database
    redis: redis.Redis
    blobs: BlobStore
    info: WorkerInfo
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def worker_name(self) -> str:
        return f"{self.info.hostname}:{self.info.pid}"

    def start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(REFRESH_S):
                try:
                    publish(self.redis, self.info)
                except redis.RedisError as exc:  # the broker may be restarting
                    log.warning("worker heartbeat failed: %s", exc)

        publish(self.redis, self.info)
        threading.Thread(target=beat, name="worker-heartbeat", daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(redis.RedisError):
            withdraw(self.redis, self.info)
        self.database.dispose()


_state: WorkerState | None = None


def load_state(queues: list[str]) -> WorkerState:
    """Load the bundle once for this process and connect its clients."""
    global _state
    from shared.inference.pipeline import Pipeline

    settings = get_settings()
    started = time.perf_counter()
    pipeline = Pipeline.from_bundle(settings.models_path, settings)
    log.info(
        "models loaded in %.1f s: model_version=%s device=%s bundle=%s",
        time.perf_counter() - started,
        pipeline.model_version,
        pipeline.device,
        settings.models_path,
    )
    client = redis.Redis.from_url(
        to_redis_py_url(resolve_broker_url(settings)), socket_timeout=10, socket_connect_timeout=5
    )
    info = WorkerInfo(
        hostname=socket.gethostname(),
        pid=os.getpid(),
        queues=queues,
        model_version=pipeline.model_version,
        device=pipeline.device,
        started_at=time.time(),
    )
    _state = WorkerState(
        settings=settings,
        pipeline=pipeline,
        database=get_database(application_name=f"whales-worker-{info.pid}"),
        redis=client,
        blobs=BlobStore(settings.blobs_path),
        info=info,
    )
    _state.start_heartbeat()
    return _state


def current_state() -> WorkerState:
    if _state is None:
        raise RuntimeError("worker state is not loaded: tasks run only inside a worker process")
    return _state


def close_state() -> None:
    global _state
    if _state is not None:
        _state.close()
        _state = None
