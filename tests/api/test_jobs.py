"""Jobs over HTTP: async submission, polling, paginated results, cancel,
idempotent resubmission."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from typing import Any

from flask.testing import FlaskClient

from shared.db.engine import Database
from tests.api.helpers import photos, post_file, validate_seed_detection, wait_for_status
from tests.submit import numbered_copies, row_count
from tests.workers import WorkerProcess
from tests.zips import build_zip


def _submit(client: FlaskClient, archive: bytes, url: str = "/v1/jobs", **headers: str) -> Any:
    return post_file(client, url, "archive", "survey.zip", archive, "application/zip", headers)


def _archive(count: int) -> tuple[bytes, list[str]]:
    entries = numbered_copies([path for path in _sample_paths()], count)
    return build_zip(entries), [name for name, _ in entries]


def _sample_paths() -> list[Any]:
    from tests.paths import all_sample_images

    return all_sample_images()[:4]


def test_prefer_respond_async_then_polling_reaches_succeeded(
    client: FlaskClient, worker: WorkerProcess
) -> None:
    archive, names = _archive(6)

    response = _submit(client, archive, "/v1/predict-batch", Prefer="respond-async")

    assert response.status_code == 202, response.get_json()
    document = response.get_json()
    location = response.headers["Location"]
    assert location == f"/v1/jobs/{document['job_id']}"
    assert response.headers["Preference-Applied"] == "respond-async"
    assert document["status"] in ("queued", "running")
    assert document["results_url"] == f"{location}/results"

    final = wait_for_status(client, location)

    assert final["status"] == "succeeded"
    assert final["total"] == final["processed"] == len(names)
    assert final["accepted"] + final["rejected"] + final["failed"] == len(names)
    assert final["finished_at"] is not None


def test_results_paginate_in_json_csv_and_ndjson(
    client: FlaskClient, worker: WorkerProcess
) -> None:
    archive, names = _archive(7)
    response = _submit(client, archive)
    assert response.status_code == 202
    location = response.headers["Location"]
    assert wait_for_status(client, location)["status"] == "succeeded"

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(f"{location}/results?{query}")
        assert page.status_code == 200
        body = page.get_json()
        assert body["status"] == "succeeded"
        assert len(body["items"]) <= 3
        for item in body["items"]:
            validate_seed_detection(item)
        seen += [item["image_ind"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            assert "Link" not in page.headers
            break
        assert page.headers["X-Next-Cursor"] == cursor
        assert 'rel="next"' in page.headers["Link"]
    assert seen == names
    assert pages == 3

    first_csv = client.get(f"{location}/results?format=csv&limit=4")
    assert first_csv.status_code == 200
    assert first_csv.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(first_csv.get_data(as_text=True))))
    assert [row["image_ind"] for row in rows] == names[:4]
    assert [int(row["position"]) for row in rows] == [0, 1, 2, 3]
    assert all(len(json.loads(row["bbox"])) == 4 for row in rows)
    rest_csv = client.get(
        f"{location}/results?format=csv&limit=4&cursor={first_csv.headers['X-Next-Cursor']}"
    )
    rest = list(csv.DictReader(io.StringIO(rest_csv.get_data(as_text=True))))
    assert [row["image_ind"] for row in rest] == names[4:]
    assert "X-Next-Cursor" not in rest_csv.headers

    ndjson = client.get(f"{location}/results?format=ndjson&limit=100")
    assert ndjson.mimetype == "application/x-ndjson"
    lines = [json.loads(line) for line in ndjson.get_data(as_text=True).splitlines()]
    assert [line["image_ind"] for line in lines] == names
    for line in lines:
        validate_seed_detection(line)


def test_a_bad_cursor_is_a_clear_400(client: FlaskClient, worker: WorkerProcess) -> None:
    response = _submit(client, build_zip(photos(count=1)), Prefer="respond-async")
    location = response.headers["Location"]

    answer = client.get(f"{location}/results?cursor=not-a-cursor")

    assert answer.status_code == 400
    assert answer.get_json()["code"] == "invalid_cursor"


def test_unknown_and_malformed_job_ids_are_404(client: FlaskClient) -> None:
    for job_id in (str(uuid.uuid4()), "not-a-uuid"):
        for method, suffix in (("GET", ""), ("GET", "/results"), ("DELETE", "")):
            response = client.open(f"/v1/jobs/{job_id}{suffix}", method=method)
            assert response.status_code == 404, (method, suffix)
            assert response.get_json()["code"] == "job_not_found"


def test_cancel_stops_the_job_and_keeps_finished_rows(
    client: FlaskClient, worker: WorkerProcess, database: Database
) -> None:
    archive, _ = _archive(60)  # 15 chunks of 4 on this stack
    response = _submit(client, archive)
    location = response.headers["Location"]
    job_id = uuid.UUID(response.get_json()["job_id"])
    deadline = time.monotonic() + 120
    while client.get(location).get_json()["processed"] < 4 and time.monotonic() < deadline:
        time.sleep(0.1)

    cancelled = client.delete(location)

    assert cancelled.status_code == 200, cancelled.get_json()
    assert cancelled.get_json()["status"] == "cancelled"
    rows_at_cancel = row_count(database, job_id)
    time.sleep(2.0)  # a chunk already running may finish; no new chunk starts
    final = client.get(location).get_json()
    assert final["status"] == "cancelled"
    assert 4 <= row_count(database, job_id) <= rows_at_cancel + 8
    assert final["processed"] < 60
    # Its rows stay readable, and cancelling again changes nothing.
    page = client.get(f"{location}/results?limit=1000").get_json()
    assert len(page["items"]) == final["processed"]
    assert page["next_cursor"] is None
    assert client.delete(location).status_code == 200


def test_cancelling_a_finished_job_is_a_conflict(
    client: FlaskClient, worker: WorkerProcess
) -> None:
    response = _submit(client, build_zip(photos(count=1)))
    location = response.headers["Location"]
    assert wait_for_status(client, location)["status"] == "succeeded"

    answer = client.delete(location)

    assert answer.status_code == 409
    assert answer.get_json()["code"] == "job_finished"
    assert client.get(location).get_json()["status"] == "succeeded"


def test_idempotency_key_returns_the_first_job(
    client: FlaskClient, worker: WorkerProcess, database: Database
) -> None:
    key = f"survey-{uuid.uuid4()}"
    archive = build_zip(photos(count=2))

    first = _submit(client, archive, **{"Idempotency-Key": key})
    retry = _submit(client, archive, **{"Idempotency-Key": key})
    other = _submit(client, archive, **{"Idempotency-Key": f"{key}-other"})

    assert first.status_code == retry.status_code == other.status_code == 202
    assert retry.get_json()["job_id"] == first.get_json()["job_id"]
    assert retry.headers["Location"] == first.headers["Location"]
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert other.get_json()["job_id"] != first.get_json()["job_id"]
    final = wait_for_status(client, first.headers["Location"])
    assert final["processed"] == 2
    assert row_count(database, uuid.UUID(final["job_id"])) == 2


def test_batch_wait_limit_answers_202(make_app: Any, worker: WorkerProcess) -> None:
    from tests.api.conftest import client_for

    app = make_app(batch_wait_s=0.0)
    client = client_for(app)

    response = _submit(client, build_zip(photos(count=2)), "/v1/predict-batch")

    assert response.status_code == 202
    assert "Preference-Applied" not in response.headers
    assert wait_for_status(client, response.headers["Location"])["status"] == "succeeded"


def test_drift_stats_come_from_stored_rows(client: FlaskClient, worker: WorkerProcess) -> None:
    response = _submit(client, build_zip(photos(count=3)), "/v1/predict-batch")
    assert response.status_code == 200

    stats = client.get("/v1/drift-stats")

    assert stats.status_code == 200
    body = stats.get_json()
    assert set(body) == {"n", "alarms_total", "score_mean", "score_std", "probability_mean"}
    assert body["n"] >= 3
    assert 0.0 <= body["score_mean"] <= 1.0
    assert stats.headers["X-Model-Version"]
    unknown = client.get("/v1/drift-stats?model_version=never-deployed").get_json()
    assert unknown["n"] == 0


def test_drift_stats_refuse_a_model_version_that_is_not_printable(client: FlaskClient) -> None:
    response = client.get("/v1/drift-stats?model_version=v1%0D%0AX-Evil:%201")

    assert response.status_code == 422
    assert response.get_json()["code"] == "validation_error"
    assert "X-Evil" not in response.headers
