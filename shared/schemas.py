"""Response schemas shared by the API, the workers and the CLI.

``Detection`` and ``Candidate`` are the EcoMarineAI seed's schema, field for
field; the fields after the seed's are additive and optional, so an old client
that validates against the seed's model still accepts every response.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RejectionReason = Literal["not_a_marine_mammal", "low_confidence", "corrupted_image"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobKind = Literal["single", "batch"]

REJECTION_REASONS: tuple[str, ...] = ("not_a_marine_mammal", "low_confidence", "corrupted_image")
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
DEFAULT_MODEL_VERSION = "effb4-arcface-v1"


class Candidate(BaseModel):
    """One of the top-k identities."""

    class_animal: str = Field(description="12-hex individual id.")
    id_animal: str = Field(description="Species name in snake_case.")
    probability: float = Field(ge=0.0, le=1.0)


class Detection(BaseModel):
    """One processed image, in the seed's shape plus additive fields."""

    image_ind: str = Field(description="File name or ZIP entry name.")
    bbox: list[int] = Field(description="[x1, y1, x2, y2] in the original image's pixels.")
    class_animal: str = Field(description="12-hex individual id; empty on rejection.")
    id_animal: str = Field(description="Species (snake_case) or 'unknown'.")
    probability: float = Field(ge=0.0, le=1.0, description="Identification confidence.")
    mask: str | None = Field(default=None, description="Base64 PNG, background removed.")
    is_cetacean: bool = Field(default=True, description="Anti-fraud gate decision.")
    cetacean_score: float = Field(ge=0.0, le=1.0, description="Gate positive score.")
    rejected: bool = False
    rejection_reason: RejectionReason | None = None
    model_version: str = DEFAULT_MODEL_VERSION
    candidates: list[Candidate] = Field(default_factory=list)
    # --- additive fields --------------------------------------------------------
    detection_id: int | None = Field(default=None, description="Row id in the history.")
    image_sha256: str | None = Field(default=None, description="sha256 of the uploaded bytes.")
    error: str | None = Field(
        default=None,
        description="Set when the image could not be processed at all (the job counts it "
        "as failed); rejected is then true and rejection_reason null.",
    )


class JobDocument(BaseModel):
    """What ``GET /v1/jobs/{id}`` answers."""

    job_id: str
    kind: JobKind = "batch"
    status: JobStatus
    total: int | None = Field(default=None, description="Images in the archive, once known.")
    processed: int = 0
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    skipped: int = 0
    model_version: str | None = None
    mask: bool = False
    error: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    results_url: str


class DriftStats(BaseModel):
    """Window statistics of stored cetacean scores for the current model."""

    n: int
    alarms_total: int
    score_mean: float
    score_std: float
    probability_mean: float


class ErrorBody(BaseModel):
    """Every error answer: the seed's ``detail`` plus a stable code and a sentence."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "detail": "Только изображения.",
                "code": "unsupported_media_type",
                "message": "Only image uploads are accepted.",
            }
        }
    )

    detail: str
    code: str
    message: str
