"""Submitting batch jobs straight to the queue (no HTTP) and waiting on them."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from sqlalchemy import func, select

from shared.blobs import BlobStore, upload_ref
from shared.db.engine import Database
from shared.db.models import DetectionRow, Job
from shared.jobs import create_batch_job
from shared.queue import create_celery_app, send_expand
from shared.schemas import TERMINAL_STATUSES
from shared.settings import Settings


def submit_archive(
    database: Database,
    settings: Settings,
    data: bytes,
    *,
    broker_url: str | None = None,
    with_mask: bool = False,
) -> uuid.UUID:
    """Store the archive, create its job and send the expand task, as the API does."""
    job_id = uuid.uuid4()
    blob = BlobStore(settings.blobs_path).save_bytes(data, upload_ref(str(job_id)))
    with database.session() as session:
        create_batch_job(
            session,
            job_id=job_id,
            archive_path=blob.ref,
            archive_name="test.zip",
            archive_bytes=blob.size,
            with_mask=with_mask,
        )
    app = create_celery_app(settings, broker_url)
    try:
        send_expand(app, str(job_id))
    finally:
        app.close()
    return job_id


def job_row(database: Database, job_id: uuid.UUID) -> Job:
    with database.session() as session:
        return session.get_one(Job, job_id, populate_existing=True)


def wait_for_job(
    database: Database,
    job_id: uuid.UUID,
    *,
    timeout: float = 120,
    until: frozenset[str] = TERMINAL_STATUSES,
) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job = job_row(database, job_id)
        if job.status in until:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job.status} after {timeout} s: {vars(job)}")
        time.sleep(0.2)


def wait_for_progress(
    database: Database, job_id: uuid.UUID, *, at_least: int, timeout: float = 120
) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job = job_row(database, job_id)
        if job.processed >= at_least or job.status in TERMINAL_STATUSES:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} processed {job.processed} after {timeout} s")
        time.sleep(0.1)


def stored_rows(database: Database, job_id: uuid.UUID) -> list[DetectionRow]:
    with database.session() as session:
        return list(
            session.execute(
                select(DetectionRow)
                .where(DetectionRow.job_id == job_id)
                .order_by(DetectionRow.position)
            ).scalars()
        )


def row_count(database: Database, job_id: uuid.UUID) -> int:
    with database.session() as session:
        return session.execute(
            select(func.count()).select_from(DetectionRow).where(DetectionRow.job_id == job_id)
        ).scalar_one()


def numbered_copies(images: list[Path], count: int) -> list[tuple[str, bytes]]:
    """``count`` archive entries cycling through ``images`` under distinct names."""
    return [
        (
            f"photo_{index:04d}_{images[index % len(images)].name}",
            images[index % len(images)].read_bytes(),
        )
        for index in range(count)
    ]
