"""``whales report``: the analysts' summaries, read from the reporting views.

whales report [--days N | --since YYYY-MM-DD] [--limit N] [--csv DIR]
whales report drift [-m MODEL_VERSION] [--set-baseline MEAN]

The summaries print as aligned tables; --csv DIR also writes each one as a CSV
file (a header row, ISO dates and times, unrounded numbers) into DIR.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from sqlalchemy import select, text
from sqlalchemy.orm import Session

CSV_FILES = {
    "species": "species_per_day.csv",
    "individuals": "top_individuals.csv",
    "rejections": "rejections_per_day.csv",
}


@contextmanager
def _session(*, read_only: bool) -> Iterator[Session]:
    from shared.db.engine import Database
    from shared.services import resolve_database_url

    database = Database(resolve_database_url(), pool_size=1, application_name="whales-report")
    try:
        with database.session() as session:
            if read_only:
                # A report never writes; say so to the server as well.
                session.execute(text("SET TRANSACTION READ ONLY"))
            yield session
    finally:
        database.dispose()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return str(value)


def _table(title: str, rows: Sequence[Any], columns: Sequence[str]) -> None:
    """Print dataclass rows as an aligned text table."""
    click.echo(f"\n{title}")
    if not rows:
        click.echo("  (no rows)")
        return
    cells = [[_cell(getattr(row, column)) for column in columns] for row in rows]
    widths = [
        max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)
    ]
    click.echo("  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    click.echo("  " + "  ".join("-" * w for w in widths))
    for line in cells:
        click.echo("  " + "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))


def _write_csv(path: Path, rows: Sequence[Any], row_type: type) -> None:
    # Header from the row type, so an empty summary still writes its columns.
    columns = [field.name for field in dataclasses.fields(row_type)]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(
                [
                    value.isoformat() if isinstance(value, date | datetime) else value
                    for value in (getattr(row, column) for column in columns)
                ]
            )


@click.group(invoke_without_command=True)
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=7,
    show_default=True,
    help="Daily summaries cover the last N UTC days, today included.",
)
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="First UTC day of the daily summaries (instead of --days).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="How many top individuals to show.",
)
@click.option(
    "--csv",
    "csv_dir",
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write species_per_day.csv, top_individuals.csv and "
    "rejections_per_day.csv into this directory (created if missing).",
)
@click.pass_context
def report(
    ctx: click.Context, days: int, since: datetime | None, limit: int, csv_dir: Path | None
) -> None:
    """Identifications per species per day, top individuals, rejections per day."""
    if ctx.invoked_subcommand is not None:
        return
    if since is not None and ctx.get_parameter_source("days") is ParameterSource.COMMANDLINE:
        raise click.UsageError("give either --days or --since, not both")
    if csv_dir is not None and csv_dir.suffix.lower() == ".csv" and not csv_dir.is_dir():
        # Three summaries with different columns make three files, not one.
        raise click.BadParameter(
            f"{csv_dir} names a file; give a directory to write "
            + ", ".join(CSV_FILES.values())
            + " into",
            param_hint="--csv",
        )
    from shared.reporting import (
        IndividualSightings,
        RejectionDay,
        SpeciesDay,
        rejections_per_day,
        species_per_day,
        top_individuals,
    )

    first_day = since.date() if since else datetime.now(UTC).date() - timedelta(days=days - 1)
    with _session(read_only=True) as session:
        species = species_per_day(session, since=first_day)
        individuals = top_individuals(session, limit=limit)
        rejections = rejections_per_day(session, since=first_day)

    _table(
        f"Identifications per species per day (seen since {first_day}, UTC)",
        species,
        ["seen_on", "species", "identifications", "individuals"],
    )
    _table(
        f"Top {limit} individuals (all time)",
        individuals,
        ["individual_id", "species", "sightings", "first_seen", "last_seen"],
    )
    _table(
        f"Rejections per reason per day (processed since {first_day}, UTC)",
        rejections,
        ["processed_on", "reason", "rejections", "processed", "rate"],
    )
    if csv_dir is not None:
        csv_dir.mkdir(parents=True, exist_ok=True)
        _write_csv(csv_dir / CSV_FILES["species"], species, SpeciesDay)
        _write_csv(csv_dir / CSV_FILES["individuals"], individuals, IndividualSightings)
        _write_csv(csv_dir / CSV_FILES["rejections"], rejections, RejectionDay)
        click.echo(f"\nCSV written to {csv_dir}")


@report.command()
@click.option(
    "--model-version",
    "-m",
    "model_versions",
    multiple=True,
    help="Model version(s) to show; default: every version with a baseline.",
)
@click.option(
    "--window", type=click.IntRange(min=1), help="Window size; default: WHALES_DRIFT_WINDOW."
)
@click.option(
    "--set-baseline",
    "baseline",
    type=click.FloatRange(0.0, 1.0),
    help="Set the baseline mean cetacean score of the one --model-version given "
    "(re-arms its alarm).",
)
@click.option("--alarms", type=click.IntRange(min=0), default=10, show_default=True)
def drift(
    model_versions: tuple[str, ...], window: int | None, baseline: float | None, alarms: int
) -> None:
    """Drift of the cetacean score per model version, and the latest alarms."""
    from shared.db.models import DriftBaseline
    from shared.drift import set_baseline, window_state
    from shared.reporting import drift_alarms

    if baseline is not None and len(model_versions) != 1:
        raise click.UsageError("--set-baseline needs exactly one --model-version")
    with _session(read_only=baseline is None) as session:
        if baseline is not None:
            set_baseline(session, model_versions[0], baseline, window=window)
            click.echo(f"baseline of {model_versions[0]} set to {baseline:.4f}")
        versions = list(model_versions) or list(
            session.execute(select(DriftBaseline.model_version).order_by("model_version")).scalars()
        )
        states = [(version, window_state(session, version, window)) for version in versions]
        recent = drift_alarms(session, limit=alarms) if alarms else []

    if not versions:
        click.echo("no model version has a drift baseline yet; name one with --model-version")
        return
    rows = [
        _DriftRow(
            version,
            s.n,
            s.score_mean,
            s.score_std,
            s.probability_mean,
            s.baseline_mean,
            s.in_alarm,
            s.alarms_total,
        )
        for version, s in states
    ]
    _table(
        "Drift window per model version",
        rows,
        [field.name for field in dataclasses.fields(_DriftRow)],
    )
    if alarms:
        _table(
            f"Latest {alarms} drift alarms",
            recent,
            ["fired_at", "model_version", "window_mean", "baseline_mean", "distance", "window_n"],
        )


@dataclasses.dataclass(frozen=True)
class _DriftRow:
    model_version: str
    n: int
    score_mean: float
    score_std: float
    probability_mean: float
    baseline_mean: float | None
    in_alarm: bool
    alarms_total: int
