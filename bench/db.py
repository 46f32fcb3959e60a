"""Database benchmark: drift statistics, deep result pages and the reporting
views over a million stored detections.

    python -m bench.db [--rows 1000000] [--runs 9] [--keep]

(as a module: run as a script, bench/queue.py would shadow the standard
library's queue module)

It creates a fresh database on the server of WHALES_DATABASE_URL (or on the
embedded server when that is unset), migrates it, loads synthetic detections
server-side with INSERT ... SELECT generate_series, runs VACUUM ANALYZE (what
autovacuum would have done on a live database), times each query warm (median
of --runs runs after two warm-up runs) and drops the database unless --keep.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import select
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url

from shared.db.engine import Database
from shared.db.migrate import upgrade
from shared.db.models import DetectionRow
from shared.drift import drift_stats, evaluate_drift, window_query
from shared.services import resolve_database_url

MODEL_VERSIONS = ("effb4-arcface-v1", "effb4-arcface-v2", "effb4-arcface-v3")
BUSY_MODEL = "effb4-arcface-v2"
SPECIES = (
    "humpback_whale",
    "blue_whale",
    "fin_whale",
    "sei_whale",
    "minke_whale",
    "gray_whale",
    "bowhead_whale",
    "southern_right_whale",
    "sperm_whale",
    "beluga",
    "killer_whale",
    "pilot_whale",
    "false_killer_whale",
    "melon_headed_whale",
    "pygmy_killer_whale",
    "bottlenose_dolphin",
    "common_dolphin",
    "dusky_dolphin",
    "spinner_dolphin",
    "spotted_dolphin",
    "rough_toothed_dolphin",
    "white_sided_dolphin",
    "frasiers_dolphin",
    "commersons_dolphin",
    "pantropic_spotted_dolphin",
    "brydes_whale",
    "cuviers_beaked_whale",
    "globis",
    "narwhal",
    "risso_dolphin",
)
INDIVIDUALS = 15_000
HISTORY_DAYS = 365
PAGE_DEPTH = 90_000
PAGE_SIZE = 100


@dataclass(frozen=True)
class JobLayout:
    job_id: uuid.UUID
    kind: str
    rows: int
    model_version: str
    days_ago: float


def libpq_url(url: str) -> str:
    parsed = make_url(url)
    return parsed.set(drivername=parsed.drivername.split("+")[0]).render_as_string(
        hide_password=False
    )


def plan_jobs(
    rows: int, big_job: int, singles: int, seed: int
) -> tuple[list[JobLayout], JobLayout]:
    """Batch jobs of 50..3,000 images, one job of ``big_job`` images, and
    single-image jobs, spread over a year; newer jobs use newer models."""
    rng = random.Random(seed)
    jobs: list[JobLayout] = []
    left = rows - big_job - singles
    while left > 0:
        size = min(left, rng.randint(50, 3_000))
        jobs.append(JobLayout(uuid.UUID(int=rng.getrandbits(128)), "batch", size, "", 0.0))
        left -= size
    jobs += [
        JobLayout(uuid.UUID(int=rng.getrandbits(128)), "single", 1, "", 0.0) for _ in range(singles)
    ]
    big = JobLayout(uuid.UUID(int=rng.getrandbits(128)), "batch", big_job, "", 0.0)
    jobs.append(big)
    rng.shuffle(jobs)
    placed: list[JobLayout] = []
    for index, job in enumerate(jobs):
        # Oldest first, so ids grow with time as they do in production.
        days_ago = HISTORY_DAYS * (1 - (index + rng.random()) / len(jobs))
        share = 1 - days_ago / HISTORY_DAYS
        model = (
            MODEL_VERSIONS[0] if share < 0.25 else MODEL_VERSIONS[2] if share > 0.9 else BUSY_MODEL
        )
        placed.append(JobLayout(job.job_id, job.kind, job.rows, model, days_ago))
    big = next(job for job in placed if job.job_id == big.job_id)
    return placed, big


LOAD_DETECTIONS = """
INSERT INTO detections (
    job_id, position, image_ind, bbox, class_animal, id_animal, probability, mask,
    is_cetacean, cetacean_score, rejected, rejection_reason, error, model_version,
    candidates, image_sha256, byte_size, width, height, captured_at, gps_lat, gps_lon,
    decode_ms, gate_ms, identify_ms, mask_ms, worker, created_at)
