"""The single image's row, written through the driver: the same row, the same errors."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from shared.db.driver_statement import DriverStatement
from shared.db.engine import Database
from shared.db.models import DetectionRow, Job
from shared.jobs import DetectionRecord, store_single


def _full_record() -> DetectionRecord:
    return DetectionRecord(
        position=0,
        image_ind="fluke ü.jpg",
        bbox=[3, 4, 640, 480],
        class_animal="1a71fbb72250",
        id_animal="humpback_whale",
        probability=0.8125,
        is_cetacean=True,
        cetacean_score=0.97,
        rejected=False,
        model_version="effb4-arcface-test",
        mask="iVBORw0KGgo=",
        candidates=[
            {"class_animal": "1a71fbb72250", "id_animal": "humpback_whale", "probability": 0.8},
            {"class_animal": "00b3a0e2f9c1", "id_animal": "blue_whale", "probability": 0.1},
        ],
        image_sha256="ab" * 32,
        byte_size=147124,
        width=640,
        height=480,
        captured_at=datetime(2024, 7, 1, 9, 30, tzinfo=UTC),
        gps_lat=-33.856,
        gps_lon=151.215,
        decode_ms=2.5,
        gate_ms=1.25,
        identify_ms=4.0,
        mask_ms=None,
        worker="host:123",
    )


def test_every_field_of_the_record_is_stored_as_given(clean_database: Database) -> None:
    job_id, record = uuid.uuid4(), _full_record()
    started = datetime.now(UTC)

    with clean_database.autocommit() as connection:
        detection_id = store_single(connection, job_id, record, with_mask=True, started_at=started)

    with clean_database.session() as session:
        row = session.execute(
            select(DetectionRow).where(DetectionRow.id == detection_id)
        ).scalar_one()
        job = session.get_one(Job, job_id)
    for name in (f.name for f in dataclasses.fields(DetectionRecord)):
        assert getattr(row, name) == getattr(record, name), name
    assert (row.job_id, job.status, job.accepted, job.started_at) == (
        job_id, "succeeded", 1, started,
    )  # fmt: skip


def test_a_constraint_violation_is_raised_as_sqlalchemy_raises_it(
    clean_database: Database,
) -> None:
    statement = DriverStatement.compile(
        text("INSERT INTO jobs (id, kind, status) VALUES (:id, 'single', 'queued') RETURNING id"),
        clean_database.engine.dialect,
    )
    job_id = uuid.uuid4()
    with clean_database.autocommit() as connection:
        assert statement.first_column(connection, {"id": job_id}) == job_id
        with pytest.raises(IntegrityError):
            statement.first_column(connection, {"id": job_id})
        # The connection stays usable after an error of the statement itself.
        assert connection.execute(text("SELECT 1")).scalar() == 1


def test_a_dead_connection_is_invalidated_and_the_next_checkout_works(
    clean_database: Database,
) -> None:
    statement = DriverStatement.compile(text("SELECT 1"), clean_database.engine.dialect)
    with clean_database.autocommit() as connection:
        backend = connection.execute(text("SELECT pg_backend_pid()")).scalar()
        with clean_database.autocommit() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        with pytest.raises(OperationalError):
            statement.first_column(connection, {})
        assert connection.invalidated

    with clean_database.autocommit() as connection:
        assert statement.first_column(connection, {}) == 1
