"""SQLAlchemy models of the history and the job queue.

The schema itself is created only by Alembic migrations; these classes must
agree with it (a test compares them with autogenerate).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names make migrations and their downgrades predictable.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
JOB_KINDS = ("single", "batch")
CHUNK_STATUSES = ("pending", "done")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Job(Base):
    """One request: a single image or a ZIP batch. The truth about its progress."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in("kind", JOB_KINDS), name="kind"),
        CheckConstraint(_in("status", JOB_STATUSES), name="status"),
        Index("ix_jobs_status_created_at", "status", "created_at"),
        Index("ix_jobs_created_at", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), server_default=text("'queued'"))
    total: Mapped[int | None] = mapped_column(Integer)
    processed: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    accepted: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    rejected: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    failed: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    skipped: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    chunks_total: Mapped[int | None] = mapped_column(Integer)
    chunks_done: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    with_mask: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    model_version: Mapped[str | None] = mapped_column(Text)
    archive_path: Mapped[str | None] = mapped_column(Text)
    archive_name: Mapped[str | None] = mapped_column(Text)
    archive_bytes: Mapped[int | None] = mapped_column(BigInteger)
    skipped_detail: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb")
    )
    error_code: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(Text, unique=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Last sign of progress; the janitor re-sends work of jobs that went quiet.
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )


class DetectionRow(Base):
    """One processed image: every field of the Detection schema plus provenance."""

    __tablename__ = "detections"
    __table_args__ = (
        # A retried chunk upserts into the same (job, position): never a duplicate.
        UniqueConstraint("job_id", "position", name="uq_detections_job_id_position"),
        CheckConstraint(
            "rejection_reason IS NULL OR "
            + _in("rejection_reason", ("not_a_marine_mammal", "low_confidence", "corrupted_image")),
            name="rejection_reason",
        ),
        Index("ix_detections_created_at", "created_at"),
        # Species and individual lookups only ever concern accepted rows.
        Index(
            "ix_detections_species",
            "id_animal",
            "created_at",
            postgresql_where=text("NOT rejected"),
        ),
        Index(
            "ix_detections_individual",
            "class_animal",
            "created_at",
            postgresql_where=text("NOT rejected"),
        ),
        # Drift statistics read the newest scored rows of one model version
        # (migration 0003: corrupted and failed images have no gate score);
        # INCLUDE lets that be an index-only scan.
        Index(
            "ix_detections_drift_window",
            "model_version",
            text("id DESC"),
            postgresql_where=text(
                "error IS NULL AND rejection_reason IS DISTINCT FROM 'corrupted_image'"
            ),
            postgresql_include=["cetacean_score", "probability"],
        ),
        Index("ix_detections_image_sha256", "image_sha256"),
        # Reporting views (migration 0002): the UTC day and time a photo was
        # seen, for accepted rows, and the UTC day every row was processed.
        Index(
            "ix_detections_seen_on",
            text("((coalesce(captured_at, created_at) AT TIME ZONE 'UTC')::date)"),
            "id_animal",
            postgresql_where=text("NOT rejected AND error IS NULL"),
            postgresql_include=["class_animal", "captured_at", "created_at"],
        ),
        Index(
            "ix_detections_seen_at",
            text("coalesce(captured_at, created_at)"),
            postgresql_where=text("NOT rejected AND error IS NULL"),
        ),
        Index(
            "ix_detections_processed_on",
            text("((created_at AT TIME ZONE 'UTC')::date)"),
            postgresql_include=["rejected", "rejection_reason", "error"],
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE")
    )
    position: Mapped[int] = mapped_column(Integer)
    image_ind: Mapped[str] = mapped_column(Text)
    bbox: Mapped[list[int]] = mapped_column(ARRAY(Integer))
    class_animal: Mapped[str] = mapped_column(Text, server_default=text("''"))
    id_animal: Mapped[str] = mapped_column(Text, server_default=text("'unknown'"))
    probability: Mapped[float] = mapped_column(Float)
    mask: Mapped[str | None] = mapped_column(Text)
    is_cetacean: Mapped[bool] = mapped_column(Boolean)
    cetacean_score: Mapped[float] = mapped_column(Float)
    rejected: Mapped[bool] = mapped_column(Boolean)
    rejection_reason: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    model_version: Mapped[str] = mapped_column(Text)
    candidates: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb")
    )
    image_sha256: Mapped[str | None] = mapped_column(String(64))
    byte_size: Mapped[int | None] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    captured_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    gps_lat: Mapped[float | None] = mapped_column(Float)
    gps_lon: Mapped[float | None] = mapped_column(Float)
    decode_ms: Mapped[float | None] = mapped_column(Float)
    gate_ms: Mapped[float | None] = mapped_column(Float)
    identify_ms: Mapped[float | None] = mapped_column(Float)
    mask_ms: Mapped[float | None] = mapped_column(Float)
    worker: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )


class JobChunk(Base):
    """A slice of a batch job's images; also counts deliveries of its task."""

    __tablename__ = "job_chunks"
    __table_args__ = (
        CheckConstraint(_in("status", CHUNK_STATUSES), name="status"),
        # The janitor looks for pending chunks that have gone quiet.
        Index(
            "ix_job_chunks_pending",
            "updated_at",
            postgresql_where=text("status = 'pending'"),
        ),
    )

    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    chunk_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    # [[position, entry name], ...]: what the task reads from the archive.
    entries: Mapped[list[list[Any]]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16), server_default=text("'pending'"))
    deliveries: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    dispatches: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ImageAttempt(Base):
    """How many times an image was started; caps an image that kills its worker."""

    __tablename__ = "image_attempts"

    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )


class DriftBaseline(Base):
    """The reference mean cetacean score of one model version, and alarm state."""

    __tablename__ = "drift_baselines"

    model_version: Mapped[str] = mapped_column(Text, primary_key=True)
    baseline_mean: Mapped[float] = mapped_column(Float)
    window: Mapped[int] = mapped_column(Integer)
    in_alarm: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    established_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )


class DriftAlarm(Base):
    """One crossing of the drift threshold: recorded once, when it happens."""

    __tablename__ = "drift_alarms"
    __table_args__ = (Index("ix_drift_alarms_model_version", "model_version", "fired_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    model_version: Mapped[str] = mapped_column(
        Text, ForeignKey("drift_baselines.model_version", ondelete="CASCADE")
    )
    window_mean: Mapped[float] = mapped_column(Float)
    baseline_mean: Mapped[float] = mapped_column(Float)
    distance: Mapped[float] = mapped_column(Float)
    window_n: Mapped[int] = mapped_column(Integer)
    fired_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )
