"""``whales api``: the HTTP API under gunicorn, gthread workers.

gthread because a request spends its time waiting (on a worker's answer, on a
job, on an upload), not computing: threads wait cheaply, and gunicorn's
worker heartbeat runs apart from them, so a long wait never gets a worker
killed. Several processes share nothing but Redis, Postgres and the metrics
directory.

Prometheus counters of several processes are summed through
``PROMETHEUS_MULTIPROC_DIR``: this command makes it (emptied at start, so a
restart begins at zero like any counter reset) before anything imports
prometheus_client, and tells the library when a worker process exits.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import click

from shared.settings import get_settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client at import
DEFAULT_THREADS = 8


def prepare_metrics_dir(directory: Path) -> Path:
    """An empty directory for this run's per-process metric files."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def _child_exit(server: Any, worker: Any) -> None:
    # A dead worker's live gauges must not linger in the sums.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def gunicorn_options(
    host: str, port: int, workers: int, threads: int, max_requests: int = 0
) -> dict[str, Any]:
    settings = get_settings()
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        # gthread workers heartbeat from their main thread, so this bounds a
        # stuck process, not a request; a synchronous batch may wait longer.
        "timeout": 60,
        "graceful_timeout": 30,
        "keepalive": 5,
        "loglevel": settings.log_level.lower(),
        "accesslog": "-",
        "errorlog": "-",
        "child_exit": _child_exit,
        # Recycling processes bounds slow leaks; jitter keeps them from
        # restarting all at once.
        "max_requests": max_requests,
        "max_requests_jitter": max_requests // 10,
        "proc_name": "whales-api",
        # gunicorn's control socket has one default path per user: a second
        # API on the machine would take it over. Nothing here uses it.
        "control_socket_disable": True,
        # Uploads stream to disk; request lines and headers stay small.
        "limit_request_line": 8190,
        "limit_request_fields": 100,
    }


def run_gunicorn(options: dict[str, Any], started_at: float) -> None:
    from gunicorn.app.base import BaseApplication

    class WhalesApi(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            # Made in each worker after the fork (no preload): no connection or
            # pool is ever shared between processes.
            from api.app import create_app
            from api.metrics import STARTED_AT_CONFIG

            app = create_app()
            app.config[STARTED_AT_CONFIG] = started_at
            app.extensions["whales_metrics"].collector.started_at = started_at
            return app

    WhalesApi().run()


@click.command()
@click.option("--host", default=None, help="Address to bind (default WHALES_API_HOST).")
@click.option("--port", type=int, default=None, help="Port (default WHALES_API_PORT).")
@click.option("--workers", type=int, default=None, help="Processes (default WHALES_API_WORKERS).")
@click.option(
    "--threads",
    type=int,
    default=DEFAULT_THREADS,
    show_default=True,
    help="Request threads per process.",
)
@click.option(
    "--max-requests",
    type=int,
    default=0,
    show_default=True,
    help="Restart a process after this many requests (0: never).",
)
def api(
    host: str | None, port: int | None, workers: int | None, threads: int, max_requests: int
) -> None:
    """Run the HTTP API (gunicorn, gthread workers)."""
    from cli.services import export_service_urls

    started_at = time.time()
    # Resolve embedded services once, here, so every worker uses the same ones.
    export_service_urls()
    settings = get_settings()
    options = gunicorn_options(
        host or settings.api_host,
        port or settings.api_port,
        workers or settings.api_workers,
        threads,
        max_requests,
    )
    configured = os.environ.get(MULTIPROC_ENV)
    port_used = options["bind"].rsplit(":", 1)[-1]
    metrics_dir = Path(configured or settings.data_dir / "run" / f"api-metrics-{port_used}")
    prepare_metrics_dir(metrics_dir)
    click.echo(
        f"API on http://{options['bind']} ({options['workers']} processes x {threads} threads)"
    )
    master = os.getpid()
    try:
        run_gunicorn(options, started_at)
    finally:
        # gunicorn's workers are forks that leave through here too: only the
        # master, on its way out, removes the directory.
        if not configured and os.getpid() == master:
            shutil.rmtree(metrics_dir, ignore_errors=True)
