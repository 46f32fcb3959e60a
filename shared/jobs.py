"""Jobs and their detections: every state change of the queue, in SQL.

The ``jobs`` row is the truth about a job. Counters move in the same
transaction that inserts the rows they count, by the number of rows actually
inserted, so a retried chunk moves nothing twice; the transaction that marks
the last chunk done flips ``running`` to ``succeeded`` with a conditional
UPDATE, so exactly one task finalizes a job.
"""

from __future__ import annotations

import functools
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from shared.db.driver_statement import DriverStatement
from shared.db.models import DetectionRow, ImageAttempt, Job, JobChunk
from shared.schemas import TERMINAL_STATUSES


@dataclass
class DetectionRecord:
    """What a worker stores for one image: a Detection plus its provenance."""

    position: int
    image_ind: str
    bbox: list[int]
    class_animal: str
    id_animal: str
    probability: float
    is_cetacean: bool
    cetacean_score: float
    rejected: bool
    model_version: str
    rejection_reason: str | None = None
    error: str | None = None
    mask: str | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    image_sha256: str | None = None
    byte_size: int | None = None
    width: int | None = None
    height: int | None = None
    captured_at: datetime | None = None
    gps_lat: float | None = None
    gps_lon: float | None = None
    decode_ms: float | None = None
    gate_ms: float | None = None
    identify_ms: float | None = None
    mask_ms: float | None = None
    worker: str | None = None

    @property
    def outcome(self) -> str:
        """Which job counter this image moves: accepted, rejected or failed."""
        if self.error is not None:
            return "failed"
        return "rejected" if self.rejected else "accepted"


def failed_record(
    position: int, image_ind: str, *, error: str, model_version: str, worker: str | None
) -> DetectionRecord:
    """The row of an image that could not be processed at all (e.g. it kept
    killing its worker): rejected without a seed reason, counted as failed."""
    return DetectionRecord(
        position=position,
        image_ind=image_ind,
        bbox=[0, 0, 0, 0],
        class_animal="",
        id_animal="unknown",
        probability=0.0,
        is_cetacean=False,
        cetacean_score=0.0,
        rejected=True,
        rejection_reason=None,
        error=error,
        model_version=model_version,
        worker=worker,
    )


@dataclass(frozen=True)
class StoreOutcome:
    inserted_records: list[DetectionRecord]
    counts: dict[str, int]
    chunk_completed: bool
    job_finalized: bool

    @property
    def inserted(self) -> int:
        return len(self.inserted_records)


@dataclass(frozen=True)
class ChunkDelivery:
    """A chunk task's view of its chunk when a delivery starts."""

    job_status: str
    chunk_status: str
    deliveries: int
    entries: list[tuple[int, str]]
    with_mask: bool
    archive_path: str | None
    model_version: str | None


# --- creating jobs -----------------------------------------------------------


def create_batch_job(
    session: Session,
    *,
    archive_path: str,
    archive_name: str | None,
    archive_bytes: int,
    with_mask: bool,
    idempotency_key: str | None = None,
    job_id: uuid.UUID | None = None,
) -> tuple[Job, bool]:
    """Insert a queued batch job; with an idempotency key already used, return
    that job instead. The boolean says whether a new job was created."""
    values = {
        "id": job_id or uuid.uuid4(),
        "kind": "batch",
        "status": "queued",
        "archive_path": archive_path,
        "archive_name": archive_name,
        "archive_bytes": archive_bytes,
        "with_mask": with_mask,
        "idempotency_key": idempotency_key,
    }
    statement = insert(Job).values(**values)
    if idempotency_key is not None:
        statement = statement.on_conflict_do_nothing(index_elements=[Job.idempotency_key])
    new_id = session.execute(statement.returning(Job.id)).scalar_one_or_none()
    if new_id is None:
        existing = session.execute(
            select(Job).where(Job.idempotency_key == idempotency_key)
        ).scalar_one()
        return existing, False
    return session.get_one(Job, new_id), True


def get_job(session: Session, job_id: uuid.UUID) -> Job | None:
    return session.get(Job, job_id, populate_existing=True)


# --- expanding a batch -----------------------------------------------------------


