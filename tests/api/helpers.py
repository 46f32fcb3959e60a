"""The seed's Detection schema, as its clients validate it, and upload helpers."""

from __future__ import annotations

import time
from typing import Any, Literal

from flask.testing import FlaskClient
from pydantic import BaseModel, ConfigDict
from urllib3 import encode_multipart_formdata
from werkzeug.test import TestResponse

from shared.schemas import TERMINAL_STATUSES
from tests.paths import manifest


class SeedCandidate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    class_animal: str
    id_animal: str
    probability: float


class SeedDetection(BaseModel):
    """Copied from the EcoMarineAI API reference; strict types, and extra
    fields allowed only because the contract says new fields may be added."""

    model_config = ConfigDict(extra="allow", strict=True)

    image_ind: str
    bbox: list[int]
    class_animal: str
    id_animal: str
    probability: float
    mask: str | None = None
    is_cetacean: bool = True
    cetacean_score: float
    rejected: bool = False
    rejection_reason: Literal["not_a_marine_mammal", "low_confidence", "corrupted_image"] | None = (
        None
    )
    model_version: str = "effb4-arcface-v1"
    candidates: list[SeedCandidate] = []


SEED_FIELDS = tuple(SeedDetection.model_fields)


def validate_seed_detection(payload: dict[str, Any]) -> SeedDetection:
    # Every seed field is present in the answer, not merely defaulted.
    missing = [name for name in SEED_FIELDS if name not in payload]
    assert not missing, f"seed fields missing: {missing}"
    return SeedDetection.model_validate(payload)


def photos(label: str = "cetacean", count: int = 3) -> list[tuple[str, bytes]]:
    chosen = [row for row in manifest() if row.label == label][:count]
    return [(row.path.name, row.path.read_bytes()) for row in chosen]


def post_file(
    client: FlaskClient,
    url: str,
    field: str,
    name: str,
    data: bytes,
    content_type: str | None,
    headers: dict[str, str] | None = None,
) -> TestResponse:
    """A multipart upload of one file part with the given declared type,
    encoded as the requests library encodes it (urllib3); no declared type
    means the one guessed from the file name."""
    part = (name, data) if content_type is None else (name, data, content_type)
    body, multipart_type = encode_multipart_formdata({field: part})
    return client.post(url, data=body, content_type=multipart_type, headers=headers or {})


def wait_for_status(client: FlaskClient, location: str, timeout: float = 180.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(location)
        assert response.status_code == 200, response.get_json()
        document: dict[str, Any] = response.get_json()
        if document["status"] in TERMINAL_STATUSES:
            return document
        if time.monotonic() > deadline:
            raise TimeoutError(f"{location} still {document['status']} after {timeout} s")
        time.sleep(0.2)
