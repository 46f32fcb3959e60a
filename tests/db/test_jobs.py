"""The job repository against a real Postgres: idempotent chunks, exact counters."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select

from shared.db.engine import Database
from shared.db.models import DetectionRow, Job
from shared.jobs import (
    DetectionRecord,
    cancel_job,
    claim_stale_chunks,
    create_batch_job,
    failed_record,
    record_expansion,
    register_delivery,
    store_results,
    store_single,
)

MODEL = "effb4-arcface-test"


def _record(position: int, *, rejected: bool = False) -> DetectionRecord:
    return DetectionRecord(
        position=position,
        image_ind=f"img_{position}.jpg",
        bbox=[0, 0, 640, 480],
        class_animal="" if rejected else "1a71fbb72250",
        id_animal="unknown" if rejected else "humpback_whale",
        probability=0.0 if rejected else 0.8,
        is_cetacean=not rejected,
        cetacean_score=0.1 if rejected else 0.9,
        rejected=rejected,
        rejection_reason="not_a_marine_mammal" if rejected else None,
        model_version=MODEL,
        candidates=[]
        if rejected
        else [{"class_animal": "1a71fbb72250", "id_animal": "humpback_whale", "probability": 0.8}],
    )


def _running_job(db: Database, chunks: list[list[tuple[int, str]]]) -> uuid.UUID:
    with db.session() as session:
        job, created = create_batch_job(
            session, archive_path="/x.zip", archive_name="x.zip", archive_bytes=10, with_mask=False
        )
        assert created
        assert record_expansion(
            session,
            job.id,
            chunks=chunks,
            skipped=2,
            skipped_detail={"not_an_image": 2},
            model_version=MODEL,
        )
        return job.id


def test_same_chunk_stored_twice_keeps_each_row_once(clean_database: Database) -> None:
    db = clean_database
    chunk = [(0, "a.jpg"), (1, "b.jpg"), (2, "c.jpg")]
    job_id = _running_job(db, [chunk, [(3, "d.jpg")]])
    records = [_record(0), _record(1, rejected=True), _record(2)]

    with db.session() as session:
        first = store_results(session, job_id, records, chunk_index=0, complete_chunk=True)
    with db.session() as session:  # the retried delivery of the same chunk
        second = store_results(session, job_id, records, chunk_index=0, complete_chunk=True)

    assert (first.inserted, first.chunk_completed) == (3, True)
    assert (second.inserted, second.chunk_completed, second.job_finalized) == (0, False, False)
    with db.session() as session:
        positions = (
            session.execute(select(DetectionRow.position).where(DetectionRow.job_id == job_id))
            .scalars()
            .all()
        )
        job = session.get_one(Job, job_id)
    assert sorted(positions) == [0, 1, 2]
    assert (job.processed, job.accepted, job.rejected, job.failed) == (3, 2, 1, 0)
    assert (job.chunks_done, job.status) == (1, "running")


def test_single_image_is_stored_once_with_its_finished_job(clean_database: Database) -> None:
    job_id = uuid.uuid4()
    record = _record(0)
    started = datetime.now(UTC)

    with clean_database.session() as session:
        first = store_single(session, job_id, record, with_mask=True, started_at=started)
    with clean_database.session() as session:  # a redelivered task stores it again
        again = store_single(session, job_id, _record(0, rejected=True), with_mask=True,
                             started_at=started)  # fmt: skip

    assert first == again
    with clean_database.session() as session:
        job = session.get_one(Job, job_id)
        rows = session.scalars(select(DetectionRow).where(DetectionRow.job_id == job_id)).all()
    assert [(row.id, row.rejected, row.candidates) for row in rows] == [
        (first, False, record.candidates)
    ]
    assert (job.kind, job.status, job.total, job.processed, job.accepted, job.rejected) == (
        "single", "succeeded", 1, 1, 1, 0,
    )  # fmt: skip
    assert (job.with_mask, job.model_version, job.started_at) == (True, MODEL, started)
    assert job.finished_at is not None


def test_last_chunk_finalizes_exactly_once(clean_database: Database) -> None:
    db = clean_database
    job_id = _running_job(db, [[(0, "a.jpg")], [(1, "b.jpg")]])
    with db.session() as session:
        assert not store_results(
            session, job_id, [_record(0)], chunk_index=0, complete_chunk=True
        ).job_finalized
    with db.session() as session:
        last = store_results(
            session,
            job_id,
            [failed_record(1, "b.jpg", error="worker_lost", model_version=MODEL, worker="w1")],
            chunk_index=1,
            complete_chunk=True,
        )
    with db.session() as session:
        again = store_results(session, job_id, [], chunk_index=1, complete_chunk=True)
        job = session.get_one(Job, job_id)
    assert last.job_finalized and not again.job_finalized
    assert (job.status, job.total, job.processed, job.accepted, job.failed, job.skipped) == (
        "succeeded",
        2,
        2,
        1,
        1,
        2,
    )
    assert job.finished_at is not None


def test_idempotency_key_returns_the_existing_job(clean_database: Database) -> None:
    with clean_database.session() as session:
        first, created_first = create_batch_job(
            session,
            archive_path="/a.zip",
            archive_name="a.zip",
            archive_bytes=1,
            with_mask=False,
            idempotency_key="upload-42",
        )
    with clean_database.session() as session:
        second, created_second = create_batch_job(
            session,
            archive_path="/b.zip",
            archive_name="a.zip",
            archive_bytes=1,
            with_mask=False,
            idempotency_key="upload-42",
        )
        count = session.execute(select(func.count()).select_from(Job)).scalar_one()
    assert created_first and not created_second
    assert second.id == first.id and count == 1


def test_deliveries_are_counted_and_cancel_keeps_rows(clean_database: Database) -> None:
    db = clean_database
    job_id = _running_job(db, [[(0, "a.jpg")], [(1, "b.jpg")]])
    for expected in (1, 2):
        with db.session() as session:
            delivery = register_delivery(session, job_id, 0)
            assert delivery is not None and delivery.deliveries == expected
    with db.session() as session:
        store_results(session, job_id, [_record(0)], chunk_index=0, complete_chunk=True)
    with db.session() as session:
        assert cancel_job(session, job_id) == [1]
    with db.session() as session:
        # A chunk finishing after the cancel stores its rows but cannot succeed the job.
        late = store_results(session, job_id, [_record(1)], chunk_index=1, complete_chunk=True)
        job = session.get_one(Job, job_id)
    assert not late.job_finalized
    assert (job.status, job.processed) == ("cancelled", 2)
    with db.session() as session:
        assert cancel_job(session, uuid.uuid4()) is None


def test_stale_chunks_are_claimed_once(clean_database: Database) -> None:
    db = clean_database
    job_id = _running_job(db, [[(0, "a.jpg")], [(1, "b.jpg")]])
    with db.session() as session:
        session.execute(Job.__table__.update().where(Job.id == job_id).values(status="running"))
        from shared.db.models import JobChunk

        session.execute(
            JobChunk.__table__.update()
            .where(JobChunk.job_id == job_id, JobChunk.chunk_index == 1)
            .values(updated_at=func.now() - func.make_interval(0, 0, 0, 0, 0, 10))
        )
    with db.session() as session:
        assert claim_stale_chunks(session, older_than_s=60) == [(job_id, 1)]
    with db.session() as session:
        assert claim_stale_chunks(session, older_than_s=60) == []