def record_expansion(
    session: Session,
    job_id: uuid.UUID,
    *,
    chunks: Sequence[Sequence[tuple[int, str]]],
    skipped: int,
    skipped_detail: dict[str, int],
    model_version: str,
) -> bool:
    """Move a queued job to running with its chunks; False if it was not queued
    (a redelivered expand task, or a job cancelled meanwhile)."""
    total = sum(len(chunk) for chunk in chunks)
    now = func.now()
    moved = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(
            status="running" if total else "succeeded",
            total=total,
            skipped=skipped,
            skipped_detail=skipped_detail,
            chunks_total=len(chunks),
            model_version=model_version,
            started_at=now,
            updated_at=now,
            finished_at=None if total else now,
        )
        .returning(Job.id)
    ).scalar_one_or_none()
    if moved is None:
        return False
    if chunks:
        session.execute(
            insert(JobChunk),
            [
                {"job_id": job_id, "chunk_index": index, "entries": [list(e) for e in chunk]}
                for index, chunk in enumerate(chunks)
            ],
        )
    return True


def fail_job(session: Session, job_id: uuid.UUID, *, code: str, message: str) -> bool:
    """Mark a job failed unless it already ended; True if this call ended it."""
    return (
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.not_in(TERMINAL_STATUSES))
            .values(
                status="failed",
                error_code=code,
                error=message,
                finished_at=func.now(),
                updated_at=func.now(),
            )
            .returning(Job.id)
        ).scalar_one_or_none()
        is not None
    )


