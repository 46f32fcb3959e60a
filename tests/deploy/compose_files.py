"""Reading the Compose files as Docker Compose does, for the parts the tests check.

PyYAML parses the files; the two Compose merge tags (``!reset`` and
``!override``) get constructors, and :func:`merge` applies an override file
with Compose's rules: mappings merge, sequences append, ``command``,
``entrypoint`` and ``healthcheck.test`` are replaced, ``!reset`` removes and
``!override`` replaces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shared.settings import Settings

_REPLACED_KEYS = frozenset({"command", "entrypoint", "test"})
WHALES_NAME = re.compile(r"\bWHALES_[A-Z0-9_]+\b")
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


class Reset:
    """The value of a key tagged ``!reset``: the merge removes the key."""


@dataclass(frozen=True)
class Override:
    """The value of a key tagged ``!override``: the merge replaces, not merges."""

    value: Any


class ComposeLoader(yaml.SafeLoader):
    """A safe loader that knows Compose's merge tags."""


def _reset(loader: yaml.SafeLoader, node: yaml.Node) -> Reset:
    return Reset()


def _override(loader: yaml.SafeLoader, node: yaml.Node) -> Override:
    if isinstance(node, yaml.MappingNode):
        return Override(loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return Override(loader.construct_sequence(node, deep=True))
    return Override(loader.construct_scalar(node))


ComposeLoader.add_constructor("!reset", _reset)
ComposeLoader.add_constructor("!override", _override)


def load_compose(path: Path) -> dict[str, Any]:
    # ComposeLoader is a SafeLoader: it builds no Python objects but our two tags.
    document = yaml.load(path.read_text(), Loader=ComposeLoader)
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not a Compose mapping")
    return document


def _resolve(value: Any) -> Any:
    """Drop merge tags from a value that has nothing under it to merge with."""
    if isinstance(value, Override):
        return _resolve(value.value)
    if isinstance(value, dict):
        return {key: _resolve(item) for key, item in value.items() if not isinstance(item, Reset)}
    if isinstance(value, list):
        return [_resolve(item) for item in value if not isinstance(item, Reset)]
    return value


def merge(base: Any, override: Any, key: str = "") -> Any:
    """``override`` applied on top of ``base`` with Compose's merge rules."""
    if isinstance(override, Override):
        return _resolve(override.value)
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for name, value in override.items():
            if isinstance(value, Reset):
                merged.pop(name, None)
            elif name in merged:
                merged[name] = merge(merged[name], value, name)
            else:
                merged[name] = _resolve(value)
        return merged
    if isinstance(base, list) and isinstance(override, list) and key not in _REPLACED_KEYS:
        return base + [_resolve(item) for item in override if _resolve(item) not in base]
    return _resolve(override)


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's ``environment`` in mapping form, whichever form it was written in."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = (item.partition("=") for item in raw)
        return {name: (value if sep else None) for name, sep, value in pairs}
    return {name: (None if value is None else str(value)) for name, value in raw.items()}


def settings_variables() -> set[str]:
    """Every environment variable the settings module reads."""
    prefix = Settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in Settings.model_fields}


def field_name(variable: str) -> str:
    """The Settings field that ``variable`` sets."""
    prefix = Settings.model_config.get("env_prefix", "").upper()
    if not variable.startswith(prefix):
        raise ValueError(f"{variable} does not start with {prefix}")
    return variable[len(prefix) :].lower()


def is_interpolation(value: str) -> bool:
    """True when the whole value is one ``${NAME...}`` reference."""
    return INTERPOLATION.fullmatch(value) is not None
