"""Typed reads of the reporting views (created by migration 0002).

The views are what analysts query with SQL; ``whales report`` reads the same
views, so the command line and psql never disagree. The view definitions live
in the migration; the tables below only describe their columns, in a metadata
of their own so that nothing ever tries to create them as tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    Uuid,
    select,
)
from sqlalchemy.orm import Session

__all__ = [
    "REPORT_VIEWS",
    "DriftAlarmEvent",
    "Identification",
    "IndividualSightings",
    "RejectionDay",
    "SpeciesDay",
    "drift_alarms",
    "identifications_of",
    "rejections_per_day",
    "species_per_day",
    "top_individuals",
]

views = MetaData()

identifications_view = Table(
    "report_identifications",
    views,
    Column("detection_id", BigInteger),
    Column("job_id", Uuid),
    Column("job_kind", String(16)),
    Column("seen_at", DateTime(timezone=True)),
    Column("seen_on", Date),
    Column("captured_at", DateTime(timezone=True)),
    Column("processed_at", DateTime(timezone=True)),
    Column("image_name", Text),
    Column("species", Text),
    Column("individual_id", Text),
    Column("probability", Float),
    Column("cetacean_score", Float),
    Column("model_version", Text),
    Column("image_sha256", String(64)),
    Column("gps_lat", Float),
    Column("gps_lon", Float),
)

sightings_view = Table(
    "report_sightings",
    views,
    Column("individual_id", Text),
    Column("species", Text),
    Column("first_seen", DateTime(timezone=True)),
    Column("last_seen", DateTime(timezone=True)),
    Column("sightings", BigInteger),
)

species_daily_view = Table(
    "report_species_daily",
    views,
    Column("seen_on", Date),
    Column("species", Text),
    Column("identifications", BigInteger),
    Column("individuals", BigInteger),
)

rejections_daily_view = Table(
    "report_rejections_daily",
    views,
    Column("processed_on", Date),
    Column("reason", Text),
    Column("rejections", BigInteger),
    Column("processed", BigInteger),
    Column("rate", Float),
)

drift_alarms_view = Table(
    "report_drift_alarms",
    views,
    Column("alarm_id", BigInteger),
    Column("model_version", Text),
    Column("fired_at", DateTime(timezone=True)),
    Column("window_mean", Float),
    Column("baseline_mean", Float),
    Column("distance", Float),
    Column("window_n", Integer),
    Column("current_baseline_mean", Float),
    Column("model_in_alarm", Boolean),
)

REPORT_VIEWS: tuple[str, ...] = tuple(views.tables)

_T = TypeVar("_T")


def _read(session: Session, query: Select[Any], row_type: type[_T]) -> list[_T]:
    # The dataclasses' fields are named after the views' columns.
    return [row_type(**row._mapping) for row in session.execute(query)]


@dataclass(frozen=True)
class Identification:
    detection_id: int
    job_id: Any
    job_kind: str
    seen_at: datetime
    seen_on: date
    captured_at: datetime | None
    processed_at: datetime
    image_name: str
    species: str
    individual_id: str
    probability: float
    cetacean_score: float
    model_version: str
    image_sha256: str | None
    gps_lat: float | None
    gps_lon: float | None


@dataclass(frozen=True)
class IndividualSightings:
    individual_id: str
    species: str
    first_seen: datetime
    last_seen: datetime
    sightings: int


@dataclass(frozen=True)
class SpeciesDay:
    seen_on: date
    species: str
    identifications: int
    individuals: int


@dataclass(frozen=True)
class RejectionDay:
    processed_on: date
    reason: str
    rejections: int
    processed: int
    rate: float


@dataclass(frozen=True)
class DriftAlarmEvent:
    alarm_id: int
    model_version: str
    fired_at: datetime
    window_mean: float
    baseline_mean: float
    distance: float
    window_n: int
    current_baseline_mean: float
    model_in_alarm: bool


def species_per_day(session: Session, *, since: date | None = None) -> list[SpeciesDay]:
    """Identifications and distinct individuals per species per UTC day of
    sighting, newest day first, most identified species first."""
    view = species_daily_view.c
    query = select(species_daily_view).order_by(
        view.seen_on.desc(), view.identifications.desc(), view.species
    )
    if since is not None:
        query = query.where(view.seen_on >= since)
    return _read(session, query, SpeciesDay)


def top_individuals(session: Session, *, limit: int = 20) -> list[IndividualSightings]:
    """The individuals with the most sightings over the whole history."""
    view = sightings_view.c
    query = (
        select(sightings_view)
        .order_by(view.sightings.desc(), view.last_seen.desc(), view.individual_id)
        .limit(limit)
    )
    return _read(session, query, IndividualSightings)


def identifications_of(
    session: Session, individual_id: str, *, limit: int | None = None
) -> list[Identification]:
    """Every accepted photo of one individual, oldest sighting first."""
    view = identifications_view.c
    query = (
        select(identifications_view)
        .where(view.individual_id == individual_id)
        .order_by(view.seen_at, view.detection_id)
        .limit(limit)
    )
    return _read(session, query, Identification)


def rejections_per_day(session: Session, *, since: date | None = None) -> list[RejectionDay]:
    """Rejected and failed images per reason per UTC processing day, with that
    day's share of all processed images; newest day first."""
    view = rejections_daily_view.c
    query = select(rejections_daily_view).order_by(
        view.processed_on.desc(), view.rejections.desc(), view.reason
    )
    if since is not None:
        query = query.where(view.processed_on >= since)
    return _read(session, query, RejectionDay)


def drift_alarms(
    session: Session, *, model_version: str | None = None, limit: int = 50
) -> list[DriftAlarmEvent]:
    """Recorded drift alarms, newest first."""
    view = drift_alarms_view.c
    query = select(drift_alarms_view).order_by(view.fired_at.desc(), view.alarm_id.desc())
    if model_version is not None:
        query = query.where(view.model_version == model_version)
    return _read(session, query.limit(limit), DriftAlarmEvent)
