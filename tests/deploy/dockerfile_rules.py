"""A small Dockerfile reader and the rules our images keep.

hadolint checks more when it is installed (see test_dockerfiles.py); these
rules always run, with no tool beyond Python, and include the ones hadolint
does not know: dependencies copied and installed before the sources, and a
healthcheck in an image that serves HTTP.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|PRIVATE_KEY", re.IGNORECASE)
_VERSION_TAG = re.compile(r"\d+\.\d+")
_ARG_REFERENCE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    arguments: str
    line: int


@dataclass
class Stage:
    base: str  # as written, ARG references unresolved
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def of(self, keyword: str) -> list[Instruction]:
        return [item for item in self.instructions if item.keyword == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def resolved_base(self, stage: Stage) -> str:
        return _ARG_REFERENCE.sub(
            lambda m: self.global_args.get(m.group(1), m.group(0)), stage.base
        )


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Instructions with their continuation lines joined; comments dropped."""
    lines: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops comment lines, even inside a continuation
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        lines.append((start, " ".join(pending)))
        pending = []
    if pending:
        raise ValueError(f"line {start}: the last instruction ends with a continuation")
    return lines


def parse(text: str) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in _logical_lines(text):
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        arguments = arguments.strip()
        if keyword == "FROM":
            words = [w for w in arguments.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            if keyword != "ARG":
                raise ValueError(f"line {number}: only ARG may come before the first FROM")
            arg_name, _, default = arguments.partition("=")
            global_args[arg_name.strip()] = default.strip()
        else:
            stages[-1].instructions.append(Instruction(keyword, arguments, number))
    if not stages:
        raise ValueError("no FROM instruction")
    return Dockerfile(global_args, stages)


# --- rules: each returns what is wrong, empty when nothing is ---------------------


def unpinned_bases(dockerfile: Dockerfile) -> list[str]:
    """Every external base image names a version tag (or a digest), never latest."""
    problems = []
    earlier: set[str] = set()
    for stage in dockerfile.stages:
        image = dockerfile.resolved_base(stage)
        if image in earlier:
            continue
        if "$" in image:
            problems.append(f"FROM {stage.base}: has no default to check")
        elif "@sha256:" not in image:
            name, _, tag = image.rpartition(":")
            if not name or "/" in tag:
                problems.append(f"FROM {image}: no tag (means latest)")
            elif tag == "latest" or not _VERSION_TAG.search(tag):
                problems.append(f"FROM {image}: tag {tag!r} is not a version")
        if stage.name:
            earlier.add(stage.name)
    return problems


def root_user(dockerfile: Dockerfile) -> list[str]:
    """The final stage switches to a user other than root."""
    users = dockerfile.final.of("USER")
    if not users:
        return ["the final stage has no USER: the container runs as root"]
    user = users[-1].arguments.split(":")[0]
    if user in ("root", "0"):
        return [f"line {users[-1].line}: USER {user} is root"]
    return []


def _assignments(instruction: Instruction) -> list[tuple[str, str]]:
    words = shlex.split(instruction.arguments)
    if instruction.keyword == "ENV" and words and "=" not in words[0]:
        return [(words[0], " ".join(words[1:]))]  # legacy form: ENV NAME value
    pairs = [word.partition("=") for word in words]
    return [(name, value) for name, _, value in pairs]


def secrets(dockerfile: Dockerfile) -> list[str]:
    """No ENV or ARG gives a password, secret or token a value in the image."""
    problems = []
    for stage in dockerfile.stages:
        for instruction in stage.of("ENV") + stage.of("ARG"):
            for name, value in _assignments(instruction):
                if _SECRET_NAME.search(name) and value:
                    problems.append(
                        f"line {instruction.line}: {instruction.keyword} {name} has a value"
                    )
    for name, value in dockerfile.global_args.items():
        if _SECRET_NAME.search(name) and value:
            problems.append(f"ARG {name} has a value")
    return problems


def missing_healthcheck(dockerfile: Dockerfile) -> list[str]:
    checks = dockerfile.final.of("HEALTHCHECK")
    if not checks or checks[-1].arguments.upper().startswith("NONE"):
        return ["the final stage has no HEALTHCHECK"]
    return []


def apt_hygiene(dockerfile: Dockerfile) -> list[str]:
    """apt-get install: update in the same layer, no recommends, lists removed."""
    problems = []
    for stage in dockerfile.stages:
        for run in stage.of("RUN"):
            if "apt-get install" not in run.arguments and "apt install" not in run.arguments:
                continue
            if "apt-get update" not in run.arguments:
                problems.append(f"line {run.line}: apt-get install without apt-get update")
            if "--no-install-recommends" not in run.arguments:
                problems.append(f"line {run.line}: apt-get install without --no-install-recommends")
            if "rm -rf /var/lib/apt/lists" not in run.arguments:
                problems.append(f"line {run.line}: apt lists are not removed in the same layer")
    return problems


def pip_cache(dockerfile: Dockerfile) -> list[str]:
    """pip installs keep no download cache in a layer."""
    problems = []
    for stage in dockerfile.stages:
        for run in stage.of("RUN"):
            for command in re.split(r"&&|;", run.arguments):
                if re.search(r"\bpip3? (install|wheel)\b", command) and (
                    "--no-cache-dir" not in command
                ):
                    problems.append(f"line {run.line}: pip without --no-cache-dir")
    return problems


def _copy_sources(instruction: Instruction) -> list[str]:
    words = [w for w in shlex.split(instruction.arguments) if not w.startswith("--")]
    return [source.rstrip("/").removeprefix("./") for source in words[:-1]]


def copies_from_context(dockerfile: Dockerfile) -> list[str]:
    """Every path that a COPY takes from the build context."""
    return [
        source
        for stage in dockerfile.stages
        for copy in stage.of("COPY") + stage.of("ADD")
        if "--from=" not in copy.arguments
        for source in _copy_sources(copy)
    ]


def dependency_layer_order(dockerfile: Dockerfile, source_dirs: set[str]) -> list[str]:
    """In a stage that installs pinned dependencies, constraints.txt is copied and
    the dependencies installed before any source package is copied, so a code
    edit does not invalidate the dependency layer."""
    problems = []
    for stage in dockerfile.stages:
        pinned_installs = [
            run
            for run in stage.of("RUN")
            if re.search(r"pip3? install", run.arguments) and "constraint" in run.arguments
        ]
        if not pinned_installs:
            continue
        first_install = pinned_installs[0].line
        constraint_copies = [
            copy.line
            for copy in stage.of("COPY")
            if any(source.endswith("constraints.txt") for source in _copy_sources(copy))
        ]
        source_copies = [
            copy.line
            for copy in stage.of("COPY")
            if any(source.split("/")[0] in source_dirs for source in _copy_sources(copy))
        ]
        label = stage.name or stage.base
        if not constraint_copies:
            problems.append(f"stage {label}: installs with constraints it never copies")
        elif source_copies and min(source_copies) < min(constraint_copies):
            problems.append(f"stage {label}: sources are copied before constraints.txt")
        if source_copies and min(source_copies) < first_install:
            problems.append(f"stage {label}: sources are copied before dependencies install")
    return problems
