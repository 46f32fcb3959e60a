"""The batch flow: expand a stored ZIP into chunks, then process each chunk.

A chunk's first delivery runs its images together (the fast path). A
delivery that follows a crash (more deliveries than retries explain) runs
them one at a time, counting each image's starts in Postgres first, so an
image that kills its worker is found, retried a bounded number of times and
then stored as a failed row while the rest of the job goes on.
"""

from __future__ import annotations

import logging
import uuid
import zipfile
from collections.abc import Sequence
from typing import Any

from celery import current_app, shared_task
from celery.exceptions import SoftTimeLimitExceeded

from shared.archive import (
    ArchiveError,
    ArchiveLimits,
    ArchiveLimitsExceeded,
    EntryError,
    list_entries,
    open_zip,
    read_entry,
    verify_sizes,
)
from shared.jobs import (
    DetectionRecord,
    bump_image_attempt,
    fail_job,
    failed_record,
    get_job,
    positions_with_rows,
    record_expansion,
    register_delivery,
    store_results,
    touch_chunk,
)
from shared.queue import TASK_EXPAND_ARCHIVE, TASK_PROCESS_CHUNK, send_chunk
from shared.settings import Settings
from workers.faults import crash_if_poisoned
from workers.records import corrupted_record, to_record
from workers.state import WorkerState, current_state
from workers.tasks import TRANSIENT_ERRORS
from workers.tasks.common import (
    count_outcomes,
    evaluate_drift_in,
    retry_transient,
    yield_to_interactive,
)

log = logging.getLogger(__name__)

# How often, in dispatched chunks, expansion looks whether the job was cancelled.
_CANCEL_CHECK_EVERY = 50


def archive_limits(settings: Settings) -> ArchiveLimits:
    return ArchiveLimits(
        max_entries=settings.max_zip_entries,
        max_entry_bytes=settings.max_entry_bytes,
        max_total_bytes=settings.max_uncompressed_bytes,
    )


def _chunk_size(state: WorkerState) -> int:
    from shared.inference.device import default_chunk_size

    return state.settings.chunk_size or default_chunk_size(
        gpu=state.pipeline.device.startswith("cuda")
    )


# --- expand ---------------------------------------------------------------------------


@shared_task(name=TASK_EXPAND_ARCHIVE, bind=True)
def expand_archive(self: Any, job_id: str) -> dict[str, Any]:
    """List the archive safely, record the job's total and chunks, fan out."""
    state = current_state()
    job = uuid.UUID(job_id)
    try:
        with state.database.session() as session:
            row = get_job(session, job)
            if row is None or row.status != "queued" or row.archive_path is None:
                return {"job_id": job_id, "expanded": False}
            archive_ref = row.archive_path
        try:
            with open_zip(state.blobs.path(archive_ref)) as archive:
                limits = archive_limits(state.settings)
                listing = list_entries(archive, limits)
                verify_sizes(archive, listing, limits)
        except ArchiveError as exc:
            log.warning("job %s: archive refused: %s", job_id, exc)
            with state.database.session() as session:
                fail_job(session, job, code=exc.code, message=str(exc))
            state.blobs.delete(archive_ref)
            return {"job_id": job_id, "expanded": False, "error": exc.code}

        size = _chunk_size(state)
        entries = [(entry.position, entry.name) for entry in listing.entries]
        chunks = [entries[start : start + size] for start in range(0, len(entries), size)]
        with state.database.session() as session:
            moved = record_expansion(
                session,
                job,
                chunks=chunks,
                skipped=listing.skipped_total,
                skipped_detail=dict(listing.skipped),
                model_version=state.pipeline.model_version,
            )
        if not moved:
            return {"job_id": job_id, "expanded": False}
        log.info(
            "job %s: %d images in %d chunks, %d entries skipped %s",
            job_id, len(entries), len(chunks), listing.skipped_total, dict(listing.skipped),
        )  # fmt: skip
        _dispatch(state, job, len(chunks))
        return {"job_id": job_id, "expanded": True, "chunks": len(chunks)}
    except TRANSIENT_ERRORS as exc:
        retry_transient(self, exc, state.settings.task_max_retries)


def _dispatch(state: WorkerState, job: uuid.UUID, chunk_count: int) -> None:
    """Send the chunk tasks; stop if the job is cancelled meanwhile. A chunk
    whose message is lost here is re-sent by the janitor."""
    for index in range(chunk_count):
        if index and index % _CANCEL_CHECK_EVERY == 0:
            with state.database.session() as session:
                row = get_job(session, job)
                if row is None or row.status != "running":
                    log.info(
                        "job %s: dispatch stopped at chunk %d (%s)", job, index, row and row.status
                    )
                    return
        send_chunk(current_app, str(job), index)


# --- chunks -------------------------------------------------------------------------------