SELECT s.job_id,
       s.pos,
       format('survey_%%s/IMG_%%s.JPG', left(s.job_id::text, 8), lpad(s.pos::text, 6, '0')),
       ARRAY[0, 0, 4000, 3000],
       CASE WHEN s.outcome = 'accepted' THEN substr(md5('ind' || s.ind), 1, 12) ELSE '' END,
       CASE WHEN s.outcome = 'accepted' THEN (%(species)s::text[])[1 + s.ind %% %(n_species)s]
            ELSE 'unknown' END,
       CASE WHEN s.outcome = 'accepted' THEN 0.5 + 0.5 * s.u_prob
            WHEN s.outcome = 'low_confidence' THEN 0.3 * s.u_prob ELSE 0 END,
       NULL,
       s.outcome IN ('accepted', 'low_confidence'),
       CASE WHEN s.outcome = 'accepted' THEN 0.75 + 0.25 * s.u_score
            WHEN s.outcome = 'low_confidence' THEN 0.5 + 0.4 * s.u_score
            WHEN s.outcome = 'not_a_marine_mammal' THEN 0.3 * s.u_score ELSE 0 END,
       s.outcome <> 'accepted',
       CASE WHEN s.outcome IN ('accepted', 'processing_failed') THEN NULL ELSE s.outcome END,
       CASE WHEN s.outcome = 'processing_failed' THEN 'worker_lost' END,
       s.model_version,
       CASE WHEN s.outcome = 'accepted' THEN (
           SELECT jsonb_agg(jsonb_build_object(
                      'class_animal', substr(md5('ind' || (s.ind + k)), 1, 12),
                      'id_animal', (%(species)s::text[])[1 + (s.ind + k) %% %(n_species)s],
                      'probability', round(((0.5 + 0.5 * s.u_prob) / (k + 1))::numeric, 4)))
             FROM generate_series(0, 4) k)
            ELSE '[]'::jsonb END,
       md5(s.job_id::text || s.pos) || md5(s.pos || s.job_id::text),
       (500000 + 4000000 * s.u_prob)::bigint,
       4000,
       3000,
       CASE WHEN s.outcome <> 'corrupted_image' AND s.u_cap < 0.75
            THEN s.processed_at - make_interval(hours => (s.u_cap * 96)::int) END,
       CASE WHEN s.u_cap < 0.5 THEN -40 + 80 * s.u_score END,
       CASE WHEN s.u_cap < 0.5 THEN -180 + 360 * s.u_prob END,
       20 + 30 * s.u_score, 4 + 2 * s.u_prob, 9 + 3 * s.u_score, NULL,
       'worker-' || (s.pos %% 4),
       s.processed_at
  FROM (SELECT l.job_id,
               l.model_version,
               p.pos,
               l.started_at + p.pos * interval '40 milliseconds' AS processed_at,
               -- Few individuals are photographed often, most rarely.
               floor(%(individuals)s * power(random(), 1.5))::int AS ind,
               CASE WHEN u < 0.001 THEN 'processing_failed'
                    WHEN u < 0.061 THEN 'not_a_marine_mammal'
                    WHEN u < 0.101 THEN 'low_confidence'
                    WHEN u < 0.106 THEN 'corrupted_image'
                    ELSE 'accepted' END AS outcome,
               random() AS u_prob,
               random() AS u_score,
               random() AS u_cap
          FROM bench_layout l
          CROSS JOIN LATERAL generate_series(0, l.rows - 1) AS p(pos)
          -- Correlated with p.pos so that it is drawn for every row, not once.
          CROSS JOIN LATERAL (SELECT random() + 0 * p.pos AS u) AS draw) s
