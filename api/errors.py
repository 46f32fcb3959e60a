"""Every error the API answers is JSON ``{detail, code, message}``.

``detail`` keeps the EcoMarineAI seed's Russian text where the seed has one,
so its existing clients keep working; ``code`` is a stable snake_case name and
``message`` an English sentence. No HTML error page and no stack trace ever
leaves the process, whatever the status (404, 405 and 500 included).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import kombu.exceptions
import redis
import sqlalchemy.exc
from flask import Flask, Response, g, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

log = logging.getLogger(__name__)

_OUTAGES: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    redis.ConnectionError,
    redis.TimeoutError,
    kombu.exceptions.OperationalError,
)

# The seed's texts, word for word.
DETAIL_ONLY_IMAGES = "Только изображения."
DETAIL_EMPTY_FILE = "Пустой файл."
DETAIL_UNDECODABLE = "Не удалось распознать изображение."
DETAIL_EXPECTED_ZIP = "Ожидается ZIP-архив."
DETAIL_BAD_ZIP = "Не удаётся распаковать архив."
DETAIL_RATE_LIMITED = "Превышен лимит запросов. Повторите позже."


@dataclass
class ApiError(Exception):
    """An answer that is an error; raised anywhere in a request, rendered here."""

    status: int
    code: str
    message: str
    detail: str | None = None  # defaults to the message where the seed has no text
    headers: dict[str, str] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


def error_response(
    status: int,
    code: str,
    message: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, object] | None = None,
) -> Response:
    # Read by the metrics hook: errors_total is labelled with the code.
    g.error_code = code
    body: dict[str, object] = {"detail": detail or message, "code": code, "message": message}
    body.update(extra or {})
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    if "Retry-After" in response.headers:
        g.retry_after = response.headers["Retry-After"]
    return response


# Codes and sentences for the statuses werkzeug raises on its own.
_HTTP_CODES: dict[int, tuple[str, str]] = {
    400: ("bad_request", "The request could not be understood."),
    404: ("not_found", "No such resource."),
    405: ("method_not_allowed", "This method is not allowed on this resource."),
    406: ("not_acceptable", "No acceptable representation."),
    411: ("length_required", "A Content-Length is required."),
    413: ("payload_too_large", "The request body is larger than the limit."),
    414: ("uri_too_long", "The request URI is too long."),
    415: ("unsupported_media_type", "Unsupported media type."),
    429: ("rate_limited", "Too many requests; try again later."),
    431: ("headers_too_large", "The request headers are too large."),
}


def unsupported_image_type() -> ApiError:
    return ApiError(
        415, "unsupported_media_type", "Only image uploads are accepted.", DETAIL_ONLY_IMAGES
    )


def empty_file() -> ApiError:
    return ApiError(400, "empty_file", "The uploaded file is empty.", DETAIL_EMPTY_FILE)


def undecodable_image(reason: str = "The upload is not a readable image.") -> ApiError:
    return ApiError(415, "undecodable_image", reason, DETAIL_UNDECODABLE)


def expected_zip() -> ApiError:
    return ApiError(
        415, "unsupported_media_type", "A ZIP archive is expected.", DETAIL_EXPECTED_ZIP
    )


def bad_archive(reason: str = "The archive is not a readable ZIP.") -> ApiError:
    return ApiError(400, "bad_archive", reason, DETAIL_BAD_ZIP)


def payload_too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "payload_too_large",
        f"The upload is larger than the limit of {limit} bytes.",
        extra={"limit_bytes": limit},
    )


def job_not_found(job_id: str) -> ApiError:
    return ApiError(404, "job_not_found", f"No job with id {job_id!r}.")


def service_unavailable(message: str, retry_after_s: int = 5) -> ApiError:
    return ApiError(
        503, "service_unavailable", message, headers={"Retry-After": str(retry_after_s)}
    )


def _render_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    if error.response is not None:
        # Built by this service already (the rate limiter's JSON 429).
        return error.response  # type: ignore[return-value]
    if isinstance(error, RequestEntityTooLarge):
        limit = g.get("upload_limit")
        if limit is not None:  # an upload route: name its limit
            too_large = payload_too_large(limit)
            return error_response(413, too_large.code, too_large.message, extra=too_large.extra)
        code, message = _HTTP_CODES[413]
        return error_response(413, code, message)
    code, message = _HTTP_CODES.get(status, ("http_error", error.name or "HTTP error."))
    if status == 429:
        return error_response(429, code, message, detail=DETAIL_RATE_LIMITED)
    response = error_response(status, code, message)
    # Keep what the exception says about itself (Allow on 405, for instance).
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Response:
        return error_response(
            error.status, error.code, error.message, error.detail, error.headers, error.extra
        )

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        return _render_http_exception(error)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        if isinstance(error, _OUTAGES):
            # A database or broker that does not answer is an outage, not a bug.
            log.warning("backing service unavailable: %s", error)
            return _api_error(service_unavailable("A backing service does not answer; retry."))
        # The trace goes to the log, never to the client.
        log.exception("unhandled error: %s", error)
        return error_response(500, "internal_error", "The server failed to handle the request.")
