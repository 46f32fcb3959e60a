"""API benchmark: what the HTTP front door costs, and what a 1 GB upload costs it.

    python bench/api.py [--requests 40] [--upload-mb 1024] [--mask]

1. Single-image latency through the API (``POST /v1/predict-single``: HTTP,
   upload checks, the interactive queue, a warm worker, the stored row) against
   the in-process pipeline on the same image in the same run; the difference
   is the API's overhead. Calls alternate between the two so that load from
   elsewhere on the machine affects both alike.
2. Peak RSS of the API's processes while a ZIP of ``--upload-mb`` MB is
   uploaded, raw and as multipart (it must stay flat: uploads stream to disk).

It runs ``whales api`` (one gunicorn process) and ``whales worker`` as child
processes on WHALES_DATABASE_URL / WHALES_BROKER_URL when set (a fresh
database is created on that server and dropped afterwards), else on embedded
Postgres and Redis in a temporary directory; WHALES_MODEL_DIR names the model
bundle, else a tiny random-weight bundle is built.

Where the single-image overhead goes on a 2-core machine (timestamps taken
in each process, p50 of 300 calls, while the host ran slow): HTTP into the
app ~0.8 ms, the rate limiter's Redis call ~0.6, the multipart upload ~0.8,
keeping it and subscribing ~0.3, sending the task ~1.0, broker to worker to
pool process ~1.4, the start count and the row's connection ~0.9, the stored
row ~1.8, the result back to the API ~1.2, the answer out ~1.1. Each is
mostly one process waking another: after a few idle milliseconds a round
trip on this machine costs ~0.5 ms instead of ~0.15. Taken off the path so
far: building the row's INSERT per call and SQLAlchemy's execution layer for
it (the statement is compiled once and run on the driver's connection),
BEGIN/COMMIT, the STARTED state, Celery's own result subscription per send,
Celery's read of the result key before writing it (one script instead), the
task-received event's publish before the pool process gets the task (events
are flushed while it runs), waiting for the start count on a first delivery,
the result's deletion and the lease release (after the answer now), the
rate-limit window for the response headers (read while the worker
computes), per-request JSON schemas of the parameter models, werkzeug's
per-boundary regular expressions (python-multipart parses uploads), and
hashing uploads nobody read the hash of. The overhead scales with the
machine's speed; see the README for measured runs.
"""

# ruff: noqa: E402  (sys.path is fixed before the other imports, see below)
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder would come first on sys.path, where
# bench/api.py and bench/queue.py shadow the api package and the standard
# library's queue module: the repository root takes its place.
REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(REPO_ROOT)

import argparse
import contextlib
import http.client
import os
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
import zipfile

import psutil

from bench.scratch import percentile, scratch_broker, scratch_database
from shared.settings import Settings
from tests.paths import manifest
from tests.processes import free_port, stop_process_group


