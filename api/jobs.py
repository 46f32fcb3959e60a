"""Job polling, results, cancellation and drift statistics."""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from flask import Response, jsonify
from sqlalchemy import select

from api.context import ApiServices, services
from api.errors import ApiError, job_not_found
from api.results import (
    csv_text,
    decode_cursor,
    detection_of,
    job_document,
    ndjson_text,
    next_cursor,
    page_rows,
    parse_job_id,
)
from shared.db.models import DetectionRow, Job
from shared.drift import drift_stats
from shared.jobs import cancel_job, get_job
from shared.queue import chunk_task_id, expand_task_id
from shared.schemas import DEFAULT_MODEL_VERSION
from shared.worker_registry import live_workers

log = logging.getLogger(__name__)

_MEDIA_TYPES = {"json": "application/json", "csv": "text/csv", "ndjson": "application/x-ndjson"}


def _load_job(svc: ApiServices, raw_id: str) -> Job:
    job_id = parse_job_id(raw_id)
    with svc.session() as session:
        job = get_job(session, job_id)
    if job is None:
        raise job_not_found(raw_id)
    return job


def job_view(raw_id: str) -> Response:
    return jsonify(job_document(_load_job(services(), raw_id)).model_dump(mode="json"))


def results_view(raw_id: str, limit: int | None, cursor: str | None, fmt: str) -> Response:
    svc = services()
    job = _load_job(svc, raw_id)
    after = decode_cursor(cursor)
    size = limit or svc.settings.results_page_size
    rows, more = page_rows(svc, job.id, after, size)
    following = next_cursor(job, rows, after, more)
    if fmt == "csv":
        response = Response(csv_text(rows), content_type="text/csv; charset=utf-8")
    elif fmt == "ndjson":
        response = Response(ndjson_text(rows), mimetype=_MEDIA_TYPES["ndjson"])
    else:
        response = jsonify(
            {
                "job_id": str(job.id),
                "status": job.status,
                "items": [detection_of(row) for row in rows],
                "next_cursor": following,
            }
        )
    response.headers["X-Job-Status"] = job.status
    if following is not None:
        query = urlencode({"format": fmt, "limit": size, "cursor": following})
        response.headers["Link"] = f'</v1/jobs/{job.id}/results?{query}>; rel="next"'
        response.headers["X-Next-Cursor"] = following
    return response


def cancel_view(raw_id: str) -> Response:
    """Cancel a job that has not ended: its pending chunks are revoked, rows
    already written stay. Cancelling a cancelled job is a no-op (200)."""
    svc = services()
    job_id = parse_job_id(raw_id)
    with svc.session() as session:
        pending = cancel_job(session, job_id)
    if pending is None:
        raise job_not_found(raw_id)
    with svc.session() as session:
        job = get_job(session, job_id)
    assert job is not None
    if job.status != "cancelled":
        raise ApiError(
            409, "job_finished", f"Job {job_id} already ended ({job.status}); nothing to cancel."
        )
    task_ids = [expand_task_id(str(job_id))]
    task_ids += [chunk_task_id(str(job_id), index) for index in pending]
    try:
        # Chunks already running finish their images; chunk tasks also re-read
        # the job's status, so a revoke that misses a worker costs nothing.
        svc.celery.control.revoke(task_ids)
    except Exception as exc:
        log.warning("job %s: revoke not broadcast (%s); chunks will see the status", job_id, exc)
    log.info("job %s cancelled; %d pending chunks revoked", job_id, len(pending))
    return jsonify(job_document(job).model_dump(mode="json"))


def served_model_version(svc: ApiServices) -> str:
    """The model the workers serve; else the newest stored; else the default."""
    try:
        workers = live_workers(svc.redis)
    except Exception:  # Redis trouble must not hide statistics kept in Postgres
        workers = []
    if workers:
        return workers[0].model_version
    with svc.session() as session:
        newest = session.execute(
            select(DetectionRow.model_version).order_by(DetectionRow.id.desc()).limit(1)
        ).scalar_one_or_none()
    return newest or DEFAULT_MODEL_VERSION


def drift_view(model_version: str | None) -> Response:
    svc = services()
    version = model_version or served_model_version(svc)
    with svc.session() as session:
        stats = drift_stats(session, version, window=svc.settings.drift_window)
    response = jsonify(stats.model_dump(mode="json"))
    if version.isascii() and version.isprintable():  # never a header injection
        response.headers["X-Model-Version"] = version
    return response
