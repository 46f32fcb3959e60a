"""Drift of the cetacean gate, computed from the stored scores.

The window is the newest ``drift_window`` *scored* detections of one model
version, newest by id. Scored means the gate looked at the image: accepted
rows and rows rejected as ``not_a_marine_mammal`` or ``low_confidence`` all
carry the gate's real score, and a shift of the incoming photos towards
non-cetaceans is exactly what the window must show. Corrupted images (never
decoded) and failed images (``error`` set) carry a placeholder score of 0.0
and stay out: mixing them in, as the seed did, reads a burst of broken files
as drift of the model. The window is read from the database, so every API
replica and every restart sees the same numbers.

An alarm is an *event*: it is recorded once when the window mean moves more than
``drift_threshold`` away from the model version's baseline, and the alarm re-arms
only when the mean comes back within the threshold. The state lives in
``drift_baselines.in_alarm`` and is flipped by a conditional UPDATE of that
row, which locks it: a second worker judging the same crossing waits for the
first, then finds the state already flipped and records nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, literal, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.db.models import DetectionRow, DriftAlarm, DriftBaseline
from shared.schemas import DriftStats
from shared.settings import get_settings

__all__ = [
    "WindowState",
    "drift_stats",
    "evaluate_drift",
    "get_baseline",
    "scored",
    "set_baseline",
    "window_query",
    "window_state",
]


@dataclass(frozen=True)
class WindowState:
    """The window's statistics and the model version's baseline, read together."""

    n: int
    score_mean: float
    score_std: float
    probability_mean: float
    alarms_total: int
    baseline_mean: float | None
    in_alarm: bool


def _window_size(window: int | None) -> int:
    size = get_settings().drift_window if window is None else window
    if size < 1:
        raise ValueError("the drift window holds at least one detection")
    return size


def scored() -> ColumnElement[bool]:
    """Rows whose cetacean score the gate actually computed.

    Written exactly as the predicate of ix_detections_drift_window (migration
    0003), with the reason as a literal rather than a bound parameter: a
    generic plan could not prove a parameter matches the index predicate.
    """
    return and_(
        DetectionRow.error.is_(None),
        DetectionRow.rejection_reason.is_distinct_from(literal_column("'corrupted_image'")),
    )


def window_query(model_version: str, window: int) -> Select[int, Any, Any, Any]:
    """n, mean and population std of the cetacean score, and mean probability,
    of the window."""
    # The partial index ix_detections_drift_window matches scored(); its
    # INCLUDE columns make this an index-only scan of at most `window` entries.
    recent = (
        select(DetectionRow.cetacean_score, DetectionRow.probability)
        .where(DetectionRow.model_version == model_version, scored())
        .order_by(DetectionRow.id.desc())
        .limit(window)
        .subquery("recent")
    )
    return select(
        func.count(),
        func.coalesce(func.avg(recent.c.cetacean_score), 0.0),
        # Population std: the window is all there is, not a sample of it.
        func.coalesce(func.stddev_pop(recent.c.cetacean_score), 0.0),
        func.coalesce(func.avg(recent.c.probability), 0.0),
    ).select_from(recent)


def window_state(session: Session, model_version: str, window: int | None = None) -> WindowState:
    """Window statistics, alarm count and baseline of one model version in one query."""
    size = _window_size(window)
    stats = window_query(model_version, size).subquery("stats")
    alarms = (
        select(func.count())
        .select_from(DriftAlarm)
        .where(DriftAlarm.model_version == model_version)
        .scalar_subquery()
    )
    baseline = (
        select(DriftBaseline.baseline_mean, DriftBaseline.in_alarm)
        .where(DriftBaseline.model_version == model_version)
        .subquery("baseline")
    )
    row = session.execute(
        select(
            stats,
            alarms,
            baseline.c.baseline_mean,
            func.coalesce(baseline.c.in_alarm, False),
        )
        .select_from(stats)
        .outerjoin(baseline, literal(True))
    ).one()
    n, mean, std, probability, alarms_total, baseline_mean, in_alarm = row
    return WindowState(
        n=int(n),
        score_mean=float(mean),
        score_std=float(std),
        probability_mean=float(probability),
        alarms_total=int(alarms_total),
        baseline_mean=None if baseline_mean is None else float(baseline_mean),
        in_alarm=bool(in_alarm),
    )


def drift_stats(session: Session, model_version: str, window: int | None = None) -> DriftStats:
    """Statistics of the last ``window`` (default: the drift_window setting)
    scored detections of ``model_version``; zeros when there are none."""
    state = window_state(session, model_version, window)
    return DriftStats(
        n=state.n,
        alarms_total=state.alarms_total,
        score_mean=state.score_mean,
        score_std=state.score_std,
        probability_mean=state.probability_mean,
    )


def get_baseline(session: Session, model_version: str) -> DriftBaseline | None:
    return session.get(DriftBaseline, model_version, populate_existing=True)


def set_baseline(
    session: Session, model_version: str, mean: float, *, window: int | None = None
) -> DriftBaseline:
    """Set (or replace) the reference mean of a model version explicitly.

    A new reference re-arms the alarm: whatever was "in alarm" was measured
    against the old one.
    """
    if not 0.0 <= mean <= 1.0:
        raise ValueError("a baseline is a mean cetacean score, between 0 and 1")
    size = _window_size(window)
    statement = insert(DriftBaseline).values(
        model_version=model_version, baseline_mean=mean, window=size, in_alarm=False
    )
    statement = statement.on_conflict_do_update(
        index_elements=[DriftBaseline.model_version],
        set_={
            "baseline_mean": statement.excluded.baseline_mean,
            "window": statement.excluded.window,
            "in_alarm": False,
            "established_at": func.now(),
            "updated_at": func.now(),
        },
    )
    session.execute(statement)
    return session.get_one(DriftBaseline, model_version, populate_existing=True)


def evaluate_drift(
    session: Session,
    model_version: str,
    window: int | None = None,
    threshold: float | None = None,
) -> DriftAlarm | None:
    """Record a drift alarm if this evaluation is a crossing; return it, else None.

    Workers call this after each stored chunk or single image. It costs one
    indexed query, plus one small write only when something changes: the first
    full window becomes the baseline, or the alarm state flips.
    Only a full window is judged: a mean over a handful of rows is noise.
    """
    size = _window_size(window)
    limit = get_settings().drift_threshold if threshold is None else threshold
    if not limit > 0.0:
        raise ValueError("the drift threshold is a positive distance between mean scores")
    state = window_state(session, model_version, size)
    if state.n < size:
        return None
    if state.baseline_mean is None:
        # Two workers may both get here: the first insert wins, the other is a no-op.
        session.execute(
            insert(DriftBaseline)
            .values(model_version=model_version, baseline_mean=state.score_mean, window=size)
            .on_conflict_do_nothing(index_elements=[DriftBaseline.model_version])
        )
        return None
    crossed = abs(state.score_mean - state.baseline_mean) > limit
    if crossed == state.in_alarm:
        return None
    # The state is decided again inside the UPDATE against the row as it is once
    # locked: a worker that flipped it first makes this UPDATE match nothing, so
    # a crossing is recorded exactly once.
    crossed_now = func.abs(literal(state.score_mean) - DriftBaseline.baseline_mean) > limit
    flipped = session.execute(
        update(DriftBaseline)
        .where(
            DriftBaseline.model_version == model_version,
            DriftBaseline.in_alarm.is_distinct_from(crossed_now),
        )
        .values(in_alarm=crossed_now, updated_at=func.now())
        .returning(DriftBaseline.in_alarm, DriftBaseline.baseline_mean)
    ).one_or_none()
    if flipped is None or not flipped.in_alarm:
        return None
    return session.execute(
        insert(DriftAlarm)
        .values(
            model_version=model_version,
            window_mean=state.score_mean,
            baseline_mean=flipped.baseline_mean,
            distance=abs(state.score_mean - flipped.baseline_mean),
            window_n=state.n,
        )
        .returning(DriftAlarm)
    ).scalar_one()
