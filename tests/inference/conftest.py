"""Helpers for the inference tests: pipelines over the session's test bundles."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.inference.bundle import read_manifest, write_manifest
from shared.inference.pipeline import Pipeline, RawImage
from shared.settings import Settings, get_settings
from tests.paths import manifest


def settings() -> Settings:
    return get_settings()


def positive_photos(count: int | None = None) -> list[Path]:
    photos = [row.path for row in manifest() if row.label == "cetacean"]
    return photos[:count] if count else photos


def raw(path: Path) -> RawImage:
    return RawImage(path.name, path.read_bytes())


def copy_bundle(source: Path, target: Path, **changes: dict[str, Any]) -> Path:
    """A copy of a bundle whose manifest sections (gate=..., identifier=...) are updated."""
    shutil.copytree(source, target)
    current = read_manifest(target)
    updates = {
        section: getattr(current, section).model_copy(update=values)
        for section, values in changes.items()
    }
    write_manifest(target, current.model_copy(update=updates))
    return target


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_bundle: Path) -> Iterator[Pipeline]:
    with Pipeline.from_bundle(tiny_bundle, settings()) as pipeline:
        yield pipeline
