"""The README's configuration reference names every setting the code reads."""

from __future__ import annotations

import re

from shared.settings import Settings
from tests.paths import REPO_ROOT


def test_readme_lists_every_setting_and_no_other() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `(WHALES_[A-Z0-9_]+)` \|", readme, flags=re.MULTILINE))
    expected = {f"WHALES_{name.upper()}" for name in Settings.model_fields}

    assert documented == expected
