"""Batch jobs through a real worker: expansion, skipping, counters, cancel."""

from __future__ import annotations

import time
from pathlib import Path

from shared.db.engine import Database
from shared.jobs import cancel_job
from shared.queue import chunk_task_id, create_celery_app
from shared.settings import get_settings
from tests.paths import all_sample_images
from tests.submit import numbered_copies, row_count, stored_rows, submit_archive, wait_for_job
from tests.workers import WorkerProcess
from tests.zips import build_zip, lying_zip_bomb, truncated


def test_mixed_archive_gives_one_row_per_image(
    database: Database, worker: WorkerProcess, tmp_path: Path
) -> None:
    photos = all_sample_images()
    broken = truncated(photos[0].read_bytes(), keep=0.4)
    nested = build_zip([("inner.jpg", photos[1].read_bytes())])
    entries = [(p.name, p.read_bytes()) for p in photos] + [
        ("broken.jpg", broken),
        ("notes.txt", b"field notes, not a photo"),
        ("nested.zip", nested),
        ("__MACOSX/._broken.jpg", b"resource fork"),
        ("../evil.jpg", photos[2].read_bytes()),
    ]
    job_id = submit_archive(database, get_settings(), build_zip(entries))

    job = wait_for_job(database, job_id, timeout=300)

    rows = stored_rows(database, job_id)
    assert job.status == "succeeded", job.error
    assert [row.image_ind for row in rows] == [p.name for p in photos] + ["broken.jpg"]
    assert [row.position for row in rows] == list(range(len(photos) + 1))
    broken_row = rows[-1]
    assert (broken_row.rejected, broken_row.rejection_reason) == (True, "corrupted_image")
    assert all(row.rejection_reason != "corrupted_image" for row in rows[:-1])
    assert job.skipped == 4
    assert job.skipped_detail == {
        "not_an_image": 1,
        "nested_archive": 1,
        "hidden": 1,
        "unsafe_path": 1,
    }
    assert job.total == job.processed == len(rows)
    assert job.accepted == sum(not row.rejected for row in rows)
    assert job.rejected == sum(row.rejected and row.error is None for row in rows)
    assert job.failed == 0
    assert all(row.image_sha256 and row.worker and row.model_version for row in rows[:-1])


def test_zip_bomb_is_refused_with_a_clear_error(database: Database, worker: WorkerProcess) -> None:
    settings = get_settings()
    # Entries declare 1 kB each but inflate past the per-entry limit.
    bomb = lying_zip_bomb(entry_count=3, real_size=settings.max_entry_bytes + (1 << 20))
    job_id = submit_archive(database, settings, bomb)

    job = wait_for_job(database, job_id, timeout=120)

    assert job.status == "failed"
    assert job.error_code == "archive_limits_exceeded"
    assert "inflates past" in (job.error or "")
    assert row_count(database, job_id) == 0
    # The worker survived it and still serves.
    assert worker.process.poll() is None


def test_cancel_stops_dispatched_chunks_and_keeps_written_rows(
    database: Database, worker: WorkerProcess
) -> None:
    settings = get_settings()
    entries = numbered_copies(all_sample_images(), 80)  # 20 chunks of 4
    job_id = submit_archive(database, settings, build_zip(entries))
    deadline = time.monotonic() + 120
    while row_count(database, job_id) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)

    with database.session() as session:
        pending = cancel_job(session, job_id)
    assert pending, "the job finished before it could be cancelled"
    app = create_celery_app(settings)
    app.control.revoke([chunk_task_id(str(job_id), index) for index in pending])
    app.close()

    time.sleep(5)  # a chunk that was running finishes; nothing new starts
    settled = row_count(database, job_id)
    time.sleep(3)
    job = wait_for_job(database, job_id, timeout=5)
    assert job.status == "cancelled"
    assert row_count(database, job_id) == settled
    assert 4 <= settled < 80
    assert job.processed == settled
