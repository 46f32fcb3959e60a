"""The three blueprints: ``v1``, the seed's legacy aliases, and ops routes.

Each is built per app (the rate limits belong to that app's limiter). The
views are thin: they validate parameters through their pydantic models (which
also make the OpenAPI spec) and hand over to ``api.predict``, ``api.jobs`` and
``api.ops``. Upload bodies are documented by hand below because they are read
as streams, not through flask-openapi3's form parsing (which would hold them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Response
from flask_limiter import Limiter
from flask_openapi3 import APIBlueprint, Tag
from flask_openapi3.types import ResponseDict
from pydantic import BaseModel

from api import jobs, ops, predict
from api.limits import JOBS_SCOPE, PREDICT_SCOPE
from api.models import (
    ERROR_RESPONSES,
    DetectionList,
    DriftQuery,
    Health,
    JobAccepted,
    JobPath,
    NotReady,
    PredictBatchQuery,
    PredictSingleQuery,
    Readiness,
    ResultsPage,
    ResultsQuery,
    SubmitHeaders,
)
from shared.schemas import Detection, DriftStats, ErrorBody, JobDocument
from shared.settings import Settings

PREDICT_TAG = Tag(name="predict", description="Identify whales and dolphins in photos.")
JOBS_TAG = Tag(name="jobs", description="Batch jobs: status, results, cancellation.")
LEGACY_TAG = Tag(name="legacy", description="The EcoMarineAI routes without /v1, as before.")
OPS_TAG = Tag(name="ops", description="Health, readiness and metrics.")

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff")
_BINARY = {"type": "string", "format": "binary"}

SINGLE_BODY: dict[str, Any] = {
    "description": "One image: the multipart field `file`, or the raw image as the body. "
    "The format is read from the bytes (JPEG, PNG, WebP, BMP, TIFF).",
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "required": ["file"], "properties": {"file": _BINARY}},
            "encoding": {"file": {"contentType": ", ".join(IMAGE_TYPES)}},
        },
        **{media_type: {"schema": _BINARY} for media_type in IMAGE_TYPES},
        "application/octet-stream": {"schema": _BINARY},
    },
}
ARCHIVE_BODY: dict[str, Any] = {
    "description": "A ZIP of images: the multipart field `archive`, or the raw ZIP as the body.",
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["archive"],
                "properties": {"archive": _BINARY},
            },
            "encoding": {"archive": {"contentType": "application/zip"}},
        },
        "application/zip": {"schema": _BINARY},
    },
}
_PROBLEMS: dict[int, type[BaseModel]] = {**ERROR_RESPONSES}
_NOT_FOUND: dict[int, type[BaseModel]] = {404: ErrorBody}
# Parameters that fail their model: the same error body as everything else.
_INVALID: dict[Any, Any] = {422: ErrorBody}


def _responses(ok: ResponseDict, *extra: dict[int, type[BaseModel]]) -> ResponseDict:
    merged: ResponseDict = dict(ok)
    for part in extra:
        for status, model in part.items():
            merged[status] = model
    return merged


Decorator = Callable[[Callable[..., Response]], Callable[..., Response]]


def _add_predict_routes(bp: APIBlueprint, predict_limit: Decorator, tags: list[Tag]) -> None:
    """``predict-single`` and ``predict-batch``, shared by v1 and the aliases."""

    def predict_single(query: PredictSingleQuery) -> Response:
        """Identify one image.
        Synchronous: the image is queued for a warm worker and the answer waits
        for it. A rejection (not a marine mammal, low confidence) is still 200.
        503 with Retry-After when no worker answers in time.
        """
        return predict.predict_single(query.mask)

    def predict_batch(query: PredictBatchQuery, header: SubmitHeaders) -> Response:
        """Identify every image of a ZIP archive.
        Answers the list of Detections in archive order once the job ends; 202
        with `Location: /v1/jobs/{id}` when `Prefer: respond-async` is sent or
        the wait passes its limit. The whole batch counts as one request.
        """
        return predict.predict_batch(query.mask, header.prefer, header.idempotency_key)

    for view in (predict_single, predict_batch):
        # One name per blueprint: the limiter and the spec key views by name.
        view.__qualname__ = f"{bp.name}.{view.__name__}"
    bp.post(
        "/predict-single",
        tags=tags,
        responses=_responses({200: Detection}, _PROBLEMS),
        openapi_extensions={"requestBody": SINGLE_BODY},
    )(predict_limit(predict_single))
    bp.post(
        "/predict-batch",
        tags=tags,
        responses=_responses({200: DetectionList, 202: JobAccepted}, _PROBLEMS, {409: ErrorBody}),
        openapi_extensions={"requestBody": ARCHIVE_BODY},
    )(predict_limit(predict_batch))


@dataclass(frozen=True)
class RouteLimits:
    """The app's two rate-limit budgets, as decorators (made once per app)."""

    predict: Decorator
    jobs: Decorator


