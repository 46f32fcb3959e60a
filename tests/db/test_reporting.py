"""The reporting views and shared.reporting on a small dataset with known answers."""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg
import pytest
from sqlalchemy import insert

from shared.db.engine import Database
from shared.db.models import DriftAlarm, DriftBaseline
from shared.reporting import (
    drift_alarms,
    identifications_of,
    rejections_per_day,
    species_per_day,
    top_individuals,
)
from tests.db.reporting_data import BATCH, SINGLE, A, B, C, at, load_dataset
from tests.services import _libpq_url


@pytest.fixture
def dataset(clean_database: Database) -> Database:
    return load_dataset(clean_database)


def _select(db: Database, query: str, *, time_zone: str = "UTC") -> list[tuple[Any, ...]]:
    with psycopg.connect(_libpq_url(db.url)) as conn:
        conn.execute(f"SET TIME ZONE '{time_zone}'")
        return conn.execute(query).fetchall()


def test_identifications_has_one_readable_row_per_accepted_detection(dataset: Database) -> None:
    rows = _select(
        dataset,
        "SELECT job_id, job_kind, image_name, species, individual_id, seen_at, seen_on,"
        " captured_at, processed_at, probability, cetacean_score, model_version,"
        " image_sha256, gps_lat, gps_lon"
        " FROM report_identifications ORDER BY seen_at",
    )
    assert [(r[0], r[1], r[2], r[4], r[5], r[6]) for r in rows] == [
        (BATCH, "batch", "IMG_2.JPG", B, at(1, 8), date(2026, 3, 1)),
        (BATCH, "batch", "IMG_0.JPG", A, at(1, 23, 30), date(2026, 3, 1)),
        (BATCH, "batch", "IMG_1.JPG", A, at(2, 10), date(2026, 3, 2)),
        (BATCH, "batch", "IMG_3.JPG", C, at(2, 12), date(2026, 3, 2)),
        (SINGLE, "single", "IMG_0.JPG", A, at(3, 7), date(2026, 3, 3)),
    ]
    first = rows[1]
    assert first[3] == "humpback_whale"
    assert (first[7], first[8]) == (at(1, 23, 30), at(5, 9))
    assert first[9:] == (0.8, 0.9, "m1", f"{0:064x}", -20.5, 57.4)
    assert rows[2][7] is None  # seen_at fell back on the processing time


def test_sightings_per_individual(dataset: Database) -> None:
    assert _select(dataset, "SELECT * FROM report_sightings ORDER BY individual_id") == [
        (A, "humpback_whale", at(1, 23, 30), at(3, 7), 3),
        (B, "humpback_whale", at(1, 8), at(1, 8), 1),
        (C, "blue_whale", at(2, 12), at(2, 12), 1),
    ]


def test_species_per_day_uses_utc_days_whatever_the_session_zone(dataset: Database) -> None:
    expected = [
        (date(2026, 3, 1), "humpback_whale", 2, 2),
        (date(2026, 3, 2), "blue_whale", 1, 1),
        (date(2026, 3, 2), "humpback_whale", 1, 1),
        (date(2026, 3, 3), "humpback_whale", 1, 1),
    ]
    query = "SELECT * FROM report_species_daily ORDER BY seen_on, species"
    assert _select(dataset, query) == expected
    assert _select(dataset, query, time_zone="Pacific/Auckland") == expected


def test_rejections_per_reason_per_processing_day(dataset: Database) -> None:
    rows = _select(dataset, "SELECT * FROM report_rejections_daily ORDER BY processed_on, reason")
    assert rows == [
        # 5 March: rows 0, 2, 3 accepted; 4, 5 rejected; 6 failed.
        (date(2026, 3, 5), "low_confidence", 1, 6, 0.1667),
        (date(2026, 3, 5), "not_a_marine_mammal", 1, 6, 0.1667),
        (date(2026, 3, 5), "processing_failed", 1, 6, 0.1667),
        # 6 March: row 7 corrupted, the single image accepted. 2 March: nothing rejected.
        (date(2026, 3, 6), "corrupted_image", 1, 2, 0.5),
    ]


def test_drift_alarms_view(dataset: Database) -> None:
    with dataset.session() as session:
        session.execute(
            insert(DriftBaseline).values(model_version="m1", baseline_mean=0.9, window=4)
        )
        session.execute(
            insert(DriftAlarm).values(
                model_version="m1",
                window_mean=0.7,
                baseline_mean=0.9,
                distance=0.2,
                window_n=4,
                fired_at=at(7, 12),
            )
        )
    assert _select(
        dataset,
        "SELECT model_version, fired_at, window_mean, baseline_mean, distance, window_n,"
        " current_baseline_mean, model_in_alarm FROM report_drift_alarms",
    ) == [("m1", at(7, 12), 0.7, 0.9, 0.2, 4, 0.9, False)]
    with dataset.session() as session:
        (alarm,) = drift_alarms(session, model_version="m1")
        assert drift_alarms(session, model_version="m2") == []
    assert (alarm.window_mean, alarm.fired_at) == (0.7, at(7, 12))


def test_reporting_functions_read_the_views(dataset: Database) -> None:
    with dataset.session() as session:
        species = species_per_day(session, since=date(2026, 3, 2))
        every_day = species_per_day(session)
        top = top_individuals(session, limit=2)
        rejections = rejections_per_day(session, since=date(2026, 3, 6))
        photos_of_a = identifications_of(session, A)

    assert [(s.seen_on, s.species, s.identifications) for s in species] == [
        (date(2026, 3, 3), "humpback_whale", 1),
        (date(2026, 3, 2), "blue_whale", 1),
        (date(2026, 3, 2), "humpback_whale", 1),
    ]
    assert len(every_day) == 4
    # B and C both have one sighting: the most recently seen comes first.
    assert [(t.individual_id, t.sightings) for t in top] == [(A, 3), (C, 1)]
    assert [(r.reason, r.rejections, r.processed, r.rate) for r in rejections] == [
        ("corrupted_image", 1, 2, 0.5)
    ]
    assert [(p.job_kind, p.image_name, p.seen_on) for p in photos_of_a] == [
        ("batch", "IMG_0.JPG", date(2026, 3, 1)),
        ("batch", "IMG_1.JPG", date(2026, 3, 2)),
        ("single", "IMG_0.JPG", date(2026, 3, 3)),
    ]
