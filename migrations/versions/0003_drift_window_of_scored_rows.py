"""Drift window index over every scored detection, not only accepted ones

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 14:03:51.402117
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# The drift window is the gate's score of every image the gate actually scored:
# accepted rows and rows rejected by the gate or for low confidence all carry a
# real score. Corrupted images (never decoded) and failed images carry a
# placeholder 0.0 and stay out. The predicate is written exactly as
# shared.drift writes it, or the planner cannot match the partial index.
SCORED = "error IS NULL AND rejection_reason IS DISTINCT FROM 'corrupted_image'"
ACCEPTED_ONLY = "NOT rejected"


def _create(predicate: str) -> None:
    op.create_index(
        "ix_detections_drift_window",
        "detections",
        ["model_version", sa.literal_column("id DESC")],
        postgresql_where=sa.text(predicate),
        postgresql_include=["cetacean_score", "probability"],
    )


def upgrade() -> None:
    op.drop_index("ix_detections_drift_window", table_name="detections")
    _create(SCORED)


def downgrade() -> None:
    op.drop_index("ix_detections_drift_window", table_name="detections")
    _create(ACCEPTED_ONLY)
