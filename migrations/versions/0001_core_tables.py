"""Core tables: jobs, detections, job chunks, image attempts, drift baselines and alarms

Revision ID: 0001
Revises:
Create Date: 2026-11-23 09:40:22.242251
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drift_baselines",
        sa.Column("model_version", sa.Text(), nullable=False),
        sa.Column("baseline_mean", sa.Float(), nullable=False),
        sa.Column("window", sa.Integer(), nullable=False),
        sa.Column("in_alarm", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "established_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("model_version", name=op.f("pk_drift_baselines")),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column(
            "status", sa.String(length=16), server_default=sa.text("'queued'"), nullable=False
        ),
        sa.Column("total", sa.Integer(), nullable=True),
        sa.Column("processed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("accepted", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("rejected", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("failed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("skipped", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("chunks_total", sa.Integer(), nullable=True),
        sa.Column("chunks_done", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("with_mask", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("model_version", sa.Text(), nullable=True),
        sa.Column("archive_path", sa.Text(), nullable=True),
        sa.Column("archive_name", sa.Text(), nullable=True),
        sa.Column("archive_bytes", sa.BigInteger(), nullable=True),
        sa.Column(
            "skipped_detail",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("error_code", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("kind IN ('single', 'batch')", name=op.f("ck_jobs_kind")),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
            name=op.f("ck_jobs_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_jobs_idempotency_key")),
    )
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"], unique=False)
    op.create_index("ix_jobs_status_created_at", "jobs", ["status", "created_at"], unique=False)
    op.create_table(
        "detections",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("image_ind", sa.Text(), nullable=False),
        sa.Column("bbox", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.Column("class_animal", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("id_animal", sa.Text(), server_default=sa.text("'unknown'"), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("mask", sa.Text(), nullable=True),
        sa.Column("is_cetacean", sa.Boolean(), nullable=False),
        sa.Column("cetacean_score", sa.Float(), nullable=False),
        sa.Column("rejected", sa.Boolean(), nullable=False),
        sa.Column("rejection_reason", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("model_version", sa.Text(), nullable=False),
        sa.Column(
            "candidates",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("image_sha256", sa.String(length=64), nullable=True),
        sa.Column("byte_size", sa.BigInteger(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("gps_lat", sa.Float(), nullable=True),
        sa.Column("gps_lon", sa.Float(), nullable=True),
        sa.Column("decode_ms", sa.Float(), nullable=True),
        sa.Column("gate_ms", sa.Float(), nullable=True),
        sa.Column("identify_ms", sa.Float(), nullable=True),
        sa.Column("mask_ms", sa.Float(), nullable=True),
        sa.Column("worker", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "rejection_reason IS NULL OR rejection_reason IN ('not_a_marine_mammal', 'low_confidence', 'corrupted_image')",
            name=op.f("ck_detections_rejection_reason"),
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_detections_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_detections")),
        sa.UniqueConstraint("job_id", "position", name="uq_detections_job_id_position"),
    )
    op.create_index("ix_detections_created_at", "detections", ["created_at"], unique=False)
    op.create_index(
        "ix_detections_drift_window",
        "detections",
        ["model_version", sa.literal_column("id DESC")],
        unique=False,
        postgresql_where=sa.text("NOT rejected"),
        postgresql_include=["cetacean_score", "probability"],
    )
    op.create_index("ix_detections_image_sha256", "detections", ["image_sha256"], unique=False)
    op.create_index(
        "ix_detections_individual",
        "detections",
        ["class_animal", "created_at"],
        unique=False,
        postgresql_where=sa.text("NOT rejected"),
    )
    op.create_index(
        "ix_detections_species",
        "detections",
        ["id_animal", "created_at"],
        unique=False,
        postgresql_where=sa.text("NOT rejected"),
    )
    op.create_table(
        "drift_alarms",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("model_version", sa.Text(), nullable=False),
        sa.Column("window_mean", sa.Float(), nullable=False),
        sa.Column("baseline_mean", sa.Float(), nullable=False),
        sa.Column("distance", sa.Float(), nullable=False),
        sa.Column("window_n", sa.Integer(), nullable=False),
        sa.Column(
            "fired_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["model_version"],
            ["drift_baselines.model_version"],
            name=op.f("fk_drift_alarms_model_version_drift_baselines"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drift_alarms")),
    )
    op.create_index(
        "ix_drift_alarms_model_version", "drift_alarms", ["model_version", "fired_at"], unique=False
    )
    op.create_table(
        "image_attempts",
        sa.Column("job_id", sa.UUID(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "last_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_image_attempts_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "position", name=op.f("pk_image_attempts")),
    )
    op.create_table(
        "job_chunks",
        sa.Column("job_id", sa.UUID(), nullable=False),
        sa.Column("chunk_index", sa.Integer(), nullable=False),
        sa.Column("entries", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "status", sa.String(length=16), server_default=sa.text("'pending'"), nullable=False
        ),
        sa.Column("deliveries", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("dispatches", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'done')", name=op.f("ck_job_chunks_status")),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_chunks_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "chunk_index", name=op.f("pk_job_chunks")),
    )
    op.create_index(
        "ix_job_chunks_pending",
        "job_chunks",
        ["updated_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_job_chunks_pending",
        table_name="job_chunks",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_table("job_chunks")
    op.drop_table("image_attempts")
    op.drop_index("ix_drift_alarms_model_version", table_name="drift_alarms")
    op.drop_table("drift_alarms")
    op.drop_index(
        "ix_detections_species", table_name="detections", postgresql_where=sa.text("NOT rejected")
    )
    op.drop_index(
        "ix_detections_individual",
        table_name="detections",
        postgresql_where=sa.text("NOT rejected"),
    )
    op.drop_index("ix_detections_image_sha256", table_name="detections")
    op.drop_index(
        "ix_detections_drift_window",
        table_name="detections",
        postgresql_where=sa.text("NOT rejected"),
        postgresql_include=["cetacean_score", "probability"],
    )
    op.drop_index("ix_detections_created_at", table_name="detections")
    op.drop_table("detections")
    op.drop_index("ix_jobs_status_created_at", table_name="jobs")
    op.drop_index("ix_jobs_created_at", table_name="jobs")
    op.drop_table("jobs")
    op.drop_table("drift_baselines")
