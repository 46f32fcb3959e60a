"""Every error row of the seed's tables, the limits, and JSON errors everywhere."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.app import create_app
from shared.settings import Settings
from tests.api.conftest import client_for
from tests.api.helpers import photos, post_file
from tests.zips import build_zip, truncated

ONLY_IMAGES = "Только изображения."
EMPTY = "Пустой файл."
UNDECODABLE = "Не удалось распознать изображение."
EXPECTED_ZIP = "Ожидается ZIP-архив."
BAD_ZIP = "Не удаётся распаковать архив."


def _assert_error(response: object, status: int, code: str, detail: str | None = None) -> None:
    assert response.status_code == status, response.get_data(as_text=True)  # type: ignore[attr-defined]
    assert response.mimetype == "application/json"  # type: ignore[attr-defined]
    body = response.get_json()  # type: ignore[attr-defined]
    assert set(body) >= {"detail", "code", "message"}
    assert body["code"] == code
    assert body["message"]
    if detail is not None:
        assert body["detail"] == detail


# --- POST /v1/predict-single (and its alias) -------------------------------------------


@pytest.mark.parametrize("url", ["/v1/predict-single", "/predict-single"])
def test_single_image_errors_of_the_seed(client: FlaskClient, url: str) -> None:
    jpeg = photos()[0][1]
    # 415: non-image content type.
    _assert_error(
        post_file(client, url, "file", "notes.txt", b"field notes", "text/plain"),
        415, "unsupported_media_type", ONLY_IMAGES,
    )  # fmt: skip
    # 415: a body that is not multipart and has no image type (or none at all).
    _assert_error(client.post(url, data=b'{"a": 1}', content_type="application/json"),
                  415, "unsupported_media_type", ONLY_IMAGES)  # fmt: skip
    _assert_error(client.post(url, data=jpeg), 415, "unsupported_media_type", ONLY_IMAGES)
    # 400: empty upload.
    _assert_error(post_file(client, url, "file", "empty.jpg", b"", "image/jpeg"),
                  400, "empty_file", EMPTY)  # fmt: skip
    _assert_error(client.post(url, data=b"", content_type="image/jpeg"), 400, "empty_file", EMPTY)
    # 415: bytes that are no image, whatever the declared type.
    _assert_error(
        post_file(client, url, "file", "fake.jpg", b"just some text, honestly", "image/jpeg"),
        415, "undecodable_image", UNDECODABLE,
    )  # fmt: skip
    # A missing field is a clear 422, not a crash.
    _assert_error(
        client.post(url, data={"other": "x"}, content_type="multipart/form-data"),
        422, "missing_file",
    )  # fmt: skip


def test_a_corrupted_image_is_refused_as_undecodable(client: FlaskClient, worker: object) -> None:
    # The magic bytes pass the API's sniff; the worker finds it cannot decode it.
    broken = truncated(photos()[0][1], keep=0.3)

    response = post_file(client, "/v1/predict-single", "file", "broken.jpg", broken, "image/jpeg")

    _assert_error(response, 415, "undecodable_image", UNDECODABLE)


# --- POST /v1/predict-batch, /v1/jobs ------------------------------------------------------


@pytest.mark.parametrize("url", ["/v1/predict-batch", "/predict-batch", "/v1/jobs"])
def test_archive_errors_of_the_seed(client: FlaskClient, url: str) -> None:
    archive = build_zip(photos(count=1))
    # 415: non-ZIP content type.
    _assert_error(post_file(client, url, "archive", "a.jpg", photos()[0][1], "image/jpeg"),
                  415, "unsupported_media_type", EXPECTED_ZIP)  # fmt: skip
    _assert_error(client.post(url, data=archive, content_type="text/plain"),
                  415, "unsupported_media_type", EXPECTED_ZIP)  # fmt: skip
    # 400: malformed ZIP (bytes that are not one; one cut in half).
    _assert_error(post_file(client, url, "archive", "a.zip", b"hello", "application/zip"),
                  400, "bad_archive", BAD_ZIP)  # fmt: skip
    _assert_error(
        post_file(client, url, "archive", "cut.zip", truncated(archive, 0.5), "application/zip"),
        400, "bad_archive", BAD_ZIP,
    )  # fmt: skip
    # 400: empty upload.
    _assert_error(post_file(client, url, "archive", "a.zip", b"", "application/zip"),
                  400, "empty_file", EMPTY)  # fmt: skip
    _assert_error(
        client.post(url, data={"file": (io.BytesIO(archive), "a.zip", "application/zip")},
                    content_type="multipart/form-data"),
        422, "missing_archive",
    )  # fmt: skip


# --- limits -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_limits_app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(max_image_bytes=20_000, max_archive_bytes=300_000, max_zip_entries=3)


def test_oversize_uploads_are_413_with_a_clear_body(small_limits_app: Flask) -> None:
    client = client_for(small_limits_app)
    jpeg = photos()[0][1]
    assert len(jpeg) > 20_000

    multipart = post_file(client, "/v1/predict-single", "file", "big.jpg", jpeg, "image/jpeg")
    raw = client.post("/v1/predict-single", data=jpeg, content_type="image/jpeg")
    archive = client.post(
        "/v1/jobs", data=b"PK\x03\x04" + bytes(400_000), content_type="application/zip"
    )

    for response, limit in ((multipart, 20_000), (raw, 20_000), (archive, 300_000)):
        _assert_error(response, 413, "payload_too_large")
        assert response.get_json()["limit_bytes"] == limit
        assert f"limit of {limit} bytes" in response.get_json()["message"]


def test_an_archive_over_the_entry_limit_is_413(small_limits_app: Flask) -> None:
    client = client_for(small_limits_app)
    entries = [(f"tiny_{index}.jpg", b"x") for index in range(4)]

    response = post_file(
        client, "/v1/jobs", "archive", "many.zip", build_zip(entries), "application/zip"
    )

    _assert_error(response, 413, "archive_limits_exceeded")


def test_a_lying_zip_bomb_becomes_a_failed_job_and_413_when_waited_for(
    client: FlaskClient, worker: object
) -> None:
    # Its central directory looks fine to the API; the worker inflates it and refuses.
    from shared.settings import get_settings
    from tests.zips import lying_zip_bomb

    bomb = lying_zip_bomb(entry_count=1, real_size=get_settings().max_entry_bytes + (1 << 20))

    response = post_file(
        client, "/v1/predict-batch", "archive", "bomb.zip", bomb, "application/zip"
    )

    _assert_error(response, 413, "archive_limits_exceeded")


# --- JSON for the framework's own errors ------------------------------------------------------


def test_404_405_and_500_are_json_without_traces(stack_env: dict[str, str]) -> None:
    app = create_app(Settings())

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("secret internals")

    client = client_for(app)
    _assert_error(client.get("/no/such/route"), 404, "not_found")
    not_allowed = client.put("/v1/predict-single")
    _assert_error(not_allowed, 405, "method_not_allowed")
    assert "POST" in not_allowed.headers["Allow"]
    crash = client.get("/boom")
    _assert_error(crash, 500, "internal_error")
    assert b"secret internals" not in crash.data
    assert b"Traceback" not in crash.data
    _assert_error(client.get("/v1/jobs/x/results?limit=0"), 422, "validation_error")


def test_zipfile_module_agrees_our_archives_are_valid() -> None:
    # Guards the fixtures above: the "bad" archives are bad only where meant to be.
    with zipfile.ZipFile(io.BytesIO(build_zip(photos(count=1)))) as archive:
        assert archive.testzip() is None
