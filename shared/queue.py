"""The Celery contract between the API and the workers.

Both sides build their Celery app from :func:`create_celery_app`, so they
agree on the broker, the serializer (JSON only, never pickle), task names,
queues and reliability settings. The API sends tasks by name and never
imports the worker's task code.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.result import AsyncResult

from shared.services import resolve_broker_url
from shared.services.redis_urls import to_celery_url
from shared.settings import Settings, get_settings

QUEUE_INTERACTIVE = "interactive"
QUEUE_BATCH = "batch"
QUEUES = (QUEUE_INTERACTIVE, QUEUE_BATCH)

TASK_PREDICT_SINGLE = "whales.predict_single"
TASK_EXPAND_ARCHIVE = "whales.expand_archive"
TASK_PROCESS_CHUNK = "whales.process_chunk"

TASK_ROUTES = {
    TASK_PREDICT_SINGLE: {"queue": QUEUE_INTERACTIVE},
    TASK_EXPAND_ARCHIVE: {"queue": QUEUE_BATCH},
    TASK_PROCESS_CHUNK: {"queue": QUEUE_BATCH},
}

# Interactive requests are small; a single image that takes longer than this
# is stuck, and the client has long given up.
INTERACTIVE_SOFT_LIMIT_S = 60
INTERACTIVE_HARD_LIMIT_S = 90


def celery_config(settings: Settings, broker_url: str) -> dict[str, Any]:
    broker = to_celery_url(broker_url)
    backend = to_celery_url(settings.result_backend_url) if settings.result_backend_url else broker
    visibility = settings.visibility_timeout_s
    return {
        "broker_url": broker,
        "result_backend": backend,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_routes": TASK_ROUTES,
        "task_default_queue": QUEUE_BATCH,
        "task_create_missing_queues": True,
        # A task is acknowledged only once it has run; if its worker dies the
        # message goes back to the queue instead of being lost.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": settings.task_soft_time_limit_s,
        "task_time_limit": settings.task_time_limit_s,
        "task_track_started": True,
        # No task-sent event: one publish less per request on the interactive
        # path; Flower still sees every task from the worker's events.
        "task_send_sent_event": False,
        "worker_send_task_events": True,
        "result_expires": 3600,
        "result_extended": False,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "broker_transport_options": {
            # Unacknowledged messages of a vanished worker come back after this.
            "visibility_timeout": visibility,
            # Sweep for them often enough that a short timeout (tests) works.
            "unacked_restore_interval": max(1, min(10, visibility // 5)),
            "unacked_restore_throttle": 1 if visibility < 300 else 10,
            "socket_timeout": 15,
            "socket_connect_timeout": 5,
            "retry_on_timeout": True,
            "health_check_interval": 10,
        },
        "result_backend_transport_options": {"retry_policy": {"timeout": 5.0}},
        "redis_socket_timeout": 15,
        "redis_socket_connect_timeout": 5,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "task_default_retry_delay": 2,
    }


def create_celery_app(
    settings: Settings | None = None,
    broker_url: str | None = None,
    *,
    app_class: type[Celery] = Celery,
) -> Celery:
    """A Celery app configured for this service, with no tasks registered.

    ``app_class`` tunes the result backend for one side: :class:`SendOnlyCelery`
    for the API, the worker's own class for the workers.
    """
    settings = settings or get_settings()
    broker_url = broker_url or resolve_broker_url(settings)
    app = app_class("whales", set_as_current=False)
    app.conf.update(celery_config(settings, broker_url))
    return app


def _no_result_consumer(producer: Any, task_id: str) -> None:
    return None


class SendOnlyCelery(Celery):
    """Celery whose result backend does not follow the tasks it sends: for a
    sender that never calls ``AsyncResult.get()`` (the API, whose requests
    each wait on a subscription of their own, see ``api.waiting``).

    Celery's Redis backend subscribes a shared result consumer to every task
    sent, for a later ``AsyncResult.get()``. A sender that never calls it
    would pay that subscription on every send and leave a connection
    receiving results nobody reads.
    """

    def _get_backend(self) -> Any:
        backend = super()._get_backend()
        backend.on_task_call = _no_result_consumer
        return backend


def chunk_task_id(job_id: str, chunk_index: int) -> str:
    """Deterministic, so a cancel can revoke chunks it never saw dispatched."""
    return f"{job_id}:chunk:{chunk_index}"


def expand_task_id(job_id: str) -> str:
    return f"{job_id}:expand"


def send_expand(app: Celery, job_id: str) -> None:
    app.send_task(TASK_EXPAND_ARCHIVE, args=[job_id], task_id=expand_task_id(job_id))


def send_chunk(app: Celery, job_id: str, chunk_index: int) -> None:
    app.send_task(
        TASK_PROCESS_CHUNK,
        args=[job_id, chunk_index],
        task_id=chunk_task_id(job_id, chunk_index),
    )


_SINGLE_STARTS_KEY = "whales:single-starts:{job_id}"


def single_starts_key(job_id: str) -> str:
    """Redis key counting the starts of one single-image task: the worker
    counts them (a poison image is refused after too many), and the API reads
    it to tell a request no worker took from one that is being processed."""
    return _SINGLE_STARTS_KEY.format(job_id=job_id)


def send_single(
    app: Celery,
    job_id: str,
    image_name: str,
    *,
    with_mask: bool,
    image_b64: str | None = None,
    blob_ref: str | None = None,
    expires: float | None = None,
) -> AsyncResult:
    """Queue one image on ``interactive``; the bytes travel inline or as a blob reference.

    Monitors (Flower, events) see an argsrepr naming the image and its size,
    never the base64 payload. ``expires``: a request nobody took in time is
    dropped by the worker that finally sees it (its client has given up).
    """
    payload = f"<{len(image_b64)} base64 chars>" if image_b64 is not None else repr(blob_ref)
    return app.send_task(
        TASK_PREDICT_SINGLE,
        kwargs={
            "job_id": job_id,
            "image_name": image_name,
            "with_mask": with_mask,
            "image_b64": image_b64,
            "blob_ref": blob_ref,
        },
        task_id=job_id,
        expires=expires,
        argsrepr="()",
        kwargsrepr=(
            f"{{'job_id': {job_id!r}, 'image_name': {image_name!r}, "
            f"'with_mask': {with_mask}, 'image': {payload}}}"
        ),
    )
