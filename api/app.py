"""The API's app factory.

``create_app(settings)`` builds one Flask app: its services (database, Redis,
Celery, blob store; all connecting lazily), the error handlers, upload
streaming, the rate limiter, metrics, and the three blueprints (v1, the seed's
legacy aliases, ops). The OpenAPI 3 document is generated from the code and
served at ``/openapi.json``, with Swagger UI at ``/docs`` and ReDoc at
``/redoc``, both from assets installed with the package (no CDN).

Why flask-openapi3 rather than the alternatives:

- flask-smorest describes and validates with marshmallow; our schemas are
  pydantic models shared with the workers and the CLI (``shared.schemas``), so
  every schema would exist twice and drift.
- spectree is pydantic-based too, but its Swagger UI and ReDoc pages load
  their JavaScript from a CDN, and the service must document itself offline.
  flask-openapi3's UIs are pip packages (flask-openapi3-swagger,
  flask-openapi3-redoc) whose assets Flask serves itself.
- apispec only assembles a spec from docstrings or plugins: no request
  validation and no UI, and a hand-kept YAML docstring goes stale silently.

flask-openapi3 validates path, query and header parameters with the same
pydantic models that generate the spec, so the spec cannot disagree with the
code.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, render_template_string
from flask_openapi3 import Info, OpenAPI
from flask_openapi3_swagger.templates import swagger_html_string
from pydantic import ValidationError

from api.context import build_services, init_services
from api.errors import error_response, register_error_handlers
from api.limits import create_limiter
from api.metrics import init_metrics
from api.routes import build_legacy, build_ops, build_v1, route_limits
from api.uploads import (
    MAX_FORM_FIELD_BYTES,
    MAX_FORM_PARTS,
    MULTIPART_OVERHEAD,
    UploadRequest,
    discard_spools,
)
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)

API_TITLE = "Whale and dolphin photo-identification API"
API_VERSION = "1.0.0"


def _validation_error(error: ValidationError) -> Response:
    # Parameters that fail their model: same JSON shape as every other error.
    return error_response(
        422,
        "validation_error",
        "The request's parameters are invalid.",
        extra={
            "errors": error.errors(include_url=False, include_context=False, include_input=False)
        },
    )


def _swagger_page() -> str:
    # The plugin's own page, at the seed's address; assets resolve relative
    # to it, under /swagger/, served from the installed package.
    return render_template_string(
        swagger_html_string, doc_url="openapi.json", swagger_config=None, oauth_config=None
    )


class ServiceOpenAPI(OpenAPI):
    """flask-openapi3 adds a parameter-validation answer to every operation;
    an operation without parameters or body can never give it."""

    def generate_spec_json(self) -> None:
        super().generate_spec_json()
        for path_item in self.spec_json["paths"].values():
            for operation in path_item.values():
                if not operation.get("parameters") and not operation.get("requestBody"):
                    operation["responses"].pop(self.validation_error_status, None)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or get_settings()
    app = ServiceOpenAPI(
        __name__,
        info=Info(
            title=API_TITLE,
            version=API_VERSION,
            description="Identify whales and dolphins in photos: single images synchronously, "
            "ZIP archives as jobs. Errors are JSON {detail, code, message}.",
        ),
        doc_prefix="",
        doc_url="/openapi.json",
        validation_error_status=422,
        validation_error_callback=_validation_error,
        # None would be written as `securitySchemes: null`, which OpenAPI forbids.
        security_schemes={},
    )
    app.request_class = UploadRequest
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]  # the seed's Russian texts
    app.config.update(
        MAX_CONTENT_LENGTH=max(settings.max_archive_bytes, settings.max_image_bytes)
        + MULTIPART_OVERHEAD,
        MAX_FORM_MEMORY_SIZE=MAX_FORM_FIELD_BYTES,
        MAX_FORM_PARTS=MAX_FORM_PARTS,
        PROPAGATE_EXCEPTIONS=False,
    )

    services = build_services(settings)
    init_services(app, services)
    register_error_handlers(app)
    app.teardown_request(discard_spools)
    limiter = create_limiter(app, settings, services.broker_url)
    init_metrics(app, services)

    limits = route_limits(limiter, settings)
    app.register_api(build_v1(limits))
    app.register_api(build_legacy(limits))
    app.register_api(build_ops())
    app.add_url_rule("/docs", endpoint="swagger_docs", view_func=_swagger_page)
    log.debug("API app created for data dir %s", settings.data_dir)
    return app


def app_services(app: Flask) -> Any:
    """The services of an app (tests and the command line close them)."""
    from api.context import EXTENSION_KEY

    return app.extensions[EXTENSION_KEY]
