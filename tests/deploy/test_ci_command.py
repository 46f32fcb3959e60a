"""The README's test command is the one CI runs.

.ci/run reads the command from README.md with an awk rule (the first line
starting with ``./run`` after the ``<!-- test command -->`` marker) and evals
it. These tests take that rule from .ci/run itself, run it on the README, and
compare the result with the command a reader sees in the README's code block.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.paths import REPO_ROOT

MARKER = "<!-- test command -->"
CI_SCRIPT = REPO_ROOT / ".ci" / "run"
README = REPO_ROOT / "README.md"
# test_command="$(awk '<program>' README.md)"
_AWK_LINE = re.compile(r"""^(\w+)="\$\(awk '([^']+)' README\.md\)"$""", re.MULTILINE)


def readme_fenced_command(text: str) -> str:
    """The first ``./run`` line inside the first code block after the marker."""
    _, found, after = text.partition(MARKER)
    if not found:
        raise AssertionError(f"README.md has no {MARKER} marker")
    block = re.search(r"^```[\w-]*\n(.*?)^```", after, flags=re.MULTILINE | re.DOTALL)
    if block is None:
        raise AssertionError("no code block follows the test-command marker")
    commands = [line for line in block.group(1).splitlines() if line.startswith("./run")]
    if not commands:
        raise AssertionError("the code block after the marker holds no ./run command")
    return commands[0]


def ci_awk_rule(script: str) -> tuple[str, str]:
    """(variable, awk program) of the line in .ci/run that reads the README."""
    match = _AWK_LINE.search(script)
    if match is None:
        raise AssertionError(".ci/run does not read the test command from README.md with awk")
    return match.group(1), match.group(2)


def test_readme_has_the_marker_and_a_run_command_in_a_code_block() -> None:
    command = readme_fenced_command(README.read_text())
    assert re.fullmatch(r"\./run tests( .*)?", command), command


def test_ci_evals_what_its_awk_rule_extracts() -> None:
    variable, program = ci_awk_rule(CI_SCRIPT.read_text())
    assert MARKER in program, "the awk rule looks for another marker"
    lines = CI_SCRIPT.read_text().splitlines()
    assert f'eval "${variable}"' in lines, f".ci/run does not eval ${variable}"
    assert lines.index(f'eval "${variable}"') > next(
        index for index, line in enumerate(lines) if line.startswith(f"{variable}=")
    )


def test_the_awk_rule_of_ci_finds_the_readme_command() -> None:
    awk = shutil.which("awk")
    if awk is None:
        pytest.skip("no awk on this machine")
    _, program = ci_awk_rule(CI_SCRIPT.read_text())
    extracted = subprocess.run(
        [awk, program, "README.md"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert extracted == readme_fenced_command(README.read_text())


def test_the_awk_rule_ignores_run_lines_before_the_marker(tmp_path: Path) -> None:
    awk = shutil.which("awk")
    if awk is None:
        pytest.skip("no awk on this machine")
    _, program = ci_awk_rule(CI_SCRIPT.read_text())
    readme = (
        "```bash\n./run up\n```\n\n"
        f"{MARKER}\nRun the tests:\n\n```bash\n./run tests -x\n./run tests -k other\n```\n"
    )
    (tmp_path / "README.md").write_text(readme)
    extracted = subprocess.run(
        [awk, program, "README.md"], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert extracted == "./run tests -x" == readme_fenced_command(readme)
