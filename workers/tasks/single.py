"""The interactive flow: one image in, one stored Detection out."""

from __future__ import annotations

import base64
import logging
import uuid
from typing import Any

from celery import shared_task

from shared.jobs import begin_single, fail_job, failed_record, store_single
from shared.queue import INTERACTIVE_HARD_LIMIT_S, INTERACTIVE_SOFT_LIMIT_S, TASK_PREDICT_SINGLE
from shared.schemas import Detection
from workers.faults import crash_if_poisoned
from workers.records import to_record
from workers.state import current_state
from workers.tasks import TRANSIENT_ERRORS
from workers.tasks.common import (
    count_outcomes,
    evaluate_drift_in,
    retry_transient,
    serving_interactive,
)

log = logging.getLogger(__name__)


def _answer(detection: Detection) -> dict[str, Any]:
    return {"ok": True, "detection": detection.model_dump(mode="json")}


def _refusal(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "code": code, "message": message}


@shared_task(
    name=TASK_PREDICT_SINGLE,
    bind=True,
    soft_time_limit=INTERACTIVE_SOFT_LIMIT_S,
    time_limit=INTERACTIVE_HARD_LIMIT_S,
)
def predict_single(
    self: Any,
    job_id: str,
    image_name: str,
    with_mask: bool = True,
    image_b64: str | None = None,
    blob_ref: str | None = None,
) -> dict[str, Any]:
    """Run the pipeline on one image, store its row, return the Detection.

    The image travels in the message (base64) up to a size limit, else as a
    reference into the blob store. An image that cannot be decoded is refused
    (the API answers 415) and leaves a failed job without a detection row.
    """
    state = current_state()
    job = uuid.UUID(job_id)
    keep_blob = False  # a retry needs the image again
    try:
        data = base64.b64decode(image_b64) if image_b64 is not None else None
        if data is None:
            assert blob_ref is not None, "a single task carries bytes or a blob reference"
            data = state.blobs.read_bytes(blob_ref)
        with state.database.session() as session:
            attempts = begin_single(session, job, with_mask=with_mask)
        if attempts > state.settings.max_deliveries:
            record = failed_record(
                0, image_name, error="worker_lost", model_version=state.pipeline.model_version,
                worker=state.worker_name,
            )  # fmt: skip
            with state.database.session() as session:
                store_single(session, job, record)
            return _refusal("processing_failed", "The image crashed the worker repeatedly.")

        crash_if_poisoned(data, state.settings.fault_crash_sha256)
        with serving_interactive(state, self.request.id or job_id):
            result = state.pipeline.run([_raw_image(image_name, data)], with_mask=with_mask)[0]
        if result.image_error is not None:
            code, message = result.image_error, result.image_error_message or ""
            with state.database.session() as session:
                fail_job(session, job, code=code, message=message)
            return _refusal(code, message)

        record = to_record(result, position=0, worker=state.worker_name)
        with state.database.session() as session:
            row = store_single(session, job, record)
            evaluate_drift_in(session, state)
        count_outcomes(state, [record])
        detection = result.detection.model_copy(
            update={"detection_id": row.id, "image_sha256": record.image_sha256}
        )
        log.info("job %s: single image %s stored as detection %s", job_id, image_name, row.id)
        return _answer(detection)
    except TRANSIENT_ERRORS as exc:
        keep_blob = True
        retry_transient(self, exc, state.settings.task_max_retries)
    finally:
        if blob_ref is not None and not keep_blob:
            state.blobs.delete(blob_ref)


def _raw_image(name: str, data: bytes) -> Any:
    from shared.inference.pipeline import RawImage

    return RawImage(name=name, data=data)
