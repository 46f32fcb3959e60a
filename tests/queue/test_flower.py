"""``whales flower``: basic auth required, readable task arguments, Prometheus metrics."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from shared.db.engine import Database
from shared.queue import create_celery_app, send_single
from shared.settings import get_settings
from tests.paths import REPO_ROOT, all_sample_images
from tests.processes import free_port
from tests.submit import submit_archive, wait_for_job
from tests.workers import WorkerProcess
from tests.zips import build_zip

AUTH = ("operator", "s3cret-for-tests")


def _flower_command() -> list[str]:
    return [sys.executable, "-m", "cli.main", "flower"]


@pytest.fixture
def flower(stack_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        **stack_env,
        "WHALES_FLOWER_USER": AUTH[0],
        "WHALES_FLOWER_PASSWORD": AUTH[1],
        "WHALES_FLOWER_PORT": str(port),
    }
    log = (tmp_path / "flower.log").open("ab")
    process = subprocess.Popen(
        _flower_command(), cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(url, timeout=2)
            break
        except requests.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp_path / "flower.log").read_text()) from None
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_flower_refuses_to_start_without_credentials() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHALES_FLOWER")}

    finished = subprocess.run(
        _flower_command(), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )

    assert finished.returncode == 2
    assert "WHALES_FLOWER_USER" in finished.stderr
    assert "--local" in finished.stderr


def _tasks(flower: str) -> dict[str, dict[str, Any]]:
    response = requests.get(f"{flower}/api/tasks", auth=AUTH, timeout=10)
    response.raise_for_status()
    tasks: dict[str, dict[str, Any]] = response.json()
    return tasks


def test_flower_needs_auth_shows_readable_tasks_and_metrics(
    flower: str, database: Database, worker: WorkerProcess
) -> None:
    assert requests.get(flower, timeout=10).status_code == 401
    assert requests.get(flower, auth=("operator", "wrong"), timeout=10).status_code == 401
    assert requests.get(flower, auth=AUTH, timeout=10).status_code == 200

    photos = all_sample_images()[:3]
    job_id = submit_archive(
        database, get_settings(), build_zip([(p.name, p.read_bytes()) for p in photos])
    )
    assert wait_for_job(database, job_id).status == "succeeded"
    image = base64.b64encode(photos[0].read_bytes()).decode()
    app = create_celery_app(get_settings())
    single_id = str(uuid.uuid4())
    send_single(app, single_id, photos[0].name, with_mask=False, image_b64=image).get(timeout=120)
    app.close()

    deadline = time.monotonic() + 30
    while True:
        tasks = _tasks(flower)
        names = {task.get("name") for task in tasks.values()}
        if {"whales.process_chunk", "whales.predict_single"} <= names:
            break
        assert time.monotonic() < deadline, f"Flower saw only {names}"
        time.sleep(0.5)

    chunk = next(t for t in tasks.values() if t.get("name") == "whales.process_chunk")
    assert str(job_id) in chunk["args"] and "0" in chunk["args"]
    single = tasks[single_id]
    assert photos[0].name in single["kwargs"]
    assert image[:64] not in single["kwargs"], "image bytes never reach the monitor"
    assert "base64 chars" in single["kwargs"]

    metrics = requests.get(f"{flower}/metrics", auth=AUTH, timeout=10)
    assert metrics.status_code == 200
    assert "flower_events_total" in metrics.text
