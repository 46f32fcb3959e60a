"""The OpenAPI document: generated from the code, honoured by the API (a
schemathesis run finds no 5xx and no violation), and rendered by Swagger UI
and ReDoc in a real browser with no network but loopback."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import client_for
from tests.api.live import served_in_thread
from tests.workers import WorkerProcess

CHROMIUM = Path("/usr/bin/chromium")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
EXAMPLES_PER_OPERATION = 12
NO_INVALID_INPUT = {"GET /v1/jobs/{job_id}", "DELETE /v1/jobs/{job_id}"}


@pytest.fixture(scope="module")
def spec_app(make_app: Callable[..., Flask], worker: WorkerProcess) -> Flask:
    # Schemathesis makes real images from the spec, so a real worker answers
    # them. Generated traffic must not spend a client's rate-limit budget.
    return make_app(rate_limit_enabled=False, batch_wait_s=10.0)


def test_the_document_describes_every_route(spec_app: Flask) -> None:
    spec = client_for(spec_app).get("/openapi.json").get_json()

    assert spec["openapi"].startswith("3.1")
    operations = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert operations == {
        ("/v1/predict-single", "post"),
        ("/v1/predict-batch", "post"),
        ("/v1/jobs", "post"),
        ("/v1/jobs/{job_id}", "get"),
        ("/v1/jobs/{job_id}", "delete"),
        ("/v1/jobs/{job_id}/results", "get"),
        ("/v1/drift-stats", "get"),
        ("/predict-single", "post"),
        ("/predict-batch", "post"),
        ("/health", "get"),
        ("/ready", "get"),
        ("/metrics", "get"),
    }
    detection = spec["components"]["schemas"]["Detection"]
    assert set(detection["required"]) >= {"image_ind", "bbox", "class_animal", "id_animal"}
    single = spec["paths"]["/v1/predict-single"]["post"]
    assert {"200", "400", "413", "415", "422", "429", "503"} <= set(single["responses"])
    assert "multipart/form-data" in single["requestBody"]["content"]


@pytest.mark.parametrize(
    "mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
)
def test_schemathesis_finds_no_server_error_and_no_violation(
    spec_app: Flask, mode: schemathesis.GenerationMode
) -> None:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", spec_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 12

    spec = client_for(spec_app).get("/openapi.json").get_json()
    unsatisfiable: list[str] = []
    for operation in operations:
        described = spec["paths"][operation.path][operation.method.lower()]
        if mode is schemathesis.GenerationMode.NEGATIVE and not (
            described.get("parameters") or described.get("requestBody")
        ):
            continue  # nothing to get wrong

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS)

        try:
            run()
        except Unsatisfiable:
            unsatisfiable.append(operation.label)
    # Only operations whose sole input is a free-form string (a job id) admit
    # no invalid value; a path segment cannot be anything but a string.
    assert set(unsatisfiable) <= NO_INVALID_INPUT, unsatisfiable


def _dump_dom(url: str, profile: Path) -> str:
    """The page's DOM after its scripts ran, with every host but loopback unreachable."""
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={profile}",
        # Any request that is not to 127.0.0.1 goes to a proxy that does not exist...
        "--proxy-server=http://127.0.0.1:9",
        "--proxy-bypass-list=127.0.0.1",
        # ...and no other name resolves.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=20000",
        "--dump-dom",
        url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs the Debian chromium at /usr/bin/chromium")
def test_swagger_ui_and_redoc_render_offline(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    app = make_app()
    with served_in_thread(app) as url:
        swagger = _dump_dom(f"{url}/docs", tmp_path / "profile-swagger")
        redoc = _dump_dom(f"{url}/redoc", tmp_path / "profile-redoc")
    shutil.rmtree(tmp_path, ignore_errors=True)

    # Swagger UI drew one block per operation from /openapi.json.
    assert swagger.count('class="opblock ') >= 12, swagger[:2000]
    assert "/v1/predict-single" in swagger
    assert "/v1/jobs/{job_id}/results" in swagger
    # ReDoc drew the operations' summaries.
    assert "Identify one image." in redoc, redoc[:2000]
    assert "A page of a job" in redoc
