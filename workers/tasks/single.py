"""The interactive flow: one image in, one stored Detection out."""

from __future__ import annotations

import base64
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from celery import Task, shared_task
from sqlalchemy import Connection

from shared.jobs import failed_record, refuse_single, store_single
from shared.queue import (
    INTERACTIVE_HARD_LIMIT_S,
    INTERACTIVE_SOFT_LIMIT_S,
    TASK_PREDICT_SINGLE,
    single_starts_key,
)
from shared.schemas import Detection
from workers.faults import crash_if_poisoned
from workers.records import to_record
from workers.redis_replies import SentCommands
from workers.state import WorkerState, current_state
from workers.tasks import TRANSIENT_ERRORS
from workers.tasks.common import (
    count_outcome_tuples,
    evaluate_drift_in,
    interactive_lease,
    release_interactive_lease,
    retry_transient,
)
from workers.throttle import Throttle

log = logging.getLogger(__name__)


_STARTS_TTL_S = 3600


def begin_single(state: WorkerState, job_id: str, task_id: str) -> SentCommands:
    """Count one more start of a single image and take this device's
    interactive lease, in one send; the caller reads the start count from its
    replies (the first is the count) when it needs it.

    Starts are counted in Redis, beside the message that is redelivered when
    a worker dies: a single image has no job row before its answer is stored
    (a chunk's deliveries, which nobody waits on, are counted in Postgres).
    """
    key = single_starts_key(job_id)
    return SentCommands(
        state.redis,
        ("INCR", key),
        ("EXPIRE", key, _STARTS_TTL_S),
        interactive_lease(state, task_id),
    )


def start_count(started: SentCommands) -> int:
    return int(started.replies()[0])


def _answer(detection: Detection) -> dict[str, Any]:
    return {"ok": True, "detection": detection.model_dump(mode="json")}


def _refusal(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "code": code, "message": message}


class SingleImageTask(Task):
    """Bookkeeping the client need not wait for runs once its answer is published.

    Celery stores (and so publishes) a task's result before it calls
    ``on_success``; the metrics counters and the drift evaluation of a single
    image therefore run after the API already has its Detection. A failure
    here is logged and loses nothing: the row is stored, and the next
    evaluation reads the same window. Drift is evaluated at most once a
    second per process (a burst's last image is never skipped, see
    :mod:`workers.throttle`).
    """

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        if not (isinstance(retval, dict) and retval.get("ok")):
            return
        state = current_state()
        detection = retval["detection"]
        count_outcome_tuples(
            state,
            [
                (
                    detection["rejected"],
                    detection.get("rejection_reason"),
                    bool(detection.get("error")),
                )
            ],
        )
        _drift_throttle(state).request()

    def after_return(
        self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        # After the answer is published (success, refusal, failure or retry):
        # batch work waits a few milliseconds longer, the client does not.
        release_interactive_lease(current_state(), task_id)


# Drift of single images is evaluated at most this often per worker process.
_SINGLE_DRIFT_INTERVAL_S = 1.0
_drift: Throttle | None = None  # made on first use, in the pool process


def _drift_throttle(state: WorkerState) -> Throttle:
    global _drift
    if _drift is None:

        def evaluate() -> None:
            with state.database.session() as session:
                evaluate_drift_in(session, state)

        _drift = Throttle(evaluate, _SINGLE_DRIFT_INTERVAL_S)
    return _drift


@shared_task(
    name=TASK_PREDICT_SINGLE,
    base=SingleImageTask,
    bind=True,
    # No STARTED state: the client only waits for the answer, and publishing
    # the state costs a round trip on its time. Whether a worker took the task
    # is told by its starts counter (count_single_start).
    track_started=False,
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
    started_at = datetime.now(UTC)
    keep_blob = False  # a retry needs the image again
    try:
        data = base64.b64decode(image_b64) if image_b64 is not None else None
        if data is None:
            assert blob_ref is not None, "a single task carries bytes or a blob reference"
            data = state.blobs.read_bytes(blob_ref)
        # The row's connection is checked out (and pinged) before the models
        # run, so a dead database is met before the work; the ping costs the
        # client the same here as after the models.
        with (
            begin_single(state, job_id, self.request.id or job_id) as started,
            state.database.autocommit() as connection,
        ):
            # Only a delivery the broker redelivers can follow a crash: it waits
            # for its count before it runs. A first delivery reads its count
            # once the models have run, so that round trip is not on the
            # client's time either (the count reached Redis when it was sent).
            redelivered = _redelivered(self.request)
            if redelivered and start_count(started) > state.settings.max_deliveries:
                return _refuse_crashing_image(
                    connection, state, job, image_name, with_mask, started_at
                )
            crash_if_poisoned(data, state.settings.fault_crash_sha256)
            result = state.pipeline.run([_raw_image(image_name, data)], with_mask=with_mask)[0]
            if not redelivered:
                start_count(started)  # a Redis error surfaces here, as a transient one
            if result.image_error is not None:
                code, message = result.image_error, result.image_error_message or ""
                refuse_single(
                    connection, job, with_mask=with_mask, started_at=started_at, code=code,
                    message=message,
                )  # fmt: skip
                return _refusal(code, message)
            record = to_record(result, position=0, worker=state.worker_name)
            detection_id = store_single(
                connection, job, record, with_mask=with_mask, started_at=started_at
            )
        detection = result.detection.model_copy(
            update={"detection_id": detection_id, "image_sha256": record.image_sha256}
        )
        log.info("job %s: single image %s stored as detection %s", job_id, image_name, detection_id)
        # Metrics and drift follow in SingleImageTask.on_success, after the answer is out.
        return _answer(detection)
    except TRANSIENT_ERRORS as exc:
        keep_blob = True
        retry_transient(self, exc, state.settings.task_max_retries)
    finally:
        if blob_ref is not None and not keep_blob:
            state.blobs.delete(blob_ref)


def _refuse_crashing_image(
    connection: Connection,
    state: WorkerState,
    job: uuid.UUID,
    image_name: str,
    with_mask: bool,
    started_at: datetime,
) -> dict[str, Any]:
    """The delivery cap is reached: store a failed row instead of running the
    image again."""
    record = failed_record(
        0, image_name, error="worker_lost", model_version=state.pipeline.model_version,
        worker=state.worker_name,
    )  # fmt: skip
    store_single(connection, job, record, with_mask=with_mask, started_at=started_at)
    return _refusal("processing_failed", "The image crashed the worker repeatedly.")


def _redelivered(request: Any) -> bool:
    """Whether the broker delivers this message again (its worker died, or it
    sat unacknowledged past the visibility timeout)."""
    return bool((request.delivery_info or {}).get("redelivered"))


def _raw_image(name: str, data: bytes) -> Any:
    from shared.inference.pipeline import RawImage

    return RawImage(name=name, data=data)
