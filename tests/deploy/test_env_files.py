""".env.example, .dockerignore and .gitignore: no secrets in the repository or an image."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from shared.settings import Settings
from tests.deploy.compose_files import WHALES_NAME, field_name, settings_variables
from tests.deploy.dockerignore import excluded, read_patterns
from tests.paths import REPO_ROOT

ENV_EXAMPLE = REPO_ROOT / ".env.example"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY", re.IGNORECASE)
PLACEHOLDER = "change-me"


def _assignments(text: str, *, commented: bool) -> dict[str, str]:
    """KEY=value lines; with ``commented``, also ``# KEY=value`` examples."""
    prefix = r"(?:#\s*)?" if commented else ""
    pattern = rf"^{prefix}([A-Z][A-Z0-9_]*)=(.*)$"
    return {name: value.strip() for name, value in re.findall(pattern, text, flags=re.MULTILINE)}


def test_env_example_names_only_real_settings() -> None:
    text = ENV_EXAMPLE.read_text()
    names = set(WHALES_NAME.findall(text))
    assert {"WHALES_FLOWER_USER", "WHALES_FLOWER_PASSWORD"} <= names
    assert names <= settings_variables(), names - settings_variables()


def test_env_example_values_are_valid_settings() -> None:
    values = {
        field_name(name): value
        for name, value in _assignments(ENV_EXAMPLE.read_text(), commented=True).items()
        if name.startswith("WHALES_")
    }
    assert len(values) > 5
    Settings.model_validate(values)  # raises on a value the services would refuse at start


def test_env_example_holds_placeholders_not_secrets() -> None:
    secrets = {
        name: value
        for name, value in _assignments(ENV_EXAMPLE.read_text(), commented=True).items()
        if SECRET_NAME.search(name)
    }
    assert "POSTGRES_PASSWORD" in secrets
    for name, value in secrets.items():
        assert value in ("", PLACEHOLDER), f"{name} holds a value; use {PLACEHOLDER}"


def test_env_is_ignored_by_git_and_docker() -> None:
    gitignore = (REPO_ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in {line.strip() for line in gitignore}
    patterns = read_patterns(REPO_ROOT / ".dockerignore")
    assert excluded(patterns, ".env")
    assert excluded(patterns, ".env.production")


def test_env_is_not_tracked() -> None:
    git = shutil.which("git")
    if git is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(
        [git, "ls-files", "--", ".env", "*.env"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert tracked.stdout.strip() == ""


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        "var/models/manifest.json",
        "var/blobs/ab/upload.zip",
        ".git/HEAD",
        "tests/unit/test_archive.py",
        "tests/deploy/test_env_files.py",
        "bench/bench_batch.py",
        "shared/__pycache__/settings.cpython-311.pyc",
        ".mypy_cache/3.11/cache.db",
        ".pytest_cache/v/cache/nodeids",
        ".ruff_cache/content",
        ".hypothesis/examples/x",
        "whales_identification.egg-info/PKG-INFO",
        "models/identifier.pt",
        "bundle/u2net.onnx",
        "shared/inference/weights.safetensors",
        "survey-day.zip",
    ],
)
def test_dockerignore_keeps_local_state_out_of_the_build(path: str) -> None:
    assert excluded(read_patterns(REPO_ROOT / ".dockerignore"), path)


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "constraints.txt",
        "README.md",
        "shared/settings.py",
        "migrations/script.py.mako",
    ],
)
def test_dockerignore_keeps_what_the_build_needs(path: str) -> None:
    assert not excluded(read_patterns(REPO_ROOT / ".dockerignore"), path)
