"""A small dataset with known reporting answers, shared by the reporting tests.

Batch job: four accepted photos (individuals A, B, C), two rejected, one failed,
one corrupted; single job: one more photo of A. Dates are in March 2026, UTC.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert

from shared.db.engine import Database
from shared.db.models import DetectionRow, Job

BATCH = uuid.UUID("00000000-0000-4000-8000-00000000000b")
SINGLE = uuid.UUID("00000000-0000-4000-8000-000000000005")
A, B, C = "aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def _row(job: uuid.UUID, position: int, created: datetime, **fields: Any) -> dict[str, Any]:
    accepted = not fields.get("rejected", False)
    row: dict[str, Any] = {
        "job_id": job,
        "position": position,
        "image_ind": f"IMG_{position}.JPG",
        "bbox": [0, 0, 100, 100],
        "class_animal": "",
        "id_animal": "unknown",
        "probability": 0.0,
        "is_cetacean": accepted,
        "cetacean_score": 0.9 if accepted else 0.1,
        "rejected": False,
        "model_version": "m1",
        "created_at": created,
        "image_sha256": f"{position:064x}",
    }
    row.update(fields)
    return row


def _accepted(
    job: uuid.UUID,
    position: int,
    created: datetime,
    individual: str,
    species: str,
    captured: datetime | None,
) -> dict[str, Any]:
    return _row(
        job,
        position,
        created,
        class_animal=individual,
        id_animal=species,
        probability=0.8,
        captured_at=captured,
        gps_lat=-20.5 if captured else None,
        gps_lon=57.4 if captured else None,
    )


def _rejected(job: uuid.UUID, position: int, created: datetime, reason: str) -> dict[str, Any]:
    return _row(job, position, created, rejected=True, rejection_reason=reason)


ROWS = [
    # Captured late on 1 March UTC: the 2nd in Auckland, the 1st in every UTC report.
    _accepted(BATCH, 0, at(5, 9), A, "humpback_whale", at(1, 23, 30)),
    # No capture time: seen when processed.
    _accepted(BATCH, 1, at(2, 10), A, "humpback_whale", None),
    _accepted(BATCH, 2, at(5, 8), B, "humpback_whale", at(1, 8)),
    _accepted(BATCH, 3, at(5, 8), C, "blue_whale", at(2, 12)),
    _rejected(BATCH, 4, at(5, 9), "not_a_marine_mammal"),
    _rejected(BATCH, 5, at(5, 10), "low_confidence"),
    _row(BATCH, 6, at(5, 11), rejected=True, error="worker_lost"),
    _rejected(BATCH, 7, at(6, 1), "corrupted_image"),
    _accepted(SINGLE, 0, at(6, 2), A, "humpback_whale", at(3, 7)),
]


def load_dataset(db: Database) -> Database:
    """Insert the two jobs and their detections above."""
    with db.session() as session:
        session.execute(
            insert(Job),
            [
                {"id": BATCH, "kind": "batch", "status": "succeeded"},
                {"id": SINGLE, "kind": "single", "status": "succeeded"},
            ],
        )
        session.execute(insert(DetectionRow), ROWS)
    return db