def route_limits(limiter: Limiter, settings: Settings) -> RouteLimits:
    return RouteLimits(
        predict=limiter.shared_limit(lambda: settings.rate_limit_predict, scope=PREDICT_SCOPE),
        jobs=limiter.shared_limit(lambda: settings.rate_limit_jobs, scope=JOBS_SCOPE),
    )


def build_v1(limits: RouteLimits) -> APIBlueprint:
    bp = APIBlueprint("v1", __name__, url_prefix="/v1", abp_responses=_INVALID)
    predict_limit, jobs_limit = limits.predict, limits.jobs
    _add_predict_routes(bp, predict_limit, [PREDICT_TAG])

    @bp.post(
        "/jobs",
        tags=[JOBS_TAG],
        responses=_responses({202: JobAccepted}, _PROBLEMS),
        openapi_extensions={"requestBody": ARCHIVE_BODY},
    )
    @predict_limit
    def submit_job(query: PredictBatchQuery, header: SubmitHeaders) -> Response:
        """Submit a ZIP archive as a job.

        Always 202 with the job document and its `Location`. With an
        `Idempotency-Key` already used, the first request's job comes back.
        """
        return predict.submit_job(query.mask, header.idempotency_key)

    @bp.get(
        "/jobs/<job_id>",
        tags=[JOBS_TAG],
        responses=_responses({200: JobDocument}, _NOT_FOUND, _PROBLEMS),
    )
    @jobs_limit
    def get_job(path: JobPath) -> Response:
        """A job's status and counters."""
        return jobs.job_view(path.job_id)

    @bp.get(
        "/jobs/<job_id>/results",
        tags=[JOBS_TAG],
        responses=_responses({200: ResultsPage}, _NOT_FOUND, _PROBLEMS),
    )
    @jobs_limit
    def get_job_results(path: JobPath, query: ResultsQuery) -> Response:
        """A page of a job's Detections, in archive order (partial while it runs).

        Keyset pagination: pass `next_cursor` back as `cursor`. `format=csv`
        and `format=ndjson` give the same page as text, with the next page in
        the `Link` and `X-Next-Cursor` headers.
        """
        return jobs.results_view(path.job_id, query.limit, query.cursor, query.format)

    @bp.delete(
        "/jobs/<job_id>",
        tags=[JOBS_TAG],
        responses=_responses({200: JobDocument}, _NOT_FOUND, {409: ErrorBody}, _PROBLEMS),
    )
    @jobs_limit
    def cancel_job(path: JobPath) -> Response:
        """Cancel a job: pending chunks are dropped, rows already written stay."""
        return jobs.cancel_view(path.job_id)

    @bp.get("/drift-stats", tags=[OPS_TAG], responses=_responses({200: DriftStats}, _PROBLEMS))
    @jobs_limit
    def drift_stats(query: DriftQuery) -> Response:
        """Statistics of the gate's scores over the newest accepted detections."""
        return jobs.drift_view(query.model_version)

    return bp


def build_legacy(limits: RouteLimits) -> APIBlueprint:
    """``POST /predict-single`` and ``POST /predict-batch`` exactly as v1,
    on the same budget (a request counts once, whichever path it takes)."""
    bp = APIBlueprint("legacy", __name__, abp_responses=_INVALID)
    _add_predict_routes(bp, limits.predict, [LEGACY_TAG])
    return bp


_TEXT = {"content": {"text/plain": {"schema": {"type": "string"}}}}


def build_ops() -> APIBlueprint:
    bp = APIBlueprint("ops", __name__)

    @bp.get("/health", tags=[OPS_TAG], responses={200: Health})
    def health() -> Response:
        """Liveness: the process answers."""
        return ops.health_view()

    @bp.get("/ready", tags=[OPS_TAG], responses={200: Readiness, 503: NotReady})
    def ready() -> Response:
        """Readiness: the database, the broker and at least one warm worker answer."""
        return ops.ready_view()

    @bp.get(
        "/metrics",
        tags=[OPS_TAG],
        responses={200: {"description": "Prometheus text exposition.", **_TEXT}},
    )
    def metrics() -> Response:
        """Prometheus metrics."""
        return ops.metrics_view()

    return bp
