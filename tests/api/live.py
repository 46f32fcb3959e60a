"""Serving an app over real HTTP in the tests: in a thread, or as `whales api`."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from flask import Flask
from werkzeug.serving import make_server

from tests.paths import REPO_ROOT
from tests.processes import free_port, stop_process_group


@contextlib.contextmanager
def served_in_thread(app: Flask) -> Iterator[str]:
    """The app on a loopback port, served by werkzeug in a thread."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited with {process.returncode}")
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(f"{url}/health", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not come up in {timeout} s")


@contextlib.contextmanager
def whales_api(
    env: dict[str, str], log_path: Path, *, workers: int, extra: tuple[str, ...] = ()
) -> Iterator[str]:
    """`whales api` as deployed (gunicorn, gthread) on a free port."""
    port = free_port()
    handle = log_path.open("ab")
    command = [sys.executable, "-m", "cli.main", "api", "--port", str(port)]
    command += ["--workers", str(workers), *extra]
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process)
        yield url
    finally:
        stop_process_group(process)
        handle.close()
