"""Single images through the interactive queue of a real worker, and worker start-up."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis
from sqlalchemy import select

from shared.blobs import BlobStore, single_image_ref
from shared.db.engine import Database
from shared.db.models import DetectionRow, Job
from shared.queue import create_celery_app, send_single, single_starts_key
from shared.schemas import Detection
from shared.settings import get_settings
from shared.worker_registry import live_workers
from tests.paths import REPO_ROOT, manifest
from tests.workers import WorkerProcess
from tests.zips import truncated

TIMEOUT_S = 120


def _predict(job_id: str, name: str, **image: str) -> dict[str, object]:
    app = create_celery_app(get_settings())
    try:
        return send_single(app, job_id, name, with_mask=True, **image).get(timeout=TIMEOUT_S)
    finally:
        app.close()


def test_single_image_returns_and_stores_a_detection(
    database: Database, worker: WorkerProcess
) -> None:
    photo = next(p for p in manifest() if p.label == "cetacean").path
    job_id = str(uuid.uuid4())

    answer = _predict(job_id, photo.name, image_b64=base64.b64encode(photo.read_bytes()).decode())

    assert answer["ok"] is True
    detection = Detection.model_validate(answer["detection"])
    assert detection.image_ind == photo.name
    assert detection.mask and base64.b64decode(detection.mask).startswith(b"\x89PNG")
    with database.session() as session:
        job = session.get_one(Job, uuid.UUID(job_id))
        row = session.execute(
            select(DetectionRow).where(DetectionRow.job_id == job.id)
        ).scalar_one()
    assert (job.kind, job.status, job.total, job.processed) == ("single", "succeeded", 1, 1)
    assert row.id == detection.detection_id
    assert row.class_animal == detection.class_animal
    assert row.image_sha256 == detection.image_sha256


def test_a_first_delivery_counts_its_start_and_releases_its_lease(
    database: Database, worker: WorkerProcess, redis_client: redis.Redis
) -> None:
    photo = next(p for p in manifest() if p.label == "cetacean").path
    job_id = str(uuid.uuid4())

    answer = _predict(job_id, photo.name, image_b64=base64.b64encode(photo.read_bytes()).decode())

    assert answer["ok"] is True
    # Its count was read only after the models ran, but it was sent before.
    assert redis_client.get(single_starts_key(job_id)) == b"1"
    assert 0 < redis_client.ttl(single_starts_key(job_id)) <= 3600
    # The lease that paused batch work goes once the answer is out.
    deadline = time.monotonic() + 10
    while _leases_held_by(redis_client, job_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _leases_held_by(redis_client, job_id)


def _leases_held_by(client: redis.Redis, task_id: str) -> list[bytes]:
    return [
        key
        for key in client.scan_iter(match="whales:interactive:*")
        if client.zscore(key, task_id) is not None
    ]


def test_large_single_image_travels_as_a_blob_reference(
    database: Database, worker: WorkerProcess
) -> None:
    photo = next(p for p in manifest() if p.label == "cetacean").path
    job_id = str(uuid.uuid4())
    blobs = BlobStore(get_settings().blobs_path)
    ref = blobs.save_bytes(photo.read_bytes(), single_image_ref(job_id)).ref

    answer = _predict(job_id, photo.name, blob_ref=ref)

    assert answer["ok"] is True
    assert not blobs.path(ref).exists(), "the worker removes the blob once it is stored"


def test_undecodable_single_image_is_refused_without_a_row(
    database: Database, worker: WorkerProcess
) -> None:
    photo = next(p for p in manifest() if p.label == "cetacean").path
    job_id = str(uuid.uuid4())
    broken = truncated(photo.read_bytes(), keep=0.3)

    answer = _predict(job_id, "broken.jpg", image_b64=base64.b64encode(broken).decode())

    assert answer["ok"] is False
    assert answer["code"] == "corrupted_image"
    with database.session() as session:
        job = session.get_one(Job, uuid.UUID(job_id))
        rows = session.execute(select(DetectionRow).where(DetectionRow.job_id == job.id)).all()
    assert job.status == "failed"
    assert rows == []


def test_worker_reports_what_it_loaded(worker: WorkerProcess, redis_client: redis.Redis) -> None:
    mine = [info for info in live_workers(redis_client) if info.pid in worker.pool_pids()]

    assert mine, "the worker's pool process publishes a heartbeat"
    assert mine[0].model_version.endswith("untrained-random")
    assert mine[0].device == "cpu"
    assert set(mine[0].queues) == {"interactive", "batch"}
    assert "models loaded in" in worker.log_tail(400)


def test_worker_refuses_to_start_without_a_bundle(tmp_path: Path) -> None:
    env = {**os.environ, "WHALES_MODEL_DIR": str(tmp_path / "no-bundle-here")}

    finished = subprocess.run(
        [sys.executable, "-m", "cli.main", "worker"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert finished.returncode == 2
    assert "No model bundle" in finished.stderr
    assert "whales models make-test-bundle" in finished.stderr
    assert "whales models pull" in finished.stderr
