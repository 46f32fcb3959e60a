"""Drift statistics and alarms from stored scores, against a real Postgres."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Sequence

import psycopg
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.dialects import postgresql

from shared.db.engine import Database
from shared.db.models import DriftAlarm
from shared.drift import (
    drift_stats,
    evaluate_drift,
    get_baseline,
    set_baseline,
    window_query,
)
from shared.jobs import DetectionRecord, create_batch_job, failed_record, store_results
from shared.settings import reset_settings_cache
from tests.services import _libpq_url

MODEL = "effb4-arcface-drift"
OTHER = "effb4-arcface-other"
TIGHT = 1e-12


class Detections:
    """Stores rows one statement at a time, so ids follow the order given."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.position = 0
        with db.session() as session:
            job, _ = create_batch_job(
                session,
                archive_path="/d.zip",
                archive_name="d.zip",
                archive_bytes=1,
                with_mask=False,
            )
        self.job_id = job.id

    def add(
        self,
        scores: Sequence[float],
        *,
        model: str = MODEL,
        probability: float = 0.5,
        outcome: str = "accepted",
    ) -> None:
        """Store one row per score; outcome is "accepted", a rejection reason or
        "failed"."""
        for score in scores:
            if outcome == "failed":
                record = failed_record(
                    self.position, "x.jpg", error="worker_lost", model_version=model, worker=None
                )
                # A failure after the gate may keep the gate's score; it still
                # stays out of the window.
                record.cetacean_score = score
            else:
                accepted = outcome == "accepted"
                record = DetectionRecord(
                    position=self.position,
                    image_ind=f"img_{self.position}.jpg",
                    bbox=[0, 0, 10, 10],
                    class_animal="1a71fbb72250" if accepted else "",
                    id_animal="humpback_whale" if accepted else "unknown",
                    probability=probability,
                    is_cetacean=outcome in ("accepted", "low_confidence"),
                    cetacean_score=score,
                    rejected=not accepted,
                    rejection_reason=None if accepted else outcome,
                    model_version=model,
                )
            with self.db.session() as session:
                store_results(session, self.job_id, [record])
            self.position += 1


@pytest.fixture
def detections(clean_database: Database) -> Detections:
    return Detections(clean_database)


def test_window_statistics_are_exact(clean_database: Database, detections: Detections) -> None:
    detections.add([0.2, 0.95], probability=0.1)  # older than the window
    detections.add([0.9, 0.8], probability=0.6)
    detections.add([0.7, 0.4], probability=0.9)
    window = [0.9, 0.8, 0.7, 0.4]

    with clean_database.session() as session:
        stats = drift_stats(session, MODEL, 4)

    assert stats.n == 4
    assert stats.alarms_total == 0
    assert stats.score_mean == pytest.approx(statistics.fmean(window), abs=TIGHT)
    assert stats.score_std == pytest.approx(statistics.pstdev(window), abs=TIGHT)
    assert stats.probability_mean == pytest.approx(0.75, abs=TIGHT)


def test_the_window_holds_every_scored_row_and_no_unscored_one(
    clean_database: Database, detections: Detections
) -> None:
    # Rejected by the gate or for low confidence: the gate did score them.
    detections.add([0.9], probability=0.8)
    detections.add([0.2], probability=0.0, outcome="not_a_marine_mammal")
    detections.add([0.6], probability=0.3, outcome="low_confidence")
    # Newer, but never scored: they would fill the window if they counted.
    detections.add([0.0, 0.0], probability=0.0, outcome="corrupted_image")
    detections.add([0.05], probability=0.0, outcome="failed")
    detections.add([0.1, 0.1, 0.1], model=OTHER)
    window = [0.9, 0.2, 0.6]

    with clean_database.session() as session:
        stats = drift_stats(session, MODEL, 3)
        wider = drift_stats(session, MODEL, 10)
        other = drift_stats(session, OTHER, 3)

    assert stats.n == 3
    assert stats.score_mean == pytest.approx(statistics.fmean(window), abs=TIGHT)
    assert stats.score_std == pytest.approx(statistics.pstdev(window), abs=TIGHT)
    assert stats.probability_mean == pytest.approx((0.8 + 0.0 + 0.3) / 3, abs=TIGHT)
    assert wider.model_dump() == stats.model_dump()
    assert (other.n, other.score_mean, other.score_std) == (3, pytest.approx(0.1), 0.0)