"""


def load(conninfo: str, jobs: Sequence[JobLayout], seed: int) -> None:
    with psycopg.connect(conninfo) as conn:
        conn.execute("SELECT setseed(%s)", (seed / 2**31,))
        conn.execute(
            "CREATE TEMP TABLE bench_layout (job_id uuid, kind text, rows int,"
            " model_version text, started_at timestamptz)"
        )
        with conn.cursor().copy(
            "COPY bench_layout (job_id, kind, rows, model_version, started_at) FROM STDIN"
        ) as copy:
            now = time.time()
            for job in jobs:
                started = time.strftime(
                    "%Y-%m-%d %H:%M:%S+00", time.gmtime(now - job.days_ago * 86400)
                )
                copy.write_row((job.job_id, job.kind, job.rows, job.model_version, started))
        conn.execute(
            """
            INSERT INTO jobs (id, kind, status, total, model_version, chunks_total, chunks_done,
                              archive_name, created_at, started_at, updated_at)
            SELECT job_id, kind, 'succeeded', rows, model_version,
                   CASE WHEN kind = 'single' THEN 1 ELSE (rows + 63) / 64 END,
                   CASE WHEN kind = 'single' THEN 1 ELSE (rows + 63) / 64 END,
                   CASE WHEN kind = 'batch' THEN 'survey.zip' END,
                   started_at, started_at, started_at
              FROM bench_layout
            """
        )
        conn.execute(
            LOAD_DETECTIONS,
            {"species": list(SPECIES), "n_species": len(SPECIES), "individuals": INDIVIDUALS},
        )
        conn.execute(
            """
            UPDATE jobs j
               SET processed = c.processed, accepted = c.accepted, rejected = c.rejected,
                   failed = c.failed, finished_at = c.last_at, updated_at = c.last_at
              FROM (SELECT job_id, count(*) AS processed,
                           count(*) FILTER (WHERE NOT rejected AND error IS NULL) AS accepted,
                           count(*) FILTER (WHERE rejected AND error IS NULL) AS rejected,
                           count(*) FILTER (WHERE error IS NOT NULL) AS failed,
                           max(created_at) AS last_at
                      FROM detections GROUP BY job_id) c
             WHERE j.id = c.job_id
            """
        )
        # A few alarms so that the alarms view has rows to show.
        conn.execute(
            'INSERT INTO drift_baselines (model_version, baseline_mean, "window")'
            " SELECT unnest(%s::text[]), 0.87, 1000",
            (list(MODEL_VERSIONS),),
        )
        conn.execute(
            "INSERT INTO drift_alarms (model_version, window_mean, baseline_mean, distance,"
            " window_n, fired_at)"
            " SELECT %s, 0.70, 0.87, 0.17, 1000, now() - g * interval '9 days'"
            " FROM generate_series(1, 12) g",
            (BUSY_MODEL,),
        )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) jobs, detections, drift_baselines, drift_alarms")


def timed(run: Callable[[], Any], runs: int) -> tuple[float, float]:
    """Median and minimum wall time in ms, after two warm-up runs."""
    for _ in range(2):
        run()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), min(samples)


def plan_summary(conn: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> str:
    rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + query, params).fetchall()
    return "\n".join("      " + row[0] for row in rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big-job", type=int, default=100_000)
    parser.add_argument("--singles", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--seed", type=int, default=20261124)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--plans", action="store_true", help="print every query's plan")
    parser.add_argument(
        "--existing", metavar="NAME", help="time the queries on a database kept by --keep"
    )
    args = parser.parse_args(argv)

    admin = libpq_url(resolve_database_url())
    if args.existing:
        url = make_url(admin).set(database=args.existing).render_as_string(hide_password=False)
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT job_id, count(*) FROM detections GROUP BY job_id"
                " ORDER BY count(*) DESC LIMIT 1"
            ).fetchone()
        assert row is not None, "the database holds no detections"
        big = JobLayout(row[0], "batch", row[1], BUSY_MODEL, 0.0)
        existing = Database(url, application_name="whales-bench")
        try:
            run_queries(existing, url, big, args.runs, args.plans)
        finally:
            existing.dispose()
        return
    name = f"whales_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        server_version = conn.execute("SHOW server_version").fetchone()
        shared_buffers = conn.execute("SHOW shared_buffers").fetchone()
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(
        f"server: PostgreSQL {server_version[0] if server_version else '?'}, "
        f"shared_buffers {shared_buffers[0] if shared_buffers else '?'}"
    )
    print(f"database: {name} ({'kept' if args.keep else 'dropped at the end'})")
    database = Database(url, application_name="whales-bench")
    try:
        upgrade(url)
        jobs, big = plan_jobs(args.rows, args.big_job, args.singles, args.seed)
        started = time.perf_counter()
        load(url, jobs, args.seed)
        print(
            f"loaded {args.rows:,} detections in {len(jobs):,} jobs "
            f"(largest {big.rows:,} rows) in {time.perf_counter() - started:.1f} s, "
            "incl. VACUUM ANALYZE"
        )
        run_queries(database, url, big, args.runs, args.plans)
    finally:
        database.dispose()
        if not args.keep:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


@dataclass(frozen=True)
class Measured:
    label: str
    what: str
    median_ms: float
    best_ms: float
    rows: int


def one_line(statement: str) -> str:
    return " ".join(statement.split())


def run_queries(database: Database, url: str, big: JobLayout, runs: int, plans: bool) -> None:
    results: list[Measured] = []
    # Deep in the largest job, with a full page after it (smaller --big-job runs).
    depth = max(0, min(PAGE_DEPTH, big.rows - 2 * PAGE_SIZE))

    with psycopg.connect(url, autocommit=True) as conn:
        facts = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE NOT rejected AND error IS NULL),"
            " count(*) FILTER (WHERE model_version = %s AND error IS NULL"
            " AND rejection_reason IS DISTINCT FROM 'corrupted_image') FROM detections",
            (BUSY_MODEL,),
        ).fetchone()
        assert facts is not None
        popular = conn.execute(
            "SELECT individual_id FROM report_sightings ORDER BY sightings DESC LIMIT 1"
        ).fetchone()
        rare = conn.execute(
            "SELECT individual_id FROM report_sightings ORDER BY sightings, individual_id LIMIT 1"
        ).fetchone()
        assert popular is not None and rare is not None
        print(
            f"rows: {facts[0]:,} detections, {facts[1]:,} accepted, "
            f"{facts[2]:,} scored by the gate under {BUSY_MODEL} (the drift window's pool)"
        )

        def query(label: str, text: str, *, plan: bool = False, **params: Any) -> None:
            holder: dict[str, int] = {}

            def run() -> None:
                holder["rows"] = len(conn.execute(text, params).fetchall())

            median, best = timed(run, runs)
            results.append(Measured(label, one_line(text), median, best, holder["rows"]))
            if plans or plan:
                print(f"  plan of {label}:\n{plan_summary(conn, text, params)}")

        page = "SELECT * FROM detections WHERE job_id = %(job)s"
        query(
            f"results page, keyset (position > {depth:,})",
            page + " AND position > %(cursor)s ORDER BY position LIMIT %(size)s",
            job=big.job_id,
            cursor=depth,
            size=PAGE_SIZE + 1,
            plan=True,
        )
        query(
            f"results page, OFFSET {depth:,} (for contrast)",
            page + " ORDER BY position OFFSET %(cursor)s LIMIT %(size)s",
            job=big.job_id,
            cursor=depth,
            size=PAGE_SIZE + 1,
        )
        for label, text, params in view_queries(popular[0], rare[0]):
            query(label, text, **params)

        window_sql = str(
            window_query(BUSY_MODEL, 1000).compile(
                dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
            )
        )
        drift_plan = plan_summary(conn, window_sql, {})

    with database.session() as session:
        stats = drift_stats(session, BUSY_MODEL, 1000)

        def stats_run() -> None:
            drift_stats(session, BUSY_MODEL, 1000)

        def orm_page_run() -> None:
            # What GET /v1/jobs/{id}/results runs (api/results.py page_rows),
            # ORM objects included.
            session.execute(
                select(DetectionRow)
                .where(DetectionRow.job_id == big.job_id, DetectionRow.position > depth)
                .order_by(DetectionRow.position)
                .limit(PAGE_SIZE + 1)
            ).scalars().all()

        median, best = timed(stats_run, runs)
        results.insert(
            0,
            Measured(
                "drift_stats (window 1000)",
                "shared.drift.drift_stats: n, mean, std of the newest 1,000 scored rows of "
                f"{BUSY_MODEL}, with its alarm count and baseline, in one query",
                median,
                best,
                1,
            ),
        )
        median, best = timed(orm_page_run, runs)
        results.insert(
            2,
            Measured(
                f"results page via the ORM (position > {depth:,})",
                f"api/results.py page_rows: {PAGE_SIZE + 1} DetectionRow objects after a cursor",
                median,
                best,
                PAGE_SIZE + 1,
            ),
        )

    def evaluate_run() -> None:
        with database.session() as session:
            evaluate_drift(session, BUSY_MODEL, 1000, 0.15)

    median, best = timed(evaluate_run, runs)
    results.insert(
        1,
        Measured(
            "evaluate_drift (incl. commit)",
            "shared.drift.evaluate_drift as a worker runs it after storing rows",
            median,
            best,
            1,
        ),
    )

    print(f"drift window of {BUSY_MODEL}: {stats.model_dump()}")
    print("plan of the drift window query:\n" + drift_plan)
    print()
    print(f"{'#':>2} {'query':<52} {'median ms':>10} {'min ms':>9} {'rows':>7}")
    for number, measured in enumerate(results, 1):
        print(
            f"{number:>2} {measured.label:<52} {measured.median_ms:>10.2f} "
            f"{measured.best_ms:>9.2f} {measured.rows:>7}"
        )
    print("\nwhat each query is:")
    for number, measured in enumerate(results, 1):
        print(f"{number:>2} {measured.what}")
    for label, target in (("drift_stats", 50.0), ("results page, keyset", 50.0)):
        worst = max(m.median_ms for m in results if m.label.startswith(label))
        verdict = "ok" if worst < target else "OVER TARGET"
        print(f"target: {label} under {target:.0f} ms: {worst:.2f} ms, {verdict}")


def view_queries(popular: str, rare: str) -> list[tuple[str, str, dict[str, Any]]]:
    """What an analyst runs against each view: LIMITed lists, filters on the
    columns the views are meant to be filtered by, and counts of the whole."""
    return [
        (
            "identifications: newest 100",
            "SELECT * FROM report_identifications ORDER BY seen_at DESC LIMIT 100",
            {},
        ),
        ("identifications: count(*)", "SELECT count(*) FROM report_identifications", {}),
        (
            "identifications: one popular individual",
            "SELECT * FROM report_identifications WHERE individual_id = %(ind)s ORDER BY seen_at",
            {"ind": popular},
        ),
        (
            "identifications: one rare individual",
            "SELECT * FROM report_identifications WHERE individual_id = %(ind)s ORDER BY seen_at",
            {"ind": rare},
        ),
        (
            "identifications: last 7 days, newest 100",
            "SELECT * FROM report_identifications"
            " WHERE seen_on >= current_date - 7 ORDER BY seen_at DESC LIMIT 100",
            {},
        ),
        (
            "sightings: top 100",
            "SELECT * FROM report_sightings ORDER BY sightings DESC, last_seen DESC LIMIT 100",
            {},
        ),
        ("sightings: count(*)", "SELECT count(*) FROM report_sightings", {}),
        (
            "sightings: one individual",
            "SELECT * FROM report_sightings WHERE individual_id = %(ind)s",
            {"ind": popular},
        ),
        (
            "species_daily: newest 100",
            "SELECT * FROM report_species_daily"
            " ORDER BY seen_on DESC, identifications DESC LIMIT 100",
            {},
        ),
        ("species_daily: count(*)", "SELECT count(*) FROM report_species_daily", {}),
        (
            "species_daily: last 30 days per species",
            "SELECT species, sum(identifications)"
            " FROM report_species_daily WHERE seen_on >= current_date - 30"
            " GROUP BY species ORDER BY 2 DESC",
            {},
        ),
        (
            "rejections_daily: newest 100",
            "SELECT * FROM report_rejections_daily"
            " ORDER BY processed_on DESC, rejections DESC LIMIT 100",
            {},
        ),
        ("rejections_daily: count(*)", "SELECT count(*) FROM report_rejections_daily", {}),
        (
            "rejections_daily: last 30 days",
            "SELECT * FROM report_rejections_daily"
            " WHERE processed_on >= current_date - 30 ORDER BY processed_on DESC",
            {},
        ),
        (
            "drift_alarms: newest 100",
            "SELECT * FROM report_drift_alarms ORDER BY fired_at DESC LIMIT 100",
            {},
        ),
    ]


if __name__ == "__main__":
    main()