def cancel_job(session: Session, job_id: uuid.UUID) -> list[int] | None:
    """Cancel a job that has not ended. Returns the indexes of its chunks still
    pending (their tasks are to be revoked), or None for an unknown job.
    Rows already written stay."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        return None
    if job.status in TERMINAL_STATUSES:
        return []
    job.status = "cancelled"
    job.finished_at = job.updated_at = datetime.now().astimezone()
    pending = session.execute(
        select(JobChunk.chunk_index).where(JobChunk.job_id == job_id, JobChunk.status == "pending")
    ).scalars()
    return list(pending)


# --- chunk deliveries ------------------------------------------------------------


def register_delivery(
    session: Session, job_id: uuid.UUID, chunk_index: int
) -> ChunkDelivery | None:
    """Count one more delivery of a chunk's task (committed before any work, so a
    worker that dies mid-chunk has left its mark). None for an unknown chunk."""
    row = session.execute(
        update(JobChunk)
        .where(JobChunk.job_id == job_id, JobChunk.chunk_index == chunk_index)
        .values(deliveries=JobChunk.deliveries + 1, updated_at=func.now())
        .returning(JobChunk.deliveries, JobChunk.status, JobChunk.entries)
    ).one_or_none()
    if row is None:
        return None
    job = session.get_one(Job, job_id)
    return ChunkDelivery(
        job_status=job.status,
        chunk_status=row.status,
        deliveries=row.deliveries,
        entries=[(int(position), str(name)) for position, name in row.entries],
        with_mask=job.with_mask,
        archive_path=job.archive_path,
        model_version=job.model_version,
    )


def positions_with_rows(session: Session, job_id: uuid.UUID, positions: Sequence[int]) -> set[int]:
    rows = session.execute(
        select(DetectionRow.position).where(
            DetectionRow.job_id == job_id, DetectionRow.position.in_(positions)
        )
    ).scalars()
    return set(rows)


def bump_image_attempt(session: Session, job_id: uuid.UUID, position: int) -> int:
    """One more start of one image; returns how many starts it has had."""
    statement = insert(ImageAttempt).values(job_id=job_id, position=position, attempts=1)
    statement = statement.on_conflict_do_update(
        index_elements=[ImageAttempt.job_id, ImageAttempt.position],
        set_={"attempts": ImageAttempt.attempts + 1, "last_attempt_at": func.now()},
    )
    return int(session.execute(statement.returning(ImageAttempt.attempts)).scalar_one())


def touch_chunk(session: Session, job_id: uuid.UUID, chunk_index: int) -> None:
    """Show progress so the janitor does not think the chunk was lost."""
    session.execute(
        update(JobChunk)
        .where(JobChunk.job_id == job_id, JobChunk.chunk_index == chunk_index)
        .values(updated_at=func.now())
    )


# --- storing results ------------------------------------------------------------------


def _insert_detections(
    session: Session, job_id: uuid.UUID, records: Sequence[DetectionRecord]
) -> list[DetectionRecord]:
    """Insert rows; a (job, position) already stored is left as it is. Returns the
    records that were actually inserted."""
    if not records:
        return []
    statement = (
        insert(DetectionRow)
        .values([{"job_id": job_id, **asdict(record)} for record in records])
        .on_conflict_do_nothing(index_elements=[DetectionRow.job_id, DetectionRow.position])
        .returning(DetectionRow.position)
    )
    inserted = set(session.execute(statement).scalars())
    return [record for record in records if record.position in inserted]


def store_results(
    session: Session,
    job_id: uuid.UUID,
    records: Sequence[DetectionRecord],
    *,
    chunk_index: int | None = None,
    complete_chunk: bool = False,
) -> StoreOutcome:
    """Store a batch's detections and move its counters, in the caller's
    transaction. With ``complete_chunk`` the chunk is marked done and, if it was
    the last one, the job succeeds."""
    inserted = _insert_detections(session, job_id, records)
    counts = Counter(record.outcome for record in inserted)
    chunk_completed = False
    if complete_chunk and chunk_index is not None:
        chunk_completed = (
            session.execute(
                update(JobChunk)
                .where(
                    JobChunk.job_id == job_id,
                    JobChunk.chunk_index == chunk_index,
                    JobChunk.status == "pending",
                )
                .values(status="done", completed_at=func.now(), updated_at=func.now())
                .returning(JobChunk.chunk_index)
            ).scalar_one_or_none()
            is not None
        )
    if inserted or chunk_completed:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                processed=Job.processed + len(inserted),
                accepted=Job.accepted + counts["accepted"],
                rejected=Job.rejected + counts["rejected"],
                failed=Job.failed + counts["failed"],
                chunks_done=Job.chunks_done + int(chunk_completed),
                updated_at=func.now(),
            )
        )
    finalized = chunk_completed and (
        session.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.status == "running",
                Job.chunks_done == Job.chunks_total,
            )
            .values(status="succeeded", finished_at=func.now())
            .returning(Job.id)
        ).scalar_one_or_none()
        is not None
    )
    return StoreOutcome(inserted, dict(counts), chunk_completed, finalized)


def _single_job(job_id: Any, *, with_mask: Any, started_at: Any, **values: Any) -> Any:
    """INSERT of a single-image job (a job of one image), finished. Values may
    be literals or bound parameters."""
    jobs = cast(Table, Job.__table__)
    return (
        insert(jobs)
        .values(
            id=job_id,
            kind="single",
            total=1,
            chunks_total=1,
            with_mask=with_mask,
            started_at=started_at,
            finished_at=func.now(),
            updated_at=func.now(),
            **values,
        )
        .on_conflict_do_nothing(index_elements=[jobs.c.id])
    )


# Columns of a single image's job that depend on the image's outcome.
_SINGLE_JOB_COUNTERS = ("status", "processed", "accepted", "rejected", "failed", "chunks_done")


@functools.cache
def _store_single_statement() -> Any:
    """The one statement that stores a single image, built once per process.

    Everything that varies is a bound parameter, so each call only binds
    values: building the INSERT from ``.values(**record)`` and computing its
    cache key cost about a millisecond per image, on the path a client waits
    on. Parameter names are the DetectionRecord's fields plus ``job_id``,
    ``with_mask``, ``started_at`` and ``job_<counter>``.
    """
    jobs, detections = cast(Table, Job.__table__), cast(Table, DetectionRow.__table__)
    job = _single_job(
        bindparam("job_id", type_=jobs.c.id.type),
        with_mask=bindparam("with_mask", type_=jobs.c.with_mask.type),
        started_at=bindparam("started_at", type_=jobs.c.started_at.type),
        model_version=bindparam("model_version", type_=jobs.c.model_version.type),
        error=None,
        **{
            name: bindparam(f"job_{name}", type_=jobs.c[name].type) for name in _SINGLE_JOB_COUNTERS
        },
    ).cte("single_job")
    row_values = {
        name: bindparam(name, type_=detections.c[name].type)
        for name in (f.name for f in fields(DetectionRecord))
    }
    # The row's foreign key is checked at the end of the statement, when the
    # job of the CTE exists.
    return (
        insert(detections)
        .values(job_id=bindparam("job_id", type_=detections.c.job_id.type), **row_values)
        .on_conflict_do_nothing(index_elements=[detections.c.job_id, detections.c.position])
        .returning(detections.c.id)
        .add_cte(job)
    )


@functools.cache
def _store_single_driver(dialect: Dialect) -> DriverStatement:
    return DriverStatement.compile(_store_single_statement(), dialect)


def store_single(
    session: Session | Connection,
    job_id: uuid.UUID,
    record: DetectionRecord,
    *,
    with_mask: bool,
    started_at: datetime,
) -> int:
    """A single image is history too: its job, finished, and its row, in one
    statement (a client is waiting, see :mod:`shared.db.driver_statement`),
    which may run on an autocommit connection. A retry that finds them stored
    keeps them as they are. Returns the detection's id."""
    outcome = record.outcome
    parameters = {
        **{f.name: getattr(record, f.name) for f in fields(DetectionRecord)},
        "job_id": job_id,
        "with_mask": with_mask,
        "started_at": started_at,
        "job_status": "succeeded",
        "job_processed": 1,
        "job_accepted": int(outcome == "accepted"),
        "job_rejected": int(outcome == "rejected"),
        "job_failed": int(outcome == "failed"),
        "job_chunks_done": 1,
    }
    connection = session.connection() if isinstance(session, Session) else session
    detection_id = _store_single_driver(connection.dialect).first_column(connection, parameters)
    if detection_id is not None:
        return int(detection_id)
    return int(
        session.execute(
            select(DetectionRow.id).where(
                DetectionRow.job_id == job_id, DetectionRow.position == record.position
            )
        ).scalar_one()
    )


