"""``whales db`` against a fresh database."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from click.testing import CliRunner, Result

from cli.main import cli
from shared.db.migrate import current_revision
from shared.settings import reset_settings_cache


@pytest.fixture
def fresh_url(make_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = make_database()
    monkeypatch.setenv("WHALES_DATABASE_URL", url)
    reset_settings_cache()
    yield url
    monkeypatch.undo()
    reset_settings_cache()


def whales(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_upgrade_downgrade_and_current(fresh_url: str) -> None:
    result = whales("db", "current")
    assert result.exit_code == 0
    assert result.output.strip().endswith(": none (no schema)")

    result = whales("db", "upgrade")
    assert result.exit_code == 0
    assert result.output.strip().endswith(": 0003 (head)")
    assert current_revision(fresh_url) == "0003"

    result = whales("db", "downgrade")  # -1 by default
    assert result.exit_code == 0
    assert result.output.strip().endswith(": 0002 (head is 0003)")
    assert current_revision(fresh_url) == "0002"

    assert whales("db", "upgrade", "head").exit_code == 0
    result = whales("db", "downgrade", "base")
    assert result.exit_code == 0
    assert current_revision(fresh_url) is None

    assert whales("db", "upgrade", "0001").exit_code == 0
    assert whales("db", "current").output.strip().endswith(": 0001 (head is 0003)")


def test_an_unknown_revision_is_a_clean_error(fresh_url: str) -> None:
    result = whales("db", "upgrade", "no-such-revision")
    assert result.exit_code == 1
    assert "no-such-revision" in result.output
    assert current_revision(fresh_url) is None


def test_the_password_is_not_printed(fresh_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.engine import make_url

    with_password = (
        make_url(fresh_url).set(password="s3cret-pw").render_as_string(hide_password=False)
    )
    # Trust authentication ignores the password; the output must not show it.
    monkeypatch.setenv("WHALES_DATABASE_URL", with_password)
    reset_settings_cache()
    result = whales("db", "current")
    assert result.exit_code == 0
    assert "s3cret-pw" not in result.output
    assert "***" in result.output
