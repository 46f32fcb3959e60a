"""Where the test data lives.

The sample photos are read from the sample data beside the repository
(``../shared/data/sample``) or from ``WHALES_SAMPLE_DIR``; they are never
copied into the repository.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def sample_dir() -> Path:
    override = os.environ.get("WHALES_SAMPLE_DIR")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "data" / "sample"


@dataclass(frozen=True)
class SamplePhoto:
    path: Path
    label: str  # "cetacean" or "non_cetacean"
    individual_id: str
    species: str


def manifest() -> list[SamplePhoto]:
    """The rows of ``manifest.csv`` (downscaled positives and negatives)."""
    root = sample_dir()
    with (root / "manifest.csv").open(newline="") as handle:
        return [
            SamplePhoto(root / row["relpath"], row["label"], row["individual_id"], row["species"])
            for row in csv.DictReader(handle)
        ]


def originals() -> list[SamplePhoto]:
    """Full-resolution photos with their labels (``originals/labels.csv``)."""
    root = sample_dir() / "originals"
    with (root / "labels.csv").open(newline="") as handle:
        return [
            SamplePhoto(root / row["image"], "cetacean", row["individual_id"], row["species"])
            for row in csv.DictReader(handle)
        ]


def all_sample_images() -> list[Path]:
    """Every sample JPEG: positives, negatives and originals."""
    return sorted(sample_dir().glob("*/*.jpg"))
