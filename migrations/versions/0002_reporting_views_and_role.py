"""Reporting views for analysts and the read-only role that may read them

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 10:12:05.118734
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# The SQL is frozen here rather than imported from shared/: a migration must keep
# meaning what it meant when it ran, whatever the application code becomes.

# "Seen" is the capture time from EXIF when the photo has one, else the time the
# service processed it; days are UTC days so that every client's session time
# zone reads the same rows. Accepted = the job's "accepted" counter: not
# rejected and not failed.
VIEWS: dict[str, str] = {
    "report_identifications": """
        SELECT d.id AS detection_id,
               d.job_id,
               j.kind AS job_kind,
               coalesce(d.captured_at, d.created_at) AS seen_at,
               (coalesce(d.captured_at, d.created_at) AT TIME ZONE 'UTC')::date AS seen_on,
               d.captured_at,
               d.created_at AS processed_at,
               d.image_ind AS image_name,
               d.id_animal AS species,
               d.class_animal AS individual_id,
               d.probability,
               d.cetacean_score,
               d.model_version,
               d.image_sha256,
               d.gps_lat,
               d.gps_lon
          FROM detections d
          -- LEFT (job_id is a NOT NULL foreign key, so no row is lost) lets the
          -- planner drop the join when no job column is read, e.g. for count(*).
          LEFT JOIN jobs j ON j.id = d.job_id
         WHERE NOT d.rejected AND d.error IS NULL
    """,
    "report_sightings": """
        SELECT d.class_animal AS individual_id,
               d.id_animal AS species,
               min(coalesce(d.captured_at, d.created_at)) AS first_seen,
               max(coalesce(d.captured_at, d.created_at)) AS last_seen,
               count(*) AS sightings
          FROM detections d
         WHERE NOT d.rejected AND d.error IS NULL AND d.class_animal <> ''
         GROUP BY d.class_animal, d.id_animal
    """,
    "report_species_daily": """
        SELECT (coalesce(d.captured_at, d.created_at) AT TIME ZONE 'UTC')::date AS seen_on,
               d.id_animal AS species,
               count(*) AS identifications,
               count(DISTINCT nullif(d.class_animal, '')) AS individuals
          FROM detections d
         WHERE NOT d.rejected AND d.error IS NULL
         GROUP BY 1, 2
    """,
    # Rejections are about processing, not about the animal: a rejected photo
    # has no trustworthy capture time, so these days are processing days.
    # Failed images (error set) are their own reason, 'processing_failed'.
    "report_rejections_daily": """
        SELECT processed_on,
               outcome AS reason,
               images AS rejections,
               day_total AS processed,
               round(images::numeric / day_total, 4)::double precision AS rate
          FROM (SELECT processed_on, outcome, images,
                       sum(images) OVER (PARTITION BY processed_on)::bigint AS day_total
                  FROM (SELECT (d.created_at AT TIME ZONE 'UTC')::date AS processed_on,
                               CASE
                                   WHEN d.error IS NOT NULL THEN 'processing_failed'
                                   WHEN d.rejected THEN coalesce(d.rejection_reason, 'unspecified')
                                   ELSE 'accepted'
                               END AS outcome,
                               count(*) AS images
                          FROM detections d
                         GROUP BY 1, 2) per_outcome
               ) per_day
         WHERE outcome <> 'accepted'
    """,
    "report_drift_alarms": """
        SELECT a.id AS alarm_id,
               a.model_version,
               a.fired_at,
               a.window_mean,
               a.baseline_mean,
               a.distance,
               a.window_n,
               b.baseline_mean AS current_baseline_mean,
               b.in_alarm AS model_in_alarm
          FROM drift_alarms a
          JOIN drift_baselines b ON b.model_version = a.model_version
    """,
}

# Measured with bench/db.py at a million detections: without these the views'
# date filters and "newest first" orders read the whole table. The expression
# index keys are exactly the views' expressions, or the planner cannot use them;
# the INCLUDE columns make the daily and sightings aggregates index-only scans.
ACCEPTED = "NOT rejected AND error IS NULL"
SEEN_ON = "((coalesce(captured_at, created_at) AT TIME ZONE 'UTC')::date)"
SEEN_AT = "coalesce(captured_at, created_at)"
PROCESSED_ON = "((created_at AT TIME ZONE 'UTC')::date)"

# Roles are cluster-wide: only a plain identifier may be spliced into the DDL.
_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _reporting_role() -> str:
    # Read at run time, not import time: the name is a setting
    # (WHALES_REPORTING_ROLE), and reading it must not happen on import.
    from shared.settings import get_settings

    role = get_settings().reporting_role
    if not _ROLE_NAME.fullmatch(role):
        raise ValueError(f"reporting role {role!r} is not a plain lower-case identifier")
    return role


def _grant_sql(role: str) -> str:
    views = ", ".join(VIEWS)
    # Several databases on one server run this migration, possibly at the same
    # time, and another one's downgrade may drop the role between our check and
    # our GRANT: retry instead of failing on either race. (The role name was
    # checked to be a plain identifier by _reporting_role, the view names are ours.)
    return f"""
