# ruff: noqa: E402  (sys.path is fixed before the imports; see below)
"""Queue benchmark: a batch job through real workers against the in-process pipeline.

    python bench/queue.py [--images 200] [--singles 20] [--tiny] [--mask]

In one run, on the same images and the same model bundle:

1. the in-process pipeline's images/second (``Pipeline.run`` in chunks, as a
   worker runs them, decode included);
2. the same images as a ZIP job through Redis, a real ``whales worker``
   process on the ``batch`` queue and Postgres: images/second from submission
   to the job's ``succeeded`` (expansion, blob reads, rows and counters included);
3. the latency of single-image tasks (with mask) on a separate interactive
   worker, idle and while a second batch job runs: p50 and p95.

Services: WHALES_DATABASE_URL / WHALES_BROKER_URL when set (a scratch database
is created and dropped on that server), else embedded Postgres and Redis in a
temporary directory. Bundle: WHALES_MODEL_DIR when it holds one, else a
random-weight bundle in the real formats (full size unless --tiny) that
accepts every image, so every photo goes through identification.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, and the file's
# name would shadow the standard library's ``queue`` (which Celery imports).
_BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _BENCH_DIR]

import argparse
import base64
import os
import platform
import statistics
import tempfile
import time
import uuid

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.scratch import percentile, scratch_broker, scratch_database
from shared.db.engine import Database
from shared.queue import create_celery_app, send_single
from shared.settings import Settings
from tests.paths import manifest
from tests.submit import numbered_copies, submit_archive, wait_for_job
from tests.workers import WorkerProcess, service_environment, start_worker
from tests.zips import build_zip


def bundle_dir(work: Path, *, tiny: bool) -> Path:
    configured = os.environ.get("WHALES_MODEL_DIR")
    if configured and (Path(configured) / "manifest.json").is_file():
        return Path(configured)
    from shared.inference.testbundle import make_test_bundle

    root = work / "bundle"
    make_test_bundle(root, tiny=tiny, gate_threshold=0.0, min_confidence=0.0)
    return root


def in_process_rate(settings: Settings, images: list[tuple[str, bytes]], *, mask: bool) -> float:
    from shared.inference.device import chunk_size
    from shared.inference.pipeline import Pipeline, RawImage

    with Pipeline.from_bundle(settings.models_path, settings) as pipeline:
        size = chunk_size(settings)
        pipeline.run([RawImage(*images[0])], with_mask=mask)  # warm-up, as a warm worker
        started = time.perf_counter()
        for start in range(0, len(images), size):
            chunk = [RawImage(name, data) for name, data in images[start : start + size]]
            pipeline.run(chunk, with_mask=mask)
        return len(images) / (time.perf_counter() - started)


def queued_rate(database: Database, settings: Settings, archive: bytes, count: int) -> float:
    started = time.perf_counter()
    job_id = submit_archive(database, settings, archive, broker_url=settings.broker_url)
    job = wait_for_job(database, job_id, timeout=3600)
    elapsed = time.perf_counter() - started
    if job.status != "succeeded" or job.processed != count:
        raise RuntimeError(f"benchmark job ended {job.status} with {job.processed}/{count}")
    return count / elapsed


def single_latencies(settings: Settings, photo: bytes, count: int) -> list[float]:
    app = create_celery_app(settings)
    encoded = base64.b64encode(photo).decode()
    latencies = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            answer = send_single(
                app, str(uuid.uuid4()), "single.jpg", with_mask=True, image_b64=encoded
            ).get(timeout=300)
            latencies.append(time.perf_counter() - started)
            if not answer["ok"]:
                raise RuntimeError(f"single task refused: {answer}")
    finally:
        app.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--singles", type=int, default=20)
    parser.add_argument("--tiny", action="store_true", help="tiny random bundle (smoke run)")
    parser.add_argument("--mask", action="store_true", help="batch jobs with masks too")
    arguments = parser.parse_args()

    photos = [photo.path for photo in manifest()]
    images = numbered_copies(photos, arguments.images)
    archive = build_zip(images)
    single_photo = next(p.path for p in manifest() if p.label == "cetacean").read_bytes()

    with tempfile.TemporaryDirectory(prefix="whales-bench-") as scratch:
        work = Path(scratch)
        with (
            scratch_database(os.environ.get("WHALES_DATABASE_URL"), work / "pg") as database_url,
            scratch_broker(os.environ.get("WHALES_BROKER_URL"), work / "redis") as broker_url,
        ):
            env = service_environment(
                database_url=database_url,
                broker_url=broker_url,
                bundle=bundle_dir(work, tiny=arguments.tiny),
                data_dir=work / "data",
                # The deployment's defaults, not the tests' small chunks.
                chunk_size=os.environ.get("WHALES_CHUNK_SIZE", ""),
                torch_threads=os.environ.get("WHALES_TORCH_THREADS", ""),
                decode_threads=os.environ.get("WHALES_DECODE_THREADS", ""),
                onnx_threads=os.environ.get("WHALES_ONNX_THREADS", ""),
                log_level="WARNING",
                # Production timeouts: a full-size chunk can take longer than
                # the tests' short visibility timeout.
                visibility_timeout_s="",
                stale_chunk_s="",
                janitor_interval_s="",
            )
            env = {key: value for key, value in env.items() if value != ""}
            os.environ.update(env)
            settings = Settings()
            database = Database(database_url)

            inline = in_process_rate(settings, images, mask=arguments.mask)
            print(f"in-process pipeline: {inline:.2f} images/s", flush=True)

            workers: list[WorkerProcess] = []
            try:
                workers.append(start_worker(env, work / "batch.log", queues="batch"))
                workers.append(start_worker(env, work / "interactive.log", queues="interactive"))
                queued = queued_rate(database, settings, archive, len(images))
                print(f"through the queue:   {queued:.2f} images/s", flush=True)

                idle = single_latencies(settings, single_photo, arguments.singles)
                job_id = submit_archive(database, settings, archive, broker_url=broker_url)
                busy = single_latencies(settings, single_photo, arguments.singles)
                loaded = wait_for_job(database, job_id, timeout=3600)
                finished_under_load = loaded.status == "succeeded"
            finally:
                for worker in workers:
                    worker.stop()
                database.dispose()

    cores = os.cpu_count()
    print()
    print(f"machine: {platform.machine()}, {cores} cores, Python {platform.python_version()}")
    print(f"images per job: {len(images)}, batch masks: {arguments.mask}")
    print(f"queue / in-process: {queued / inline:.2f} (target >= 0.85)")
    print(
        f"single task idle:     p50 {statistics.median(idle) * 1000:.0f} ms, "
        f"p95 {percentile(idle, 0.95) * 1000:.0f} ms"
    )
    print(
        f"single task in batch: p50 {statistics.median(busy) * 1000:.0f} ms, "
        f"p95 {percentile(busy, 0.95) * 1000:.0f} ms"
    )
    print(
        f"p95 in batch / idle: {percentile(busy, 0.95) / percentile(idle, 0.95):.2f} "
        f"(target <= 1.5); batch job under load finished: {finished_under_load}"
    )


if __name__ == "__main__":
    main()