def _spawn(arguments: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", *arguments],
        cwd=REPO_ROOT,
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_ready(port: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
            conn.request("GET", "/ready")
            if conn.getresponse().status == 200:
                return
        time.sleep(0.5)
    raise TimeoutError("the API did not become ready (worker still loading?)")


def _multipart_head(boundary: str, field: str, name: str, content_type: str) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
        f'filename="{name}"\r\nContent-Type: {content_type}\r\n\r\n'
    ).encode()


# --- 1. latency --------------------------------------------------------------------------


def measure_latency(
    port: int, settings: Settings, requests: int, with_mask: bool
) -> dict[str, list[float]]:
    from shared.inference.pipeline import Pipeline, RawImage

    photo = next(row.path for row in manifest() if row.label == "cetacean")
    data = photo.read_bytes()
    pipeline = Pipeline.from_bundle(settings.models_path, settings)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    url = f"/v1/predict-single?mask={'true' if with_mask else 'false'}"

    def through_api() -> float:
        # A fresh boundary per request, as HTTP clients make them (the server
        # cannot reuse the matcher it built for the previous one).
        boundary = f"whales-bench-{uuid.uuid4().hex}"
        head = _multipart_head(boundary, "file", photo.name, "image/jpeg")
        body = head + data + f"\r\n--{boundary}--\r\n".encode()
        started = time.perf_counter()
        conn.request(
            "POST", url, body=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )  # fmt: skip
        response = conn.getresponse()
        payload = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200:
            raise RuntimeError(f"API answered {response.status}: {payload[:300]!r}")
        return elapsed

    def in_process() -> float:
        started = time.perf_counter()
        pipeline.run([RawImage(name=photo.name, data=data)], with_mask=with_mask)
        return (time.perf_counter() - started) * 1000

    for _ in range(5):  # warm both paths (connections, allocators, caches)
        through_api()
        in_process()
    timings: dict[str, list[float]] = {"api": [], "pipeline": []}
    for _ in range(requests):
        timings["api"].append(through_api())
        timings["pipeline"].append(in_process())
    conn.close()
    return timings


# --- 2. upload memory ----------------------------------------------------------------------


def build_big_zip(path: Path, megabytes: int) -> None:
    """Incompressible, not-image entries (skipped by the worker, so the job is quick)."""
    block = os.urandom(8 * 1024 * 1024)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for index in range(max(1, megabytes // 64)):
            with archive.open(f"sensor_{index:04d}.bin", "w", force_zip64=True) as entry:
                for _ in range(8):
                    entry.write(block)


class RssSampler:
    """Samples the RSS of a process tree every 20 ms."""

    def __init__(self, root_pid: int) -> None:
        self.root = psutil.Process(root_pid)
        self.peak_per_process: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for process in [self.root, *self.root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    rss = process.memory_info().rss
                    self.peak_per_process[process.pid] = max(
                        rss, self.peak_per_process.get(process.pid, 0)
                    )

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def upload(port: int, archive: Path, multipart: bool) -> tuple[int, float]:
    size = archive.stat().st_size
    boundary = "whales-bench-upload"
    head = _multipart_head(boundary, "archive", "big.zip", "application/zip") if multipart else b""
    tail = f"\r\n--{boundary}--\r\n".encode() if multipart else b""
    content_type = f"multipart/form-data; boundary={boundary}" if multipart else "application/zip"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    conn.putrequest("POST", "/v1/jobs")
    conn.putheader("Content-Type", content_type)
    conn.putheader("Content-Length", str(len(head) + size + len(tail)))
    conn.endheaders()
    conn.send(head)
    with archive.open("rb") as source:
        while block := source.read(1 << 20):
            conn.send(block)
    conn.send(tail)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, time.perf_counter() - started


def rss_mb(value: int) -> float:
    return value / (1024 * 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--upload-mb", type=int, default=1024)
    parser.add_argument("--mask", action="store_true", help="Ask for masks (slower).")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="whales-bench-api-") as temporary:
        work = Path(temporary)
        base = Settings()
        env = {
            "WHALES_DATA_DIR": str(work / "data"),
            "WHALES_TORCH_THREADS": os.environ.get("WHALES_TORCH_THREADS", "1"),
            "WHALES_LOG_LEVEL": "WARNING",
            "HF_HUB_OFFLINE": "1",
            # The limiter stays on (its Redis calls are part of the overhead); only
            # its ceiling is raised so that a long run is not cut off at 60 calls.
            "WHALES_RATE_LIMIT_PREDICT": "100000 per 60 seconds",
        }
        if base.model_dir is None or not base.models_path.exists():
            from shared.inference.testbundle import make_test_bundle

            make_test_bundle(work / "bundle", tiny=True, gate_threshold=0.0, min_confidence=0.0)
            env["WHALES_MODEL_DIR"] = str(work / "bundle")
        with (
            scratch_broker(base.broker_url, work / "redis") as broker_url,
            scratch_database(base.database_url, work / "pg") as database_url,
        ):
            env["WHALES_BROKER_URL"] = broker_url
            env["WHALES_DATABASE_URL"] = database_url
            os.environ.update(env)
            settings = Settings()
            port = free_port()
            worker = _spawn(["worker", "--queues", "interactive,batch"], env, work / "w.log")
            api = _spawn(["api", "--port", str(port), "--workers", "1"], env, work / "a.log")
            try:
                _wait_ready(port)
                api_baseline = {
                    p.pid: p.memory_info().rss
                    for p in [psutil.Process(api.pid), *psutil.Process(api.pid).children()]
                }
                timings = measure_latency(port, settings, options.requests, options.mask)
                archive = work / "big.zip"
                build_big_zip(archive, options.upload_mb)
                uploads = []
                for multipart in (False, True):
                    with RssSampler(api.pid) as sampler:
                        status, seconds = upload(port, archive, multipart)
                    uploads.append((multipart, status, seconds, sampler.peak_per_process))
            finally:
                stop_process_group(api)
                stop_process_group(worker)
            report(options, timings, archive.stat().st_size, api_baseline, uploads)


def report(
    options: argparse.Namespace,
    timings: dict[str, list[float]],
    archive_bytes: int,
    baseline: dict[int, int],
    uploads: list[tuple[bool, int, float, dict[int, int]]],
) -> None:
    api_p50, api_p95 = percentile(timings["api"], 0.5), percentile(timings["api"], 0.95)
    pipe_p50 = percentile(timings["pipeline"], 0.5)
    pipe_p95 = percentile(timings["pipeline"], 0.95)
    overheads = [a - p for a, p in zip(timings["api"], timings["pipeline"], strict=True)]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, mask={options.mask}")
    print(f"\nsingle image, {options.requests} calls each (ms)")
    print(f"  {'':28}{'p50':>9}{'p95':>9}")
    print(f"  {'API POST /v1/predict-single':28}{api_p50:9.1f}{api_p95:9.1f}")
    print(f"  {'in-process pipeline':28}{pipe_p50:9.1f}{pipe_p95:9.1f}")
    print(
        f"  {'overhead (API - pipeline)':28}{api_p50 - pipe_p50:9.1f}{api_p95 - pipe_p95:9.1f}"
        f"   median of paired differences: {statistics.median(overheads):.1f} ms"
        f"   (target < 15 ms at p50)"
    )
    print(f"\nupload of a {archive_bytes / 1e9:.2f} GB ZIP to POST /v1/jobs")
    before = rss_mb(max(baseline.values()))
    print(f"  API process RSS before: {before:.0f} MB (largest process of the API)")
    for multipart, status, seconds, peaks in uploads:
        peak = rss_mb(max(peaks.values()))
        kind = "multipart" if multipart else "raw body "
        print(
            f"  {kind}: HTTP {status} in {seconds:.1f} s "
            f"({archive_bytes / seconds / 1e6:.0f} MB/s), peak RSS {peak:.0f} MB "
            f"(+{peak - before:.0f} MB; target flat, < 200 MB)"
        )


if __name__ == "__main__":
    main()
