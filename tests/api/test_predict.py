"""The predict routes end to end: HTTP, the queue, a real worker, Postgres."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from api.app import app_services
from shared.db.engine import Database
from shared.db.models import DetectionRow, Job
from tests.api.conftest import client_for
from tests.api.helpers import photos, post_file, validate_seed_detection
from tests.services import PrivateRedis
from tests.workers import WorkerProcess
from tests.zips import build_zip

LEGACY_AND_V1 = pytest.mark.parametrize("prefix", ["/v1", ""], ids=["v1", "legacy"])


@LEGACY_AND_V1
def test_single_image_answers_a_seed_detection_that_is_stored(
    client: FlaskClient, worker: WorkerProcess, database: Database, prefix: str
) -> None:
    name, data = photos()[0]

    response = post_file(client, f"{prefix}/predict-single", "file", name, data, "image/jpeg")

    assert response.status_code == 200, response.get_json()
    # The client's first prediction: its rate-limit window, read while the
    # worker computed, counts this request.
    assert (response.headers["X-RateLimit-Limit"], response.headers["X-RateLimit-Remaining"]) == (
        "60",
        "59",
    )
    body = response.get_json()
    detection = validate_seed_detection(body)
    assert detection.image_ind == name
    assert detection.mask is not None  # masks are on by default for single images
    assert len(detection.bbox) == 4
    with database.session() as session:
        row = session.get_one(DetectionRow, body["detection_id"])
        job = session.get_one(Job, row.job_id)
    assert (row.image_ind, row.image_sha256) == (name, body["image_sha256"])
    assert (job.kind, job.status, str(job.id)) == (
        "single",
        "succeeded",
        response.headers["X-Job-Id"],
    )


def test_the_answered_result_leaves_redis_once_the_response_is_sent(
    api_app: Flask, client: FlaskClient, worker: WorkerProcess
) -> None:
    name, data = photos()[0]

    response = post_file(client, "/v1/predict-single?mask=false", "file", name, data, "image/jpeg")

    assert response.status_code == 200, response.get_json()
    backend = app_services(api_app).celery.backend  # this thread's, as in the request
    key = backend.get_key_for_task(response.headers["X-Job-Id"])
    assert backend.client.exists(key)  # kept while the answer is on its way
    response.close()  # what the WSGI server does once the body is sent
    assert not backend.client.exists(key)
    # The request waited on its own subscription; Celery's shared result
    # consumer follows no task sent by the API.
    consumer = backend.result_consumer
    assert consumer._pubsub is None or not consumer.subscribed_to


def test_raw_body_png_declared_as_jpeg_without_mask(
    client: FlaskClient, worker: WorkerProcess
) -> None:
    _, data = photos()[1]
    png = io.BytesIO()
    Image.open(io.BytesIO(data)).save(png, format="PNG")

    response = client.post(
        "/v1/predict-single?mask=false",
        data=png.getvalue(),
        content_type="image/jpeg",  # wrong on purpose: the bytes decide
        headers={"Content-Disposition": 'attachment; filename="flipper.png"'},
    )

    assert response.status_code == 200, response.get_json()
    detection = validate_seed_detection(response.get_json())
    assert (detection.image_ind, detection.mask) == ("flipper.png", None)


def test_large_single_image_travels_through_the_blob_store(
    make_app: Callable[..., Flask], worker: WorkerProcess, stack_env: dict[str, str]
) -> None:
    app = make_app(inline_image_bytes=1024)  # every sample photo is larger
    client = client_for(app)
    name, data = photos()[2]

    response = post_file(client, "/v1/predict-single?mask=false", "file", name, data, "image/jpeg")

    assert response.status_code == 200, response.get_json()
    assert validate_seed_detection(response.get_json()).image_ind == name
    # The worker deleted the image once it was processed.
    images = Path(stack_env["WHALES_DATA_DIR"]) / "blobs" / "images"
    assert not list(images.glob("*"))


@LEGACY_AND_V1
def test_predict_batch_answers_the_list_in_archive_order(
    client: FlaskClient, worker: WorkerProcess, prefix: str
) -> None:
    images = photos("cetacean", 3) + photos("non_cetacean", 2)
    # Names that sort differently from the archive order.
    entries = [(f"{9 - index}_{name}", data) for index, (name, data) in enumerate(images)]
    entries.insert(2, ("readme.txt", b"not an image"))

    response = post_file(
        client, f"{prefix}/predict-batch", "archive", "survey.zip", build_zip(entries),
        "application/zip",
    )  # fmt: skip

    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    body = response.get_json()
    assert [item["image_ind"] for item in body] == [
        name for name, _ in entries if name.endswith(".jpg")
    ]
    for item in body:
        assert validate_seed_detection(item).mask is None  # batches skip masks by default
    assert len({uuid.UUID(response.headers["X-Job-Id"])}) == 1


def test_predict_batch_with_masks(client: FlaskClient, worker: WorkerProcess) -> None:
    entries = photos("cetacean", 1)

    response = post_file(
        client, "/v1/predict-batch?mask=true", "archive", "one.zip", build_zip(entries),
        "application/x-zip-compressed",
    )  # fmt: skip

    assert response.status_code == 200, response.get_json()
    assert [bool(item["mask"]) for item in response.get_json()] == [True]


def test_503_with_retry_after_when_no_worker_answers(
    make_app: Callable[..., Flask], private_redis: PrivateRedis, stack_env: dict[str, str]
) -> None:
    # A broker of its own that no worker consumes; the image goes by blob.
    app = make_app(broker_url=private_redis.url, interactive_timeout_s=0.5, inline_image_bytes=1024)
    client = client_for(app)
    name, data = photos()[0]

    response = post_file(client, "/v1/predict-single", "file", name, data, "image/jpeg")

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    body = response.get_json()
    assert body["code"] == "service_unavailable"
    assert "No worker answered" in body["message"]
    # No worker started the task: its message expires unread, so the API
    # deletes the image it stored for it.
    images = Path(stack_env["WHALES_DATA_DIR"]) / "blobs" / "images"
    assert not list(images.glob("*"))
