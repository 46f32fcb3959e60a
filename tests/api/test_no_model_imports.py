"""The API process never imports model libraries, whatever route it serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.paths import REPO_ROOT
from tests.workers import WorkerProcess

FORBIDDEN = ("torch", "timm", "open_clip", "rembg", "onnxruntime", "shared.inference")

# Runs in a fresh interpreter: creates the app, serves every route once, and
# reports which routes answered what, and which forbidden modules got loaded.
SCRIPT = r"""
import io, json, sys, zipfile
from api.app import create_app
from tests.paths import manifest

FORBIDDEN = %(forbidden)r
app = create_app()
client = app.test_client()
photo = next(row.path for row in manifest() if row.label == "cetacean").read_bytes()
buffer = io.BytesIO()
with zipfile.ZipFile(buffer, "w") as archive:
    archive.writestr("whale.jpg", photo)
zipped = buffer.getvalue()

def upload(url, field, name, data, kind, **headers):
    return client.post(url, data={field: (io.BytesIO(data), name, kind)},
                       content_type="multipart/form-data", headers=headers)

seen = {}
def record(rule, response):
    seen[rule] = response.status_code

for prefix in ("/v1", ""):
    single = upload(prefix + "/predict-single", "file", "w.jpg", photo, "image/jpeg")
    record("POST " + prefix + "/predict-single", single)
    batch = upload(prefix + "/predict-batch", "archive", "a.zip", zipped, "application/zip")
    record("POST " + prefix + "/predict-batch", batch)
job = upload("/v1/jobs", "archive", "a.zip", zipped, "application/zip")
record("POST /v1/jobs", job)
location = job.headers["Location"]
record("GET /v1/jobs/<job_id>", client.get(location))
for fmt in ("json", "csv", "ndjson"):
    record("GET /v1/jobs/<job_id>/results", client.get(location + "/results?format=" + fmt))
record("DELETE /v1/jobs/<job_id>", client.delete(location))
for url in ("/v1/drift-stats", "/health", "/ready", "/metrics", "/openapi.json", "/docs",
            "/redoc", "/swagger", "/", "/swagger/js/swagger-ui-bundle.js",
            "/redoc/js/redoc.standalone.js", "/oauth2-redirect.html", "/static/none.css"):
    rule = app.url_map.bind("localhost").match(url, return_rule=True)[0].rule
    record("GET " + rule, client.get(url))

rules = {f"{method} {rule.rule}" for rule in app.url_map.iter_rules()
         for method in rule.methods - {"HEAD", "OPTIONS"} if rule.endpoint != "static"}
print(json.dumps({
    "statuses": seen,
    "unserved": sorted(rules - set(seen)),
    "loaded": sorted(name for name in FORBIDDEN
                     if name in sys.modules or any(m.startswith(name + ".") for m in sys.modules)),
}))
"""


def test_serving_every_route_loads_no_model_library(
    stack_env: dict[str, str], worker: WorkerProcess
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT % {"forbidden": FORBIDDEN}],
        cwd=REPO_ROOT,
        env={**os.environ, **stack_env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["unserved"] == []
    statuses = report["statuses"]
    assert statuses["POST /v1/predict-single"] == statuses["POST /predict-single"] == 200
    assert statuses["POST /v1/predict-batch"] == statuses["POST /predict-batch"] == 200
    assert statuses["POST /v1/jobs"] == 202
    assert all(status < 500 for status in statuses.values()), statuses
    assert report["loaded"] == []
