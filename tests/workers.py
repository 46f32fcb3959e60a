"""Real Celery worker processes for the tests.

Workers run as separate processes (``whales worker``), exactly as deployed,
against the run's Postgres and Redis and a tiny random-weight bundle. The
environment the tests give them is also set in this process, so an API app
made in the test process talks to the same database, broker and blob store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from shared.services.redis_urls import to_redis_py_url
from shared.settings import reset_settings_cache
from shared.worker_registry import live_workers
from tests.paths import REPO_ROOT
from tests.processes import kill_process_group, stop_process_group

WORKER_START_TIMEOUT_S = 180


def service_environment(
    *, database_url: str, broker_url: str, bundle: Path, data_dir: Path, **overrides: str
) -> dict[str, str]:
    """WHALES_* variables for a test stack; ``overrides`` are extra settings
    given without the prefix, e.g. ``chunk_size="4"``."""
    env = {
        "WHALES_DATABASE_URL": database_url,
        "WHALES_BROKER_URL": broker_url,
        "WHALES_MODEL_DIR": str(bundle),
        "WHALES_DATA_DIR": str(data_dir),
        "WHALES_CHUNK_SIZE": "4",
        "WHALES_TORCH_THREADS": "1",
        "WHALES_DECODE_THREADS": "2",
        "WHALES_ONNX_THREADS": "1",
        "WHALES_VISIBILITY_TIMEOUT_S": "8",
        "WHALES_STALE_CHUNK_S": "6",
        "WHALES_JANITOR_INTERVAL_S": "1",
        "WHALES_LOG_LEVEL": "INFO",
        "HF_HUB_OFFLINE": "1",
    }
    env.update({f"WHALES_{key.upper()}": value for key, value in overrides.items()})
    return env


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    broker_url: str
    queues: str
    started_pids: set[int] = field(default_factory=set)

    def wait_ready(self, timeout: float = WORKER_START_TIMEOUT_S) -> None:
        """Until one of this worker's pool processes has its models warm."""
        client = redis.Redis.from_url(to_redis_py_url(self.broker_url))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log_tail()}")
            children = self.pool_pids()
            if any(info.pid in children for info in live_workers(client)):
                return
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready in {timeout} s:\n{self.log_tail()}")

    def pool_pids(self) -> set[int]:
        import psutil

        try:
            return {
                child.pid for child in psutil.Process(self.process.pid).children(recursive=True)
            }
        except psutil.NoSuchProcess:
            return set()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL the worker and its pool: nothing gets to clean up or ack."""
        kill_process_group(self.process)

    def stop(self) -> None:
        stop_process_group(self.process)


def start_worker(
    env: dict[str, str], log_path: Path, *, queues: str = "interactive,batch", wait: bool = True
) -> WorkerProcess:
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    handle = log_path.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker", "--queues", queues],
        cwd=REPO_ROOT,
        env=full_env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: kill() reaches the pool too
    )
    worker = WorkerProcess(process, log_path, env["WHALES_BROKER_URL"], queues)
    if wait:
        try:
            worker.wait_ready()
        except BaseException:
            worker.stop()
            raise
    return worker


@pytest.fixture(scope="session")
def stack_env(
    database_url: str,
    broker_url: str,
    tiny_bundle: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    """The run's service settings, also applied to this process while it lasts."""
    env = service_environment(
        database_url=database_url,
        broker_url=broker_url,
        bundle=tiny_bundle,
        data_dir=tmp_path_factory.mktemp("stack-data"),
        # The run's shared worker must not adopt the chunks of tests that run
        # workers of their own on private brokers over the same database: its
        # janitor would re-send a chunk that waits on a restarting pool process
        # to its own broker, and a worker without that test's settings would
        # process it. The janitor's tests start workers of their own.
        stale_chunk_s="3600",
    )
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    reset_settings_cache()
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reset_settings_cache()


@pytest.fixture(scope="session")
def worker(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """One worker serving both queues for the whole run."""
    process = start_worker(stack_env, tmp_path_factory.mktemp("worker") / "worker.log")
    yield process
    process.stop()
