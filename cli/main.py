"""Entry point of the ``whales`` command.

Each command group lives in its own module and is imported only when the
command line is parsed, so ``whales api`` never imports model code.
"""

from __future__ import annotations

import importlib
import logging

import click

from shared.settings import get_settings

# name -> ("module:attribute" of a click command or group, one-line help)
_COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("cli.models:models", "Model bundles: pull, verify, info, make-test-bundle."),
    "predict": ("cli.offline:predict", "Identify one image offline (no services)."),
    "batch": ("cli.offline:batch", "Identify every image in a directory offline."),
    "verify": ("cli.offline:verify", "Run only the cetacean gate on one image."),
    "up": ("cli.up:up", "Run the whole stack on this machine in the foreground."),
    "api": ("cli.api:api", "Run the HTTP API (gunicorn, gthread workers)."),
    "worker": ("cli.services:worker", "Run a Celery worker with warm models."),
    "flower": ("cli.services:flower", "Run Flower (task monitor) behind basic auth."),
    "db": ("cli.db:db", "Database schema: upgrade, downgrade, current."),
    "report": ("cli.report:report", "Analyst summaries from the reporting views; drift."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = _COMMANDS.get(cmd_name)
        if entry is None:
            return None
        target = entry[0]
        module_name, attribute = target.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listing must not import the commands: some of them pull in torch.
        rows = [(name, help_text) for name, (_, help_text) in sorted(_COMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.version_option(package_name="whales-identification")
def cli() -> None:
    """Whale and dolphin photo-identification service."""
    logging.basicConfig(
        level=get_settings().log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