def test_an_empty_window_is_all_zeros(clean_database: Database) -> None:
    with clean_database.session() as session:
        stats = drift_stats(session, "never-used", 1000)
    assert stats.model_dump() == {
        "n": 0,
        "alarms_total": 0,
        "score_mean": 0.0,
        "score_std": 0.0,
        "probability_mean": 0.0,
    }


def test_window_size_defaults_to_the_setting(
    clean_database: Database, detections: Detections, monkeypatch: pytest.MonkeyPatch
) -> None:
    detections.add([0.5, 0.6, 0.9])
    monkeypatch.setenv("WHALES_DRIFT_WINDOW", "2")
    reset_settings_cache()
    try:
        with clean_database.session() as session:
            stats = drift_stats(session, MODEL)
    finally:
        monkeypatch.undo()
        reset_settings_cache()
    assert (stats.n, stats.score_mean) == (2, pytest.approx(0.75, abs=TIGHT))


def test_first_full_window_becomes_the_baseline(
    clean_database: Database, detections: Detections
) -> None:
    for score in (0.9, 0.8, 0.7):
        detections.add([score])
        with clean_database.session() as session:
            assert evaluate_drift(session, MODEL, 4, 0.15) is None
            assert get_baseline(session, MODEL) is None  # window not full yet
    detections.add([0.6])
    with clean_database.session() as session:
        assert evaluate_drift(session, MODEL, 4, 0.15) is None
        baseline = get_baseline(session, MODEL)
    assert baseline is not None
    assert baseline.baseline_mean == pytest.approx(0.75, abs=TIGHT)
    assert (baseline.window, baseline.in_alarm) == (4, False)


def _evaluate_after_each(
    db: Database, detections: Detections, scores: Sequence[float], outcome: str = "accepted"
) -> list[DriftAlarm | None]:
    """What the workers do: store a row, then evaluate."""
    fired: list[DriftAlarm | None] = []
    for score in scores:
        detections.add([score], outcome=outcome)
        with db.session() as session:
            fired.append(evaluate_drift(session, MODEL, 4, 0.15))
    return fired


def test_an_alarm_fires_once_per_crossing_and_rearms(
    clean_database: Database, detections: Detections
) -> None:
    db = clean_database
    # Window 4, threshold 0.15, baseline 0.9 from the first full window.
    baseline_phase = _evaluate_after_each(db, detections, [0.9] * 4)
    # Window means: 0.8, 0.7 (crossing), 0.6, 0.5 — one alarm, not three.
    drop = _evaluate_after_each(db, detections, [0.5] * 4)
    # Means 0.6, 0.7 (still out), 0.8 (back within: re-armed), 0.9.
    recovery = _evaluate_after_each(db, detections, [0.9] * 4)
    # Means 0.8, 0.7 (a second crossing), 0.6.
    second_drop = _evaluate_after_each(db, detections, [0.5] * 3)
    detections.add([0.1, 0.1], model=OTHER)

    fired = [alarm is not None for alarm in baseline_phase + drop + recovery + second_drop]
    assert [i for i, alarm in enumerate(fired) if alarm] == [5, 13]
    first = drop[1]
    assert first is not None
    assert (first.model_version, first.window_n) == (MODEL, 4)
    assert first.window_mean == pytest.approx(0.7, abs=TIGHT)
    assert first.baseline_mean == pytest.approx(0.9, abs=TIGHT)
    assert first.distance == pytest.approx(0.2, abs=TIGHT)

    with db.session() as session:
        stats = drift_stats(session, MODEL, 4)
        other = drift_stats(session, OTHER, 4)
        stored = session.execute(select(func.count()).select_from(DriftAlarm)).scalar_one()
        state = get_baseline(session, MODEL)
    assert (stats.alarms_total, stored, other.alarms_total) == (2, 2, 0)
    assert stats.score_mean == pytest.approx(0.6, abs=TIGHT)
    assert state is not None and state.in_alarm