DO $migration$
DECLARE
    role_name constant text := '{role}';
BEGIN
    FOR attempt IN 1..5 LOOP
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
                EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
            ELSIF EXISTS (SELECT FROM pg_roles WHERE rolname = role_name
                           AND (rolsuper OR rolbypassrls)) THEN
                -- A superuser reads everything: granting it the views would
                -- pretend to a read-only role that is not one.
                RAISE EXCEPTION 'reporting role % is a superuser or bypasses row security',
                    role_name
                    USING HINT = 'Set WHALES_REPORTING_ROLE to a role of its own.';
            END IF;
            EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), role_name);
            EXECUTE format('GRANT SELECT ON {views} TO %I', role_name);
            RETURN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation OR undefined_object THEN
                RAISE NOTICE 'role % changed concurrently (attempt %): retrying',
                    role_name, attempt;
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'cannot create role %: %', role_name, SQLERRM
                    USING HINT = format(
                        'Have a superuser run CREATE ROLE %I NOLOGIN once, then migrate again.',
                        role_name);
        END;
    END LOOP;
    RAISE EXCEPTION 'role % kept changing while it was being granted', role_name;
END
$migration$
"""  # noqa: S608


def _revoke_sql(role: str) -> str:
    # The views (and their grants) are gone by now. The role is dropped only when
    # it is still what the upgrade made, and nothing anywhere uses it: not when
    # an operator gave it LOGIN (and a password) to connect with, nor when it
    # has members or is one, nor while another database grants it anything
    # (DROP ROLE sees those through the cluster-wide pg_shdepend). None of
    # these may make the downgrade fail.
    # (The role name was checked to be a plain identifier by _reporting_role.)
    return f"""
DO $migration$
DECLARE
    role_name constant text := '{role}';
    role_oid oid;
BEGIN
    SELECT oid INTO role_oid FROM pg_roles WHERE rolname = role_name;
    IF role_oid IS NULL THEN
        RETURN;
    END IF;
    EXECUTE format('REVOKE ALL ON SCHEMA %I FROM %I', current_schema(), role_name);
    IF EXISTS (SELECT FROM pg_roles WHERE oid = role_oid AND rolcanlogin) THEN
        RAISE NOTICE 'role % kept: it can log in', role_name;
        RETURN;
    END IF;
    IF EXISTS (SELECT FROM pg_auth_members WHERE roleid = role_oid OR member = role_oid) THEN
        RAISE NOTICE 'role % kept: it has members or is a member', role_name;
        RETURN;
    END IF;
    BEGIN
        EXECUTE format('DROP ROLE %I', role_name);
    EXCEPTION WHEN dependent_objects_still_exist THEN
        RAISE NOTICE 'role % kept: %', role_name, SQLERRM;
    END;
EXCEPTION WHEN undefined_object THEN
    RAISE NOTICE 'role % was dropped concurrently', role_name;
END
$migration$
"""  # noqa: S608


def _create_indexes() -> None:
    op.create_index(
        "ix_detections_seen_on",
        "detections",
        [sa.text(SEEN_ON), "id_animal"],
        postgresql_where=sa.text(ACCEPTED),
        postgresql_include=["class_animal", "captured_at", "created_at"],
    )
    op.create_index(
        "ix_detections_seen_at",
        "detections",
        [sa.text(SEEN_AT)],
        postgresql_where=sa.text(ACCEPTED),
    )
    op.create_index(
        "ix_detections_processed_on",
        "detections",
        [sa.text(PROCESSED_ON)],
        postgresql_include=["rejected", "rejection_reason", "error"],
    )


def upgrade() -> None:
    _create_indexes()
    for name, body in VIEWS.items():
        # security_invoker stays off (the default): the views read the base tables
        # with their owner's rights, so the reporting role needs no grant on them.
        op.execute(f"CREATE VIEW {name} AS {body}")
    op.execute(_grant_sql(_reporting_role()))


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.execute(_revoke_sql(_reporting_role()))
    op.drop_index("ix_detections_processed_on", table_name="detections")
    op.drop_index("ix_detections_seen_at", table_name="detections")
    op.drop_index("ix_detections_seen_on", table_name="detections")
