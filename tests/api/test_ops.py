"""Health, readiness and metrics, in one process and under several gunicorn workers."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from tests.api.conftest import client_for
from tests.api.helpers import photos, post_file
from tests.api.live import whales_api
from tests.services import PrivateRedis
from tests.workers import WorkerProcess
from tests.zips import build_zip


def _samples(text: str, name: str) -> dict[str, float]:
    """`name{labels} value` lines of a Prometheus text, by their label part."""
    found = {}
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(\{{[^}}]*\}})? (\S+)", line)
        if match:
            found[match.group(1) or ""] = float(match.group(2))
    return found


def test_health_names_the_workers_device(client: FlaskClient, worker: WorkerProcess) -> None:
    response = client.get("/health")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "device": "cpu"}


def test_ready_with_a_warm_worker(client: FlaskClient, worker: WorkerProcess) -> None:
    response = client.get("/ready")

    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["checks"] == {"database": "ok", "broker": "ok", "worker": "ok"}
    assert body["workers"] >= 1


def test_not_ready_names_what_is_down(
    make_app: Callable[..., Flask], private_redis: PrivateRedis
) -> None:
    client = client_for(make_app(broker_url=private_redis.url))

    no_worker = client.get("/ready")
    private_redis.stop()
    no_broker = client.get("/ready")
    still_alive = client.get("/health")

    assert no_worker.status_code == 503
    assert no_worker.headers["Retry-After"] == "5"
    assert no_worker.get_json()["down"] == ["worker"]
    assert "worker" in no_worker.get_json()["message"]
    assert no_broker.status_code == 503
    assert no_broker.get_json()["checks"]["broker"] == "down"
    assert "broker" in no_broker.get_json()["down"]
    assert still_alive.status_code == 200


def test_metrics_in_one_process(make_app: Callable[..., Flask], worker: WorkerProcess) -> None:
    client = client_for(make_app())
    name, data = photos()[0]
    assert (
        post_file(client, "/v1/predict-single", "file", name, data, "image/jpeg").status_code == 200
    )
    assert (
        post_file(client, "/v1/predict-single", "file", "x.txt", b"x", "text/plain").status_code
        == 415
    )
    assert client.get("/v1/jobs/nope").status_code == 404
    batch = post_file(
        client, "/v1/predict-batch", "archive", "a.zip", build_zip(photos(count=2)),
        "application/zip",
    )  # fmt: skip
    assert batch.status_code == 200

    text = client.get("/metrics").get_data(as_text=True)

    requests = _samples(text, "requests_total")
    assert requests['{method="POST",route="/v1/predict-single",status="200"}'] == 1
    assert requests['{method="POST",route="/v1/predict-single",status="415"}'] == 1
    assert requests['{method="GET",route="/v1/jobs/<job_id>",status="404"}'] == 1
    errors = _samples(text, "errors_total")
    assert errors['{code="unsupported_media_type",route="/v1/predict-single",status="415"}'] == 1
    assert errors['{code="job_not_found",route="/v1/jobs/<job_id>",status="404"}'] == 1
    assert _samples(text, "input_rejections_total")['{reason="unsupported_media_type"}'] == 1
    latency = _samples(text, "request_duration_seconds_count")
    assert latency['{method="POST",route="/v1/predict-single",status="200"}'] == 1
    # Worker-side counts from Redis: at least the three images above.
    assert _samples(text, "predictions_total")[""] >= 3
    assert set(_samples(text, "rejections_by_reason")) >= {
        '{reason="not_a_marine_mammal"}',
        '{reason="low_confidence"}',
        '{reason="corrupted_image"}',
    }
    assert "" in _samples(text, "rejections_total")
    assert _samples(text, "jobs")['{status="succeeded"}'] >= 2
    assert set(_samples(text, "queue_depth")) == {'{queue="interactive"}', '{queue="batch"}'}
    assert _samples(text, "uptime_seconds")[""] > 0


def _health_count_per_process(metrics_dir: Path) -> list[float]:
    """/health requests counted by each process, from its own metrics file."""
    from prometheus_client.multiprocess import MultiProcessCollector

    counts = []
    for path in sorted(metrics_dir.glob("counter_*.db")):
        for metric in MultiProcessCollector.merge([str(path)], accumulate=True):
            for sample in metric.samples:
                if sample.name == "requests_total" and sample.labels.get("route") == "/health":
                    counts.append(sample.value)
    return counts


def test_metrics_add_up_across_gunicorn_workers(stack_env: dict[str, str], tmp_path: Path) -> None:
    calls = 64

    def call_health(_: int) -> int:
        with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
            return int(response.status)

    # Processes are recycled every 10 requests or so: the calls are answered
    # by many processes, most of them gone by the time of the scrape.
    options = ("--max-requests", "10")
    with whales_api(stack_env, tmp_path / "api.log", workers=2, extra=options) as url:
        with ThreadPoolExecutor(max_workers=4) as pool:
            assert set(pool.map(call_health, range(calls))) == {200}
        port = url.rsplit(":", 1)[-1]
        per_process = _health_count_per_process(
            Path(stack_env["WHALES_DATA_DIR"]) / "run" / f"api-metrics-{port}"
        )
        scrapes = []
        for _ in range(6):  # each scrape is answered by whichever process is free
            with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
                text = response.read().decode()
            scrapes.append(
                _samples(text, "requests_total")['{method="GET",route="/health",status="200"}']
            )

    expected = calls + 1  # the start-up probe of whales_api() counts too
    assert len([count for count in per_process if count > 0]) >= 4, per_process
    assert sum(per_process) == expected
    # Every process reports the sum over all of them, not its own share.
    assert scrapes == [expected] * len(scrapes)
