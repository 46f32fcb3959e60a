"""The README's run command, driven as a newcomer would: ``./run up``, curl, Ctrl-C.

Once with embedded Postgres and Redis (no URLs configured, data kept in the
data directory, reused by a second ``up``), once with the run's configured
Postgres and Redis.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil
import pytest
import redis

from shared.services.redis_urls import to_redis_py_url
from tests.paths import REPO_ROOT, manifest
from tests.processes import free_port
from tests.services import PrivateRedis
from tests.zips import build_zip

pytestmark = pytest.mark.slow

UP_TIMEOUT_S = 300


@dataclass
class RunningStack:
    process: subprocess.Popen[bytes]
    output: Path
    api: str
    flower: str
    data_dir: Path

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_up(self) -> None:
        deadline = time.monotonic() + UP_TIMEOUT_S
        while "whales is up:" not in self.text():
            if self.process.poll() is not None:
                raise AssertionError(f"whales up exited:\n{self.text()}\n{self.logs()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"whales up not ready:\n{self.text()}\n{self.logs()}")
            time.sleep(0.5)

    def logs(self) -> str:
        parts = []
        for log in sorted((self.data_dir / "logs").glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-25:]
            parts.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def processes(self) -> set[int]:
        """Every process of the stack: descendants and servers started in the data dir."""
        found = {child.pid for child in psutil.Process(self.process.pid).children(recursive=True)}
        return found | _processes_using(self.data_dir)

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the foreground process group, as a terminal sends it."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout=120)


def _processes_using(data_dir: Path) -> set[int]:
    marker = str(data_dir)
    found = set()
    for process in psutil.process_iter(["pid", "cmdline"]):
        if any(marker in part for part in process.info["cmdline"] or ()):
            found.add(process.info["pid"])
    return found


def _start(env: dict[str, str], data_dir: Path, output: Path) -> RunningStack:
    api_port, flower_port = free_port(), free_port()
    full_env = {
        **env,
        "WHALES_DATA_DIR": str(data_dir),
        "WHALES_API_PORT": str(api_port),
        "WHALES_API_WORKERS": "1",
        "WHALES_FLOWER_PORT": str(flower_port),
        "PYTHONUNBUFFERED": "1",
    }
    handle = output.open("ab")
    process = subprocess.Popen(
        ["./run", "up"],
        cwd=REPO_ROOT,
        env=full_env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a process group of its own, like a terminal's job
    )
    stack = RunningStack(
        process, output, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{flower_port}", data_dir
    )
    try:
        stack.wait_up()
    except BaseException:
        stack.interrupt()
        raise
    return stack


def _curl(*arguments: str) -> tuple[int, str]:
    finished = subprocess.run(
        ["curl", "-sS", "-w", "\n%{http_code}", *arguments],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    body, _, status = finished.stdout.rpartition("\n")
    return int(status), body


def _exercise(stack: RunningStack, tmp_path: Path) -> str:
    """What the README shows: one photo, one ZIP job, Flower behind auth."""
    photos = [p.path for p in manifest() if p.label == "cetacean"]
    status, body = _curl("-F", f"file=@{photos[0]}", f"{stack.api}/v1/predict-single")
    assert status == 200, body
    detection = json.loads(body)
    assert detection["image_ind"] == photos[0].name
    assert {"class_animal", "id_animal", "probability", "is_cetacean", "candidates"} <= set(
        detection
    )

    archive = tmp_path / "survey.zip"
    archive.write_bytes(build_zip([(p.name, p.read_bytes()) for p in photos[:6]]))
    status, body = _curl("-F", f"archive=@{archive}", f"{stack.api}/v1/jobs")
    assert status == 202, body
    job_id = json.loads(body)["job_id"]
    deadline = time.monotonic() + 180
    while True:
        status, body = _curl(f"{stack.api}/v1/jobs/{job_id}")
        job = json.loads(body)
        if job["status"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert job["status"] == "succeeded", job
    assert job["processed"] == 6

    status, _ = _curl(stack.flower)
    assert status == 401, "Flower answers only with credentials"
    user, password = _flower_credentials(stack)
    status, _ = _curl("-u", f"{user}:{password}", stack.flower)
    assert status == 200
    return str(job_id)


def _flower_credentials(stack: RunningStack) -> tuple[str, str]:
    line = next(line for line in stack.text().splitlines() if "Flower" in line and "user" in line)
    user = line.split("(user ")[1].split(",")[0]
    password = line.split("password ")[1].rstrip(")").strip()
    return user, password


def _stop_and_check_nothing_is_left(stack: RunningStack) -> None:
    before = stack.processes()
    assert len(before) >= 5, f"expected the stack's processes, found {before}"
    assert stack.interrupt() == 0, stack.text()
    deadline = time.monotonic() + 30
    alive = before
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in before if psutil.pid_exists(pid) and not _is_zombie(pid)}
        time.sleep(0.2)
    assert not alive, f"left behind: {[psutil.Process(pid).cmdline() for pid in alive]}"
    assert not _processes_using(stack.data_dir)


def _is_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def base_env(tiny_bundle: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHALES_")}
    env.update(WHALES_MODEL_DIR=str(tiny_bundle), WHALES_TORCH_THREADS="1", HF_HUB_OFFLINE="1")
    yield env


def test_up_with_embedded_services_then_again_on_the_same_data(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"

    first = _start(base_env, data_dir, tmp_path / "first.out")
    try:
        assert "embedded, kept in the data dir" in first.text()
        job_id = _exercise(first, tmp_path)
    finally:
        _stop_and_check_nothing_is_left(first)

    second = _start(base_env, data_dir, tmp_path / "second.out")
    try:
        status, body = _curl(f"{second.api}/v1/jobs/{job_id}")
        assert status == 200, "the second run finds the first run's history"
        assert json.loads(body)["status"] == "succeeded"
    finally:
        _stop_and_check_nothing_is_left(second)


def _broker_of_its_own(broker_url: str, private_redis: PrivateRedis) -> str:
    """The run's Redis server on another database number, so the session's test
    worker never takes this stack's tasks; the private server when the run's
    Redis is an embedded one (a unix socket has no database numbers in its URL)."""
    parsed = urlsplit(broker_url)
    if parsed.scheme in ("redis", "rediss"):
        return urlunsplit(parsed._replace(path="/15"))
    return private_redis.url


def test_up_with_configured_postgres_and_redis(
    base_env: dict[str, str],
    database_url: str,
    broker_url: str,
    private_redis: PrivateRedis,
    tmp_path: Path,
) -> None:
    stack_broker = _broker_of_its_own(broker_url, private_redis)
    redis.Redis.from_url(to_redis_py_url(stack_broker)).flushdb()
    env = {**base_env, "WHALES_DATABASE_URL": database_url, "WHALES_BROKER_URL": stack_broker}

    stack = _start(env, tmp_path / "data", tmp_path / "up.out")
    try:
        assert "WHALES_DATABASE_URL" in stack.text()
        _exercise(stack, tmp_path)
    finally:
        _stop_and_check_nothing_is_left(stack)
