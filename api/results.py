"""Reading jobs and their detections: documents, keyset pages and formats.

Pages are keyset pages over ``(job_id, position)`` (the unique index every
job's rows already have), so page 900 costs what page 1 costs, and rows that
arrive while a job runs never shift a page already read. The cursor is opaque
to clients; it encodes the last position they have seen.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import select

from api.context import ApiServices
from api.errors import ApiError
from shared.db.models import DetectionRow, Job
from shared.schemas import TERMINAL_STATUSES, Detection, JobDocument

STREAM_PAGE = 500
CSV_COLUMNS = (
    "position",
    "image_ind",
    "bbox",
    "class_animal",
    "id_animal",
    "probability",
    "is_cetacean",
    "cetacean_score",
    "rejected",
    "rejection_reason",
    "model_version",
    "error",
    "detection_id",
    "image_sha256",
    "candidates",
)


def parse_job_id(raw: str) -> uuid.UUID:
    """A job id from a URL; anything that is not a UUID names no job."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(404, "job_not_found", f"No job with id {raw[:64]!r}.") from None


def job_document(job: Job) -> JobDocument:
    error = None
    if job.error_code or job.error:
        error = ": ".join(part for part in (job.error_code, job.error) if part)
    return JobDocument(
        job_id=str(job.id),
        kind="single" if job.kind == "single" else "batch",
        status=job.status,  # constrained by a CHECK to the JobStatus values
        total=job.total,
        processed=job.processed,
        accepted=job.accepted,
        rejected=job.rejected,
        failed=job.failed,
        skipped=job.skipped,
        model_version=job.model_version,
        mask=job.with_mask,
        error=error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        results_url=f"/v1/jobs/{job.id}/results",
    )


def detection_of(row: DetectionRow) -> dict[str, Any]:
    """A stored row in the seed's Detection shape (plus the additive fields)."""
    return Detection(
        image_ind=row.image_ind,
        bbox=list(row.bbox),
        class_animal=row.class_animal,
        id_animal=row.id_animal,
        probability=row.probability,
        mask=row.mask,
        is_cetacean=row.is_cetacean,
        cetacean_score=row.cetacean_score,
        rejected=row.rejected,
        rejection_reason=row.rejection_reason,
        model_version=row.model_version,
        candidates=row.candidates,  # dicts, validated into Candidates
        detection_id=row.id,
        image_sha256=row.image_sha256,
        error=row.error,
    ).model_dump(mode="json")


# --- cursors ------------------------------------------------------------------------


def encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"after:{position}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    """The last position a client has seen; -1 before the first page."""
    if cursor is None or cursor == "":
        return -1
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        position = int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        position, prefix = -2, ""
    if prefix != "after" or position < -1:
        raise ApiError(400, "invalid_cursor", "The cursor is not one this API gave out.")
    return position


# --- pages --------------------------------------------------------------------------------


def page_rows(
    services: ApiServices, job_id: uuid.UUID, after: int, limit: int
) -> tuple[list[DetectionRow], bool]:
    """Up to ``limit`` rows after position ``after``, and whether more exist."""
    with services.session() as session:
        rows = list(
            session.execute(
                select(DetectionRow)
                .where(DetectionRow.job_id == job_id, DetectionRow.position > after)
                .order_by(DetectionRow.position)
                .limit(limit + 1)
            ).scalars()
        )
    return rows[:limit], len(rows) > limit


def next_cursor(job: Job, rows: Sequence[DetectionRow], after: int, more: bool) -> str | None:
    """Where the next page starts; None only when the job has ended and
    nothing follows. A running job always has a next cursor: rows may come."""
    last = rows[-1].position if rows else after
    if more or job.status not in TERMINAL_STATUSES:
        return encode_cursor(last)
    return None


def detections_json_array(services: ApiServices, job_id: uuid.UUID) -> Iterator[str]:
    """Every detection of a job as one JSON array, produced a page at a time so
    a 10,000-image answer never sits whole in memory."""
    yield "["
    after, first, more = -1, True, True
    while more:
        rows, more = page_rows(services, job_id, after, STREAM_PAGE)
        for row in rows:
            yield ("" if first else ",") + json.dumps(detection_of(row), ensure_ascii=False)
            first = False
        if rows:
            after = rows[-1].position
    yield "]"


def csv_text(rows: Sequence[DetectionRow]) -> str:
    """CSV of a page; masks are left out (base64 PNGs do not belong in a sheet)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        detection = detection_of(row)
        writer.writerow(
            [
                row.position,
                detection["image_ind"],
                json.dumps(detection["bbox"]),
                detection["class_animal"],
                detection["id_animal"],
                detection["probability"],
                detection["is_cetacean"],
                detection["cetacean_score"],
                detection["rejected"],
                detection["rejection_reason"] or "",
                detection["model_version"],
                detection["error"] or "",
                detection["detection_id"],
                detection["image_sha256"] or "",
                json.dumps(detection["candidates"], ensure_ascii=False),
            ]
        )
    return buffer.getvalue()


def ndjson_text(rows: Sequence[DetectionRow]) -> str:
    return "".join(json.dumps(detection_of(row), ensure_ascii=False) + "\n" for row in rows)
