"""``whales up``: the whole stack on one machine, in the foreground.

Postgres and Redis are the configured ones, or embedded ones kept in the data
directory (so a second ``whales up`` finds the same history). Then the
migrations run, and the API, an interactive worker, a batch worker and Flower
start as child processes. Ctrl-C or SIGTERM stops every child, in order, and
leaves nothing running.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import click

from shared.settings import Settings, get_settings, reset_settings_cache

READY_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 20.0


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]

    def terminate(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def wait_or_kill(self, deadline: float) -> None:
        try:
            self.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        # Pool processes or gunicorn workers left in the group go too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


@dataclass
class Stack:
    settings: Settings
    log_dir: Path
    children: list[Child] = field(default_factory=list)
    stop_embedded_postgres: bool = False
    stopping: bool = False

    def spawn(self, name: str, *arguments: str, env: dict[str, str] | None = None) -> Child:
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", *arguments],
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group: Ctrl-C reaches only this supervisor, which
            # then stops the children in order.
            start_new_session=True,
        )
        child = Child(name, process)
        self.children.append(child)
        return child

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        click.echo("stopping…")
        # The API first (no new work), then workers and Flower, then Redis last.
        order = sorted(self.children, key=lambda c: (c.name == "redis", c.name != "api"))
        for child in order:
            if child.name != "redis":
                child.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in order:
            if child.name != "redis":
                child.wait_or_kill(deadline)
        for child in order:
            if child.name == "redis":
                child.terminate()
                child.wait_or_kill(time.monotonic() + STOP_TIMEOUT_S)
        if self.stop_embedded_postgres:
            from shared.services.embedded_postgres import stop_embedded_postgres

            stop_embedded_postgres(self.settings.data_dir)
        click.echo("stopped.")


def _flower_credentials(settings: Settings) -> tuple[str, str]:
    """Configured credentials, or ones made once and kept in the data dir."""
    if settings.flower_user and settings.flower_password:
        return settings.flower_user, settings.flower_password
    path = settings.data_dir / "flower-credentials"
    if not path.exists():
        path.write_text(f"admin:{secrets.token_urlsafe(18)}\n")
        path.chmod(0o600)
    user, _, password = path.read_text().strip().partition(":")
    return user, password


def _start_redis(stack: Stack) -> str:
    """The configured broker, or an embedded Redis run as a child process."""
    settings = stack.settings
    if settings.broker_url:
        return settings.broker_url
    from shared.services import embedded_redis

    directory = embedded_redis.redis_dir(settings.data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    sock = embedded_redis.socket_file(settings.data_dir)
    if embedded_redis.answers(sock):
        raise click.ClickException(
            f"an embedded Redis already runs on {sock}: is another `whales up` "
            "using this data directory?"
        )
    sock.unlink(missing_ok=True)
    command = embedded_redis.server_command(directory, sock=sock, daemonize=False)
    process = subprocess.Popen(command, start_new_session=True)
    stack.children.append(Child("redis", process))
    deadline = time.monotonic() + 10
    while not embedded_redis.answers(sock):
        if process.poll() is not None or time.monotonic() > deadline:
            raise click.ClickException(f"embedded Redis did not start; see {directory}/redis.log")
        time.sleep(0.05)
    return embedded_redis.broker_url(settings.data_dir)


def _start_postgres(stack: Stack) -> str:
    settings = stack.settings
    if settings.database_url:
        return settings.database_url
    from shared.services.embedded_postgres import ensure_embedded_postgres

    stack.stop_embedded_postgres = True
    return ensure_embedded_postgres(settings.data_dir)


def _wait_ready(stack: Stack, url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        for child in stack.children:
            if child.process.poll() is not None:
                raise click.ClickException(
                    f"{child.name} exited with code {child.process.returncode}; "
                    f"see {stack.log_dir / (child.name + '.log')}"
                )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (our own URL)
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise click.ClickException(f"the stack was not ready after {READY_TIMEOUT_S:.0f} s")


def _origin(configured: str | None, variable: str) -> str:
    return variable if configured else "embedded, kept in the data dir"


def _stop_on_signals() -> None:
    """SIGTERM behaves like Ctrl-C: unwind into the orderly stop."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


@click.command()
def up() -> None:
    """Run Postgres, Redis, migrations, the API, workers and Flower in the foreground."""
    settings = get_settings()
    from shared.inference.bundle import BundleError, check_bundle_present

    try:
        check_bundle_present(settings.models_path)
    except BundleError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    stack = Stack(settings, log_dir)
    _stop_on_signals()
    try:
        broker_url = _start_redis(stack)
        database_url = _start_postgres(stack)
        os.environ.update(WHALES_DATABASE_URL=database_url, WHALES_BROKER_URL=broker_url)
        user, password = _flower_credentials(settings)
        os.environ.update(WHALES_FLOWER_USER=user, WHALES_FLOWER_PASSWORD=password)
        reset_settings_cache()

        from shared.db.migrate import upgrade

        click.echo("migrating the database…")
        upgrade(database_url)

        stack.spawn("api", "api")
        stack.spawn(
            "worker-interactive", "worker", "--queues", "interactive", "--name", "interactive@%h"
        )
        stack.spawn("worker-batch", "worker", "--queues", "batch", "--name", "batch@%h")
        stack.spawn("flower", "flower")

        host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::") else settings.api_host  # noqa: S104
        api_url = f"http://{host}:{settings.api_port}"
        click.echo("waiting for the API and a worker with warm models…")
        _wait_ready(stack, f"{api_url}/ready")
        click.echo(
            "\n".join(
                [
                    "",
                    "whales is up:",
                    f"  API       {api_url}",
                    f"  API docs  {api_url}/docs   (ReDoc: {api_url}/redoc)",
                    f"  Flower    http://127.0.0.1:{settings.flower_port}   "
                    f"(user {user}, password {password})",
                    f"  data      {settings.data_dir}   (logs in {log_dir})",
                    f"  database  {_origin(settings.database_url, 'WHALES_DATABASE_URL')}",
                    f"  broker    {_origin(settings.broker_url, 'WHALES_BROKER_URL')}",
                    f"  models    {settings.models_path}",
                    "Press Ctrl-C to stop.",
                ]
            )
        )
        while True:
            for child in stack.children:
                if child.process.poll() is not None:
                    raise click.ClickException(
                        f"{child.name} exited with code {child.process.returncode}; "
                        f"see {log_dir / (child.name + '.log')}"
                    )
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
