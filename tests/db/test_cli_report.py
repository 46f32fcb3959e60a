"""``whales report`` prints the summaries and writes them as CSV."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli.main import cli
from shared.db.engine import Database
from shared.drift import get_baseline
from shared.settings import reset_settings_cache
from tests.db.reporting_data import A, B, C, load_dataset


@pytest.fixture
def configured(clean_database: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    dataset = load_dataset(clean_database)
    monkeypatch.setenv("WHALES_DATABASE_URL", dataset.url)
    reset_settings_cache()
    yield dataset
    monkeypatch.undo()
    reset_settings_cache()


def whales(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_report_prints_the_three_summaries(configured: Database) -> None:
    result = whales("report", "--since", "2026-03-02", "--limit", "2")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    species_at = lines.index("Identifications per species per day (seen since 2026-03-02, UTC)")
    top_at = lines.index("Top 2 individuals (all time)")
    rejections_at = lines.index("Rejections per reason per day (processed since 2026-03-02, UTC)")
    species = [line.split() for line in lines[species_at + 3 : top_at] if line.strip()]
    assert species == [
        ["2026-03-03", "humpback_whale", "1", "1"],
        ["2026-03-02", "blue_whale", "1", "1"],
        ["2026-03-02", "humpback_whale", "1", "1"],
    ]
    top = [line.split()[:3] for line in lines[top_at + 3 : rejections_at] if line.strip()]
    assert top == [[A, "humpback_whale", "3"], [C, "blue_whale", "1"]]
    rejections = [line.split() for line in lines[rejections_at + 3 :] if line.strip()]
    assert rejections[0] == ["2026-03-06", "corrupted_image", "1", "2", "0.5000"]
    assert len(rejections) == 4


def test_report_writes_csv_files(configured: Database, tmp_path: Path) -> None:
    target = tmp_path / "out"
    result = whales("report", "--since", "2026-03-01", "--csv", str(target))
    assert result.exit_code == 0, result.output

    def read(name: str) -> list[dict[str, str]]:
        with (target / name).open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    species = read("species_per_day.csv")
    assert species[-1] == {
        "seen_on": "2026-03-01",
        "species": "humpback_whale",
        "identifications": "2",
        "individuals": "2",
    }
    individuals = read("top_individuals.csv")
    assert [row["individual_id"] for row in individuals] == [A, C, B]
    assert individuals[0]["first_seen"] == "2026-03-01T23:30:00+00:00"
    rejections = read("rejections_per_day.csv")
    assert {row["reason"] for row in rejections} == {
        "not_a_marine_mammal",
        "low_confidence",
        "processing_failed",
        "corrupted_image",
    }


def test_report_drift_sets_a_baseline_and_shows_it(configured: Database) -> None:
    result = whales("report", "drift", "-m", "m1", "--set-baseline", "0.85", "--window", "3")
    assert result.exit_code == 0, result.output
    # The newest 3 scored rows of m1: the single photo (score 0.9, probability
    # 0.8), then the low-confidence and the not-a-marine-mammal rejections (0.1,
    # 0.0); the newer corrupted and failed rows have no score and stay out.
    assert ["m1", "3", "0.3667", "0.3771", "0.2667", "0.8500", "no", "0"] in [
        line.split() for line in result.output.splitlines()
    ]
    with configured.session() as session:
        baseline = get_baseline(session, "m1")
    assert baseline is not None and (baseline.baseline_mean, baseline.window) == (0.85, 3)

    listed = whales("report", "drift", "--window", "3")
    assert "m1" in listed.output

    refused = CliRunner().invoke(cli, ["report", "drift", "--set-baseline", "0.5"])
    assert refused.exit_code == 2
    assert "exactly one --model-version" in refused.output


def test_report_days_counts_back_from_today(configured: Database) -> None:
    result = whales("report", "--days", "1")
    assert result.exit_code == 0, result.output
    today = datetime.now(UTC).date()
    assert f"Identifications per species per day (seen since {today}, UTC)" in result.output
    # Every row of the dataset is from March 2026: the daily summaries are empty,
    # the all-time top individuals are not.
    assert result.output.count("(no rows)") == 2
    assert A in result.output


def test_report_refuses_conflicting_or_misleading_options(
    configured: Database, tmp_path: Path
) -> None:
    both = CliRunner().invoke(cli, ["report", "--days", "3", "--since", "2026-03-01"])
    assert both.exit_code == 2
    assert "either --days or --since" in both.output

    single_file = tmp_path / "report.csv"
    refused = CliRunner().invoke(cli, ["report", "--csv", str(single_file)])
    assert refused.exit_code == 2
    assert "give a directory" in refused.output
    assert not single_file.exists()

    bad_day = CliRunner().invoke(cli, ["report", "--since", "March 1st"])
    assert bad_day.exit_code == 2
