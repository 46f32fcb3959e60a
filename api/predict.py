"""The predict flows: a single image through the interactive queue, and ZIP
archives through batch jobs.

Checks happen in the seed's order (declared type, emptiness, then the real
format sniffed from the bytes, never trusted from the Content-Type), before
anything is queued. Single images up to ``WHALES_INLINE_IMAGE_BYTES`` travel in
the task message; larger ones, and every archive, go to the blob store.
"""

from __future__ import annotations

import base64
import logging
import uuid
from typing import Any

import redis
from celery import states
from flask import Response, jsonify, request, stream_with_context

from api.context import ApiServices, services
from api.errors import (
    ApiError,
    bad_archive,
    empty_file,
    expected_zip,
    service_unavailable,
    undecodable_image,
    unsupported_image_type,
)
from api.limits import read_window_ahead
from api.results import detections_json_array, job_document
from api.uploads import (
    Upload,
    is_multipart,
    limit_upload,
    receive_file_part,
    receive_raw_body,
)
from api.waiting import TaskWait, wait_for_job
from shared.archive import (
    ArchiveLimits,
    ArchiveLimitsExceeded,
    BadArchive,
    list_entries,
    looks_like_zip,
    open_zip,
)
from shared.blobs import single_image_ref, upload_ref
from shared.db.models import Job
from shared.imaging import sniff_format
from shared.jobs import create_batch_job
from shared.queue import send_expand, send_single, single_starts_key
from shared.schemas import Detection

log = logging.getLogger(__name__)

ZIP_TYPES = frozenset(
    {
        "application/zip",
        "application/x-zip-compressed",
        "application/x-zip",
        "multipart/x-zip",
        "application/octet-stream",
    }
)
_IMAGE_REFUSALS = frozenset({"not_an_image", "corrupted_image"})


def _is_image_type(media_type: str) -> bool:
    # octet-stream is what clients send when they do not know; the bytes decide.
    return media_type.startswith("image/") or media_type == "application/octet-stream"


# --- single image -------------------------------------------------------------------


def receive_image(services: ApiServices) -> Upload:
    limit_upload(services.settings.max_image_bytes)
    if is_multipart():
        upload = receive_file_part("file")
        if upload is None:
            raise ApiError(422, "missing_file", "The multipart field 'file' is required.")
    else:
        if not _is_image_type(request.mimetype):
            raise unsupported_image_type()
        upload = receive_raw_body("image")
    if not _is_image_type(upload.content_type):
        raise unsupported_image_type()
    if upload.spool.size == 0:
        raise empty_file()
    if sniff_format(upload.spool.head) is None:
        raise undecodable_image("The bytes are not a JPEG, PNG, WebP, BMP or TIFF image.")
    return upload


def predict_single(with_mask: bool) -> Response:
    """Queue one image on the interactive queue and wait for its Detection."""
    svc = services()
    settings = svc.settings
    upload = receive_image(svc)
    job_id = str(uuid.uuid4())
    image_b64 = blob_ref = None
    if upload.spool.size <= settings.inline_image_bytes:
        image_b64 = base64.b64encode(upload.spool.read_all()).decode("ascii")
    else:
        blob_ref = upload.spool.keep(svc.blobs, single_image_ref(job_id)).ref

    timeout = settings.interactive_timeout_s
    wait = TaskWait(svc, job_id)  # subscribed before sending: no answer can be missed
    try:
        send_single(
            svc.celery,
            job_id,
            upload.filename,
            with_mask=with_mask,
            image_b64=image_b64,
            blob_ref=blob_ref,
            expires=timeout,
        )
    except BaseException:
        wait.close()
        raise
    read_window_ahead()  # while the worker computes
    meta = wait.result(timeout)
    if meta is None or meta.get("status") == states.REVOKED:
        if blob_ref is not None and meta is None and not _taken(svc, job_id):
            # The message expires unread; nobody else would delete its image.
            svc.blobs.delete(blob_ref)
        raise service_unavailable(
            f"No worker answered within {timeout:g} s; retry later.",
            retry_after_s=max(1, round(timeout)),
        )
    try:
        response = _single_answer(meta, job_id)
    except BaseException:
        wait.forget()
        raise
    response.call_on_close(wait.forget)
    return response


def _taken(svc: ApiServices, job_id: str) -> bool:
    """Whether a worker started the task (it counts its starts in Redis)."""
    try:
        return bool(svc.redis.exists(single_starts_key(job_id)))
    except redis.RedisError:
        return True  # unknown: keep the image rather than pull it from under a worker


def _single_answer(meta: dict[str, Any], job_id: str) -> Response:
    result = meta.get("result")
    if meta.get("status") != states.SUCCESS or not isinstance(result, dict):
        log.error("single image %s failed in the worker: %s", job_id, meta.get("result"))
        raise ApiError(500, "processing_failed", "The image could not be processed.")
    if not result.get("ok"):
        code = str(result.get("code", "processing_failed"))
        message = str(result.get("message") or "The image could not be processed.")
        if code in _IMAGE_REFUSALS:
            raise undecodable_image(message)
        if code == "image_too_large":
            raise ApiError(413, "image_too_large", message)
        raise ApiError(500, code, message)
    detection = Detection.model_validate(result["detection"])
    response = jsonify(detection.model_dump(mode="json"))
    response.headers["X-Job-Id"] = job_id
    return response