def refuse_single(
    session: Session | Connection,
    job_id: uuid.UUID,
    *,
    with_mask: bool,
    started_at: datetime,
    code: str,
    message: str,
) -> None:
    """A single image that could not be decoded: a failed job, no row."""
    session.execute(
        _single_job(
            job_id,
            with_mask=with_mask,
            started_at=started_at,
            status="failed",
            error_code=code,
            error=message,
        )
    )


# --- the janitor's queries --------------------------------------------------------------


def claim_stale_chunks(
    session: Session, *, older_than_s: float, limit: int = 100
) -> list[tuple[uuid.UUID, int]]:
    """Pending chunks of running jobs with no sign of life for ``older_than_s``:
    their message was probably lost (a broker restart without persistence).
    Claimed rows get a fresh timestamp so no other janitor re-sends them too."""
    candidates = (
        select(JobChunk.job_id, JobChunk.chunk_index)
        .join(Job, Job.id == JobChunk.job_id)
        .where(
            JobChunk.status == "pending",
            Job.status == "running",
            JobChunk.updated_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than_s),
        )
        .limit(limit)
        .with_for_update(of=JobChunk, skip_locked=True)
    )
    rows = session.execute(
        update(JobChunk)
        .where(tuple_(JobChunk.job_id, JobChunk.chunk_index).in_(candidates))
        .values(dispatches=JobChunk.dispatches + 1, updated_at=func.now())
        .returning(JobChunk.job_id, JobChunk.chunk_index)
    ).all()
    return [(row.job_id, row.chunk_index) for row in rows]


def claim_stale_queued_jobs(
    session: Session, *, older_than_s: float, limit: int = 100
) -> list[uuid.UUID]:
    """Batch jobs still queued after ``older_than_s``: their expand message was lost."""
    candidates = (
        select(Job.id)
        .where(
            Job.kind == "batch",
            Job.status == "queued",
            Job.updated_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than_s),
        )
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = session.execute(
        update(Job).where(Job.id.in_(candidates)).values(updated_at=func.now()).returning(Job.id)
    ).scalars()
    return list(rows)
