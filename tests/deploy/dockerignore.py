"""Which paths of the build context a ``.dockerignore`` leaves out.

The rules Docker follows: patterns are relative to the context root, ``*``
and ``?`` stay inside one path segment, ``**`` spans any number of them, a
pattern that matches a directory leaves out everything under it, and the
last matching pattern wins, so ``!pattern`` takes a path back in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pattern:
    regex: re.Pattern[str]
    include: bool
    text: str


def _to_regex(pattern: str) -> re.Pattern[str]:
    out = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            out.append(".*")
            index += 2
        elif pattern[index] == "*":
            out.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            out.append("[^/]")
            index += 1
        else:
            out.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(out))


def read_patterns(path: Path) -> list[Pattern]:
    patterns = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        text = line.removeprefix("!").strip().strip("/")
        patterns.append(Pattern(_to_regex(text), include, line))
    return patterns


def excluded(patterns: list[Pattern], path: str) -> bool:
    """True when a file at ``path`` (relative, with /) stays out of the context."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: length + 1]) for length in range(len(parts))]
    verdict = False
    for pattern in patterns:
        if any(pattern.regex.fullmatch(prefix) for prefix in prefixes):
            verdict = not pattern.include
    return verdict