def test_a_burst_of_corrupted_files_is_not_drift(
    clean_database: Database, detections: Detections
) -> None:
    db = clean_database
    with db.session() as session:
        set_baseline(session, MODEL, 0.9, window=4)
    fired = _evaluate_after_each(db, detections, [0.9] * 4)
    for _ in range(6):
        detections.add([0.0], outcome="corrupted_image")
        with db.session() as session:
            fired.append(evaluate_drift(session, MODEL, 4, 0.15))
    # A batch of photos of the beach is: the gate's scores drop.
    fired += _evaluate_after_each(db, detections, [0.4, 0.4], outcome="not_a_marine_mammal")
    assert [i for i, alarm in enumerate(fired) if alarm is not None] == [11]
    with db.session() as session:
        stats = drift_stats(session, MODEL, 4)
    assert (stats.n, stats.alarms_total) == (4, 1)
    assert stats.score_mean == pytest.approx(0.65, abs=TIGHT)


def test_an_explicit_baseline_replaces_the_reference_and_rearms(
    clean_database: Database, detections: Detections
) -> None:
    db = clean_database
    with db.session() as session:
        set_baseline(session, MODEL, 0.5, window=4)
    fired = _evaluate_after_each(db, detections, [0.9] * 5)
    assert [alarm is not None for alarm in fired] == [False, False, False, True, False]

    with db.session() as session:
        replaced = set_baseline(session, MODEL, 0.6, window=4)
        assert (replaced.baseline_mean, replaced.in_alarm) == (0.6, False)
        again = evaluate_drift(session, MODEL, 4, 0.15)
    assert again is not None and again.baseline_mean == pytest.approx(0.6)
    with db.session() as session:
        set_baseline(session, MODEL, 0.85, window=4)
        assert evaluate_drift(session, MODEL, 4, 0.15) is None
        assert drift_stats(session, MODEL, 4).alarms_total == 2
    with pytest.raises(ValueError), db.session() as session:
        set_baseline(session, MODEL, 1.5)


def test_bad_window_or_threshold_is_a_clear_error(clean_database: Database) -> None:
    with clean_database.session() as session:
        with pytest.raises(ValueError, match="window"):
            drift_stats(session, MODEL, 0)
        with pytest.raises(ValueError, match="threshold"):
            evaluate_drift(session, MODEL, 4, 0.0)
        with pytest.raises(ValueError, match="threshold"):
            evaluate_drift(session, MODEL, 4, -0.1)


def _waiting_on_a_lock(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return row is not None and row[0] > 0


def test_two_workers_evaluating_at_once_record_one_alarm(
    clean_database: Database, detections: Detections
) -> None:
    db = clean_database
    with db.session() as session:
        set_baseline(session, MODEL, 0.9, window=4)
    detections.add([0.5] * 4)

    results: list[DriftAlarm | None] = []

    def second_worker() -> None:
        with db.session() as session:
            results.append(evaluate_drift(session, MODEL, 4, 0.15))

    with db.session() as first:
        first_alarm = evaluate_drift(first, MODEL, 4, 0.15)
        assert first_alarm is not None
        # The second worker reads the baseline before the first commits, so it
        # also sees a crossing; its UPDATE must then wait for the first's lock.
        thread = threading.Thread(target=second_worker)
        thread.start()
        deadline = time.monotonic() + 10
        while not _waiting_on_a_lock(_libpq_url(db.url)):
            assert time.monotonic() < deadline, "the second evaluation never blocked"
            time.sleep(0.02)
    thread.join(timeout=10)

    assert results == [None]
    with db.session() as session:
        assert drift_stats(session, MODEL, 4).alarms_total == 1


def test_the_window_query_reads_the_drift_index_in_order(clean_database: Database) -> None:
    query = window_query(MODEL, 1000).compile(
        dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
    )
    with clean_database.session() as session:
        # On a handful of rows a sequential scan is cheapest; what matters here is
        # that the query *can* use the partial index (its predicate matches) and
        # needs no sort. bench/db.py shows the plan at a million rows.
        session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(session.execute(text(f"EXPLAIN (COSTS OFF) {query}")).scalars())
    assert "ix_detections_drift_window" in plan
    assert "Sort" not in plan
