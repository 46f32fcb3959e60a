"""Reliability under faults, with real workers, a real Redis and Postgres.

Each test runs its own worker on a Redis server of its own, so killing,
restarting or poisoning them never touches the rest of the run.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from shared.db.engine import Database
from shared.queue import create_celery_app, send_single
from shared.settings import Settings
from tests.paths import all_sample_images
from tests.services import PrivateRedis
from tests.submit import (
    job_row,
    numbered_copies,
    row_count,
    stored_rows,
    submit_archive,
    wait_for_job,
    wait_for_progress,
)
from tests.workers import WorkerProcess, service_environment, start_worker
from tests.zips import build_zip

pytestmark = pytest.mark.slow


def _env(stack_env: dict[str, str], broker_url: str, **overrides: str) -> dict[str, str]:
    return service_environment(
        database_url=stack_env["WHALES_DATABASE_URL"],
        broker_url=broker_url,
        bundle=Path(stack_env["WHALES_MODEL_DIR"]),
        data_dir=Path(stack_env["WHALES_DATA_DIR"]),
        **overrides,
    )


def _settings_for(env: dict[str, str]) -> Settings:
    return Settings(
        **{
            key.removeprefix("WHALES_").lower(): value
            for key, value in env.items()
            if key.startswith("WHALES_")
        }
    )


def _assert_finishes_with_one_row_per_image(
    database: Database, job_id: uuid.UUID, images: int
) -> None:
    job = wait_for_job(database, job_id, timeout=300)
    assert job.status == "succeeded"
    rows = stored_rows(database, job_id)
    positions = Counter(row.position for row in rows)
    assert len(rows) == images
    assert sorted(positions) == list(range(images))
    assert max(positions.values()) == 1
    job = job_row(database, job_id)
    assert job.total == job.processed == images


def _submit_copies(
    database: Database, env: dict[str, str], broker_url: str, images: int
) -> uuid.UUID:
    """A job of ``images`` numbered copies of the sample photos, on ``broker_url``."""
    archive = build_zip(numbered_copies(all_sample_images(), images))
    return submit_archive(database, _settings_for(env), archive, broker_url=broker_url)


def _job_under_way(
    database: Database,
    stack_env: dict[str, str],
    private_redis: PrivateRedis,
    workers_started: list[WorkerProcess],
    tmp_path: Path,
    images: int,
) -> uuid.UUID:
    """A batch worker on the private broker, and a job of ``images`` copies
    that has stored its first rows."""
    env = _env(stack_env, private_redis.url)
    workers_started.append(start_worker(env, tmp_path / "worker.log", queues="batch"))
    job_id = _submit_copies(database, env, private_redis.url, images)
    wait_for_progress(database, job_id, at_least=4, timeout=180)
    return job_id


@pytest.fixture
def workers_started(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for process in started:
        process.stop()


def test_worker_killed_mid_chunk_loses_and_duplicates_nothing(
    database: Database,
    stack_env: dict[str, str],
    private_redis: PrivateRedis,
    workers_started: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    env = _env(stack_env, private_redis.url)
    first = start_worker(env, tmp_path / "first.log", queues="batch")
    workers_started.append(first)
    images = 64
    job_id = _submit_copies(database, env, private_redis.url, images)
    # Kill it while a chunk is running: some rows stored, not all.
    progressed = wait_for_progress(database, job_id, at_least=5, timeout=180)
    assert progressed.processed < images, "the job finished before the kill"
    first.kill()
    assert row_count(database, job_id) < images

    second = start_worker(env, tmp_path / "second.log", queues="batch")
    workers_started.append(second)
    _assert_finishes_with_one_row_per_image(database, job_id, images)


def test_broker_restart_mid_job(
    database: Database,
    stack_env: dict[str, str],
    private_redis: PrivateRedis,
    workers_started: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    images = 48
    job_id = _job_under_way(database, stack_env, private_redis, workers_started, tmp_path, images)

    private_redis.stop()  # no persistence: every queued message is gone
    time.sleep(3)
    private_redis.start()

    _assert_finishes_with_one_row_per_image(database, job_id, images)


def test_database_refusing_connections_mid_job(
    database: Database,
    stack_env: dict[str, str],
    private_redis: PrivateRedis,
    workers_started: list[WorkerProcess],
    pg_admin_url: str,
    tmp_path: Path,
) -> None:
    images = 48
    job_id = _job_under_way(database, stack_env, private_redis, workers_started, tmp_path, images)

    name = make_url(database.url).database
    assert name
    database.dispose()
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name))
        )
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            time.sleep(5)  # every connection attempt of the workers is refused meanwhile
        finally:
            admin.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(
                    sql.Identifier(name)
                )
            )

    _assert_finishes_with_one_row_per_image(database, job_id, images)


def test_poison_image_ends_as_a_failed_row_after_the_delivery_cap(
    database: Database,
    stack_env: dict[str, str],
    private_redis: PrivateRedis,
    workers_started: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    photos = all_sample_images()
    poison = photos[3]
    env = _env(
        stack_env,
        private_redis.url,
        fault_crash_sha256=hashlib.sha256(poison.read_bytes()).hexdigest(),
        max_deliveries="2",
    )
    worker = start_worker(env, tmp_path / "worker.log", queues="batch")
    workers_started.append(worker)
    entries = [(p.name, p.read_bytes()) for p in photos[:10]]
    job_id = submit_archive(
        database, _settings_for(env), build_zip(entries), broker_url=private_redis.url
    )

    job = wait_for_job(database, job_id, timeout=300)

    assert job.status == "succeeded"
    rows = stored_rows(database, job_id)
    assert [row.image_ind for row in rows] == [p.name for p in photos[:10]]
    failed = [row for row in rows if row.error is not None]
    assert [row.image_ind for row in failed] == [poison.name]
    assert failed[0].rejected and failed[0].rejection_reason is None
    assert (job.failed, job.processed) == (1, 10)
    assert "crashed its worker" in worker.log_tail(400)


def test_poison_single_image_is_answered_as_failed_after_the_delivery_cap(
    database: Database,
    stack_env: dict[str, str],
    private_redis: PrivateRedis,
    workers_started: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    poison = all_sample_images()[3]
    data = poison.read_bytes()
    env = _env(
        stack_env,
        private_redis.url,
        fault_crash_sha256=hashlib.sha256(data).hexdigest(),
        max_deliveries="2",
    )
    worker = start_worker(env, tmp_path / "worker.log", queues="interactive")
    workers_started.append(worker)
    job_id = str(uuid.uuid4())
    app = create_celery_app(_settings_for(env), private_redis.url)
    try:
        answer = send_single(
            app, job_id, poison.name, with_mask=False, image_b64=base64.b64encode(data).decode()
        ).get(timeout=240)
    finally:
        app.close()

    assert answer == {
        "ok": False,
        "code": "processing_failed",
        "message": "The image crashed the worker repeatedly.",
    }
    job = job_row(database, uuid.UUID(job_id))
    rows = stored_rows(database, uuid.UUID(job_id))
    assert (job.kind, job.status, job.failed, job.processed) == ("single", "succeeded", 1, 1)
    assert [(row.image_ind, row.error) for row in rows] == [(poison.name, "worker_lost")]
    assert worker.process.poll() is None, "the worker survives its pool's crashes"