@shared_task(name=TASK_PROCESS_CHUNK, bind=True)
def process_chunk(self: Any, job_id: str, chunk_index: int) -> dict[str, Any]:
    state = current_state()
    job = uuid.UUID(job_id)
    try:
        with state.database.session() as session:
            delivery = register_delivery(session, job, chunk_index)
        if delivery is None:
            log.warning("job %s: chunk %d is unknown", job_id, chunk_index)
            return {"job_id": job_id, "chunk": chunk_index, "status": "unknown"}
        if delivery.job_status != "running" or delivery.chunk_status == "done":
            return {"job_id": job_id, "chunk": chunk_index, "status": delivery.job_status}
        with state.database.session() as session:
            stored = positions_with_rows(session, job, [p for p, _ in delivery.entries])
        todo = [(p, name) for p, name in delivery.entries if p not in stored]
        assert delivery.archive_path is not None
        crashed_before = delivery.deliveries > self.request.retries + 1
        runner = _ChunkRun(state, job, chunk_index, delivery.archive_path, delivery.with_mask)
        try:
            if crashed_before:
                log.warning(
                    "job %s: chunk %d delivered %d times; isolating its images",
                    job_id, chunk_index, delivery.deliveries,
                )  # fmt: skip
                runner.one_at_a_time(todo)
            else:
                runner.together(todo)
        except SoftTimeLimitExceeded:
            runner.give_up("time_limit_exceeded")
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:
            # A bug or an unexpected library error must not strand the job.
            log.exception("job %s: chunk %d failed", job_id, chunk_index)
            runner.give_up(f"processing_error: {type(exc).__name__}: {exc}"[:500])
        return {"job_id": job_id, "chunk": chunk_index, "status": "done", "stored": runner.stored}
    except TRANSIENT_ERRORS as exc:
        retry_transient(self, exc, state.settings.task_max_retries)


class _ChunkRun:
    """One delivery of one chunk."""

    def __init__(
        self,
        state: WorkerState,
        job: uuid.UUID,
        chunk_index: int,
        archive_ref: str,
        with_mask: bool,
    ) -> None:
        self.state = state
        self.job = job
        self.chunk_index = chunk_index
        self.archive_ref = archive_ref
        self.with_mask = with_mask
        self.stored = 0
        self.pending: list[tuple[int, str]] = []

    @property
    def model_version(self) -> str:
        return self.state.pipeline.model_version

    def together(self, todo: Sequence[tuple[int, str]]) -> None:
        self.pending = list(todo)
        with self.state.database.session() as session:
            for position, _ in todo:
                bump_image_attempt(session, self.job, position)
        with open_zip(self.state.blobs.path(self.archive_ref)) as archive:
            records = self._process(archive, todo)
        self._store(records, complete=True)

    def one_at_a_time(self, todo: Sequence[tuple[int, str]]) -> None:
        self.pending = list(todo)
        cap = self.state.settings.max_deliveries
        with open_zip(self.state.blobs.path(self.archive_ref)) as archive:
            for position, name in todo:
                with self.state.database.session() as session:
                    attempts = bump_image_attempt(session, self.job, position)
                    touch_chunk(session, self.job, self.chunk_index)
                if attempts > cap:
                    log.error(
                        "job %s: %s crashed its worker %d times; recorded as failed",
                        self.job, name, attempts - 1,
                    )  # fmt: skip
                    records = [self._failed(position, name, "worker_lost_repeatedly")]
                else:
                    records = self._process(archive, [(position, name)])
                self._store(records, complete=False)
        self._store([], complete=True)

    def give_up(self, error: str) -> None:
        """Store the images not yet stored as failed and close the chunk."""
        records = [self._failed(position, name, error) for position, name in self.pending]
        self._store(records, complete=True)

    def _failed(self, position: int, name: str, error: str) -> DetectionRecord:
        return failed_record(
            position, name, error=error, model_version=self.model_version,
            worker=self.state.worker_name,
        )  # fmt: skip

    def _process(
        self, archive: zipfile.ZipFile, todo: Sequence[tuple[int, str]]
    ) -> list[DetectionRecord]:
        from shared.inference.pipeline import RawImage

        records: list[DetectionRecord] = []
        readable: list[tuple[int, RawImage]] = []
        for position, name in todo:
            try:
                data = read_entry(archive, name, self.state.settings.max_entry_bytes)
            except (EntryError, ArchiveLimitsExceeded) as exc:
                log.info("job %s: entry %s unreadable: %s", self.job, name, exc)
                records.append(
                    corrupted_record(position, name, self.model_version, self.state.worker_name)
                )
                continue
            crash_if_poisoned(data, self.state.settings.fault_crash_sha256)
            readable.append((position, RawImage(name=name, data=data)))
        if readable:
            results = self.state.pipeline.run(
                [image for _, image in readable],
                with_mask=self.with_mask,
                between_steps=lambda: yield_to_interactive(self.state),
            )
            records.extend(
                to_record(result, position=position, worker=self.state.worker_name)
                for (position, _), result in zip(readable, results, strict=True)
            )
        return sorted(records, key=lambda record: record.position)

    def _store(self, records: list[DetectionRecord], *, complete: bool) -> None:
        with self.state.database.session() as session:
            outcome = store_results(
                session, self.job, records, chunk_index=self.chunk_index, complete_chunk=complete
            )
            if outcome.inserted:
                evaluate_drift_in(session, self.state)
        self.stored += outcome.inserted
        stored_positions = {record.position for record in records}
        self.pending = [(p, n) for p, n in self.pending if p not in stored_positions]
        count_outcomes(self.state, outcome.inserted_records)
        if outcome.job_finalized:
            log.info("job %s: last chunk stored; job succeeded", self.job)
            self.state.blobs.delete(self.archive_ref)
