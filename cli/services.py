"""``whales worker`` and ``whales flower``: one component each."""

from __future__ import annotations

import os
import sys

import click

from shared.queue import QUEUES, create_celery_app
from shared.services import resolve_broker_url, resolve_database_url
from shared.settings import get_settings, reset_settings_cache


def export_service_urls() -> tuple[str, str]:
    """Resolve the database and broker (starting embedded ones if none are
    configured) and export them, so every child process uses the same ones."""
    settings = get_settings()
    database_url = resolve_database_url(settings)
    broker_url = resolve_broker_url(settings)
    os.environ["WHALES_DATABASE_URL"] = database_url
    os.environ["WHALES_BROKER_URL"] = broker_url
    reset_settings_cache()
    return database_url, broker_url


def _parse_queues(value: str) -> list[str]:
    queues = [q.strip() for q in value.split(",") if q.strip()]
    unknown = sorted(set(queues) - set(QUEUES))
    if not queues or unknown:
        raise click.BadParameter(f"queues must be among {', '.join(QUEUES)}; got {value!r}")
    return queues


@click.command()
@click.option(
    "--queues",
    "-Q",
    default=None,
    help="Comma-separated queues to consume (default WHALES_WORKER_QUEUES: interactive,batch).",
)
@click.option("--concurrency", "-c", type=int, default=None, help="Pool processes.")
@click.option(
    "--pool",
    type=click.Choice(["prefork", "solo", "threads"]),
    default="prefork",
    show_default=True,
    help="prefork isolates crashes: a dead pool process is replaced and its task requeued.",
)
@click.option("--name", "-n", default=None, help="Node name (default: <queues>@<host>).")
def worker(queues: str | None, concurrency: int | None, pool: str, name: str | None) -> None:
    """Run a Celery worker that keeps the models warm."""
    from shared.inference.bundle import BundleError, check_bundle_present

    settings = get_settings()
    try:
        check_bundle_present(settings.models_path)
    except BundleError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    chosen = _parse_queues(queues or settings.worker_queues)
    os.environ["WHALES_WORKER_QUEUES"] = ",".join(chosen)
    export_service_urls()
    from workers.main import app

    node = name or f"{'-'.join(chosen)}-{os.getpid()}@%h"
    app.worker_main(
        [
            "worker",
            "--queues", ",".join(chosen),
            "--concurrency", str(concurrency or get_settings().worker_concurrency),
            "--pool", pool,
            "--hostname", node,
            "--loglevel", get_settings().log_level,
            "--without-mingle",  # peers' state is in Postgres, not in Celery
            "--without-gossip",
        ]
    )  # fmt: skip


@click.command()
@click.option("--port", type=int, default=None, help="Port (default WHALES_FLOWER_PORT).")
@click.option(
    "--local",
    is_flag=True,
    default=False,
    help="Run without authentication, bound to 127.0.0.1 only (or WHALES_FLOWER_LOCAL=true).",
)
def flower(port: int | None, local: bool) -> None:
    """Run Flower on the same broker, behind basic auth."""
    settings = get_settings()
    local = local or settings.flower_local
    arguments = ["flower", f"--port={port or settings.flower_port}"]
    if settings.flower_user and settings.flower_password:
        arguments.append(f"--basic-auth={settings.flower_user}:{settings.flower_password}")
        arguments.append(f"--address={'127.0.0.1' if local else '0.0.0.0'}")  # noqa: S104
    elif local:
        arguments.append("--address=127.0.0.1")
    else:
        click.echo(
            "Flower needs credentials: set WHALES_FLOWER_USER and WHALES_FLOWER_PASSWORD, "
            "or pass --local to run it without authentication on 127.0.0.1 only.",
            err=True,
        )
        sys.exit(2)
    _, broker_url = export_service_urls()
    # Task arguments stay readable (ids and chunk indexes); single images travel
    # with an argsrepr that names their size instead of their bytes.
    app = create_celery_app(get_settings(), broker_url)
    app.start(argv=arguments)
