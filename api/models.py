"""Request and response models of the HTTP API; the OpenAPI spec is made from them.

Detections, job documents, drift statistics and error bodies are the shared
schemas (``shared.schemas``), so the API, workers and CLI answer alike.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from shared.schemas import Detection, ErrorBody, JobDocument, JobStatus

ResultFormat = Literal["json", "csv", "ndjson"]

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer"},
    }
}
_RATE_HEADERS = {
    "X-RateLimit-Limit": {
        "description": "Requests allowed per window.",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Remaining": {"description": "Requests left.", "schema": {"type": "integer"}},
    "X-RateLimit-Reset": {
        "description": "When the window resets (epoch s).",
        "schema": {"type": "integer"},
    },
}


def _extra(**openapi: Any) -> ConfigDict:
    # flask-openapi3 reads "openapi_extra" from a model's config.
    return ConfigDict(openapi_extra=openapi)  # type: ignore[typeddict-unknown-key]


# --- requests ------------------------------------------------------------------

_parameter_schemas: dict[tuple[Any, ...], dict[str, Any]] = {}


class ParameterModel(BaseModel):
    """Base of the query, header and path models.

    flask-openapi3 asks such a model for its JSON schema on every request (to
    find list-valued fields), and pydantic builds it afresh each time: a
    third of a millisecond per request for a schema that never changes. It is
    built once per class and arguments; callers get their own copy.
    """

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        key = (cls, args, tuple(sorted(kwargs.items())))
        schema = _parameter_schemas.get(key)
        if schema is None:
            schema = _parameter_schemas[key] = super().model_json_schema(*args, **kwargs)
        return copy.deepcopy(schema)


class PredictSingleQuery(ParameterModel):
    mask: bool = Field(default=True, description="Compute the background-removed mask.")


class PredictBatchQuery(ParameterModel):
    mask: bool = Field(default=False, description="Compute masks (slow; off by default).")


class SubmitHeaders(ParameterModel):
    prefer: str | None = Field(
        default=None,
        alias="Prefer",
        max_length=200,
        description="`respond-async`: answer 202 with the job at once instead of waiting.",
    )
    idempotency_key: str | None = Field(
        default=None,
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="A retry with the same key returns the first request's job.",
    )


class JobPath(ParameterModel):
    job_id: str = Field(description="The job's id (a UUID).")


class ResultsQuery(ParameterModel):
    limit: int | None = Field(
        default=None, ge=1, le=1000, description="Detections per page (default 100)."
    )
    cursor: str | None = Field(
        default=None, max_length=64, description="`next_cursor` of the previous page."
    )
    format: ResultFormat = Field(default="json", description="json, csv or ndjson.")


class DriftQuery(ParameterModel):
    model_version: str | None = Field(
        default=None,
        max_length=200,
        # Printable ASCII only: the version is echoed in a response header.
        pattern=r"^[\x20-\x7e]+$",
        description="Model version to report; default: the one the workers serve.",
    )


# --- responses --------------------------------------------------------------------


class DetectionList(RootModel[list[Detection]]):
    """The Detections of an archive, in archive order."""


class JobAccepted(JobDocument):
    model_config = _extra(
        headers={
            "Location": {"description": "The job's URL.", "schema": {"type": "string"}},
            **_RATE_HEADERS,
        }
    )


class ResultsPage(BaseModel):
    model_config = _extra(
        headers={
            "Link": {"description": 'The next page, rel="next".', "schema": {"type": "string"}},
            "X-Next-Cursor": {
                "description": "Cursor of the next page.",
                "schema": {"type": "string"},
            },
        },
        content={
            "text/csv": {"schema": {"type": "string"}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    )

    job_id: str
    status: JobStatus
    items: list[Detection]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null when the job has ended "
        "and nothing follows."
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    device: str = Field(description="Inference device of the live workers, e.g. cpu or cuda:0.")


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    checks: dict[str, str]
    workers: int


class NotReady(ErrorBody):
    model_config = _extra(headers=_RETRY_AFTER)

    checks: dict[str, str]
    down: list[str]


class RateLimited(ErrorBody):
    model_config = _extra(headers={**_RETRY_AFTER, **_RATE_HEADERS})


class Unavailable(ErrorBody):
    model_config = _extra(headers=_RETRY_AFTER)


ERROR_RESPONSES: dict[int, type[BaseModel]] = {
    400: ErrorBody,
    413: ErrorBody,
    415: ErrorBody,
    429: RateLimited,
    500: ErrorBody,
    503: Unavailable,
}
