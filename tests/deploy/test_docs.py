"""docs/deployment.md stays true to the files it describes."""

from __future__ import annotations

import re

from tests.deploy import dockerfile_rules as rules
from tests.deploy.compose_files import WHALES_NAME, load_compose, settings_variables
from tests.paths import REPO_ROOT

DOC = REPO_ROOT / "docs" / "deployment.md"


def test_the_guide_names_only_real_settings() -> None:
    names = set(WHALES_NAME.findall(DOC.read_text()))
    assert names, "the guide names no setting"
    assert names <= settings_variables(), names - settings_variables()


def test_the_guide_names_the_images_that_are_used() -> None:
    doc = DOC.read_text()
    services = load_compose(REPO_ROOT / "docker-compose.yml")["services"]
    for service in ("postgres", "redis"):
        version = re.search(r":(\d+\.\d+(?:\.\d+)?)", services[service]["image"])
        assert version, services[service]["image"]
        assert re.search(rf"\b{re.escape(version.group(1))}\b", doc), (
            f"{service} {version.group(1)}"
        )
    worker = rules.parse((REPO_ROOT / "Dockerfile.worker").read_text())
    base = worker.resolved_base(worker.final)
    assert base in doc
    assert set(re.findall(r"pytorch/pytorch:[\w.-]+", doc)) == {base}


def test_the_guide_describes_every_service_and_volume() -> None:
    doc = DOC.read_text()
    compose = load_compose(REPO_ROOT / "docker-compose.yml")
    for service in compose["services"]:
        assert f"`{service}`" in doc, service
    for volume in compose["volumes"]:
        assert f"`{compose['name']}_{volume}`" in doc, volume


def test_the_guide_runs_the_tools_profile_that_exists() -> None:
    services = load_compose(REPO_ROOT / "docker-compose.yml")["services"]
    runs = re.findall(
        r"docker compose --profile (\S+) run --rm (?:-v \S+ )*([\w-]+)", DOC.read_text()
    )
    assert len(runs) >= 2, "the guide shows how to fill the models volume"
    for profile, service in runs:
        assert profile in services[service].get("profiles", []), (profile, service)