# --- archives ------------------------------------------------------------------------------


def receive_archive(services: ApiServices) -> Upload:
    settings = services.settings
    limit_upload(settings.max_archive_bytes)
    if is_multipart():
        upload = receive_file_part("archive")
        if upload is None:
            raise ApiError(422, "missing_archive", "The multipart field 'archive' is required.")
    else:
        if request.mimetype not in ZIP_TYPES:
            raise expected_zip()
        upload = receive_raw_body("archive.zip")
    if upload.content_type not in ZIP_TYPES:
        raise expected_zip()
    if upload.spool.size == 0:
        raise empty_file()
    if not looks_like_zip(upload.spool.head):
        raise bad_archive("The upload does not start like a ZIP archive.")
    limits = ArchiveLimits(
        max_entries=settings.max_zip_entries,
        max_entry_bytes=settings.max_entry_bytes,
        max_total_bytes=settings.max_uncompressed_bytes,
    )
    upload.spool.flush()
    # The central directory only: cheap, and it refuses most bad archives at
    # once. Inflating every entry is the worker's job.
    try:
        with open_zip(upload.spool.path) as archive:
            list_entries(archive, limits)
    except BadArchive as exc:
        raise bad_archive(str(exc)) from exc
    except ArchiveLimitsExceeded as exc:
        raise ApiError(413, exc.code, str(exc)) from exc
    return upload


def existing_job(services: ApiServices, idempotency_key: str | None) -> Job | None:
    if idempotency_key is None:
        return None
    from sqlalchemy import select

    with services.session() as session:
        return session.execute(
            select(Job).where(Job.idempotency_key == idempotency_key)
        ).scalar_one_or_none()


def submit_archive(with_mask: bool, idempotency_key: str | None) -> tuple[Job, bool]:
    """Store the upload, create its job and send the expand task. With an
    idempotency key already used, the first job is returned (nothing is read)."""
    svc = services()
    found = existing_job(svc, idempotency_key)
    if found is not None:
        return found, False
    upload = receive_archive(svc)
    job_id = uuid.uuid4()
    blob = upload.spool.keep(svc.blobs, upload_ref(str(job_id)))
    with svc.session() as session:
        job, created = create_batch_job(
            session,
            job_id=job_id,
            archive_path=blob.ref,
            archive_name=upload.filename,
            archive_bytes=blob.size,
            with_mask=with_mask,
            idempotency_key=idempotency_key,
        )
    if not created:  # a concurrent retry with the same key won the race
        svc.blobs.delete(blob.ref)
        return job, False
    try:
        send_expand(svc.celery, str(job_id))
    except Exception as exc:
        # The job is safe in Postgres; a worker's janitor sends the expand
        # task of a job left queued.
        log.warning("job %s: expand task not sent (%s); the janitor will", job_id, exc)
    log.info("job %s: archive %r of %d bytes accepted", job_id, upload.filename, blob.size)
    return job, True


def wants_async(prefer: str | None) -> bool:
    tokens = {part.split(";")[0].strip().lower() for part in (prefer or "").split(",")}
    return "respond-async" in tokens


def accepted(job: Job, *, replayed: bool, async_applied: bool) -> Response:
    response = jsonify(job_document(job).model_dump(mode="json"))
    response.status_code = 202
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if async_applied:
        response.headers["Preference-Applied"] = "respond-async"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def predict_batch(with_mask: bool, prefer: str | None, idempotency_key: str | None) -> Response:
    """The seed's synchronous batch: wait for the job, answer its Detections in
    archive order; 202 with the job's location when asked to or when the wait
    passes ``WHALES_BATCH_WAIT_S``."""
    svc = services()
    job, created = submit_archive(with_mask, idempotency_key)
    if wants_async(prefer):
        return accepted(job, replayed=not created, async_applied=True)
    try:
        ended = wait_for_job(svc, job.id, svc.settings.batch_wait_s)
    except LookupError:
        raise ApiError(404, "job_not_found", f"Job {job.id} disappeared.") from None
    if ended is None:
        return accepted(job, replayed=not created, async_applied=False)
    if ended.status == "failed":
        raise _job_failure(ended)
    if ended.status == "cancelled":
        raise ApiError(409, "job_cancelled", f"Job {ended.id} was cancelled.")
    response = Response(
        stream_with_context(detections_json_array(svc, ended.id)), mimetype="application/json"
    )
    response.headers["X-Job-Id"] = str(ended.id)
    return response


def _job_failure(job: Job) -> ApiError:
    code = job.error_code or "job_failed"
    message = job.error or "The job failed."
    if code == "bad_archive":
        return bad_archive(message)
    if code == "archive_limits_exceeded":
        return ApiError(413, code, message)
    return ApiError(500, code, message)


def submit_job(with_mask: bool, idempotency_key: str | None) -> Response:
    job, created = submit_archive(with_mask, idempotency_key)
    return accepted(job, replayed=not created, async_applied=False)
