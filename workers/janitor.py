"""Re-sends work whose message was lost, so every job ends.

Postgres is the truth about jobs; Redis only carries messages, and a Redis
restarted without persistence (or flushed) forgets them. A thread in each
worker's parent process looks, every few seconds, for chunks still pending
and batch jobs still queued that show no sign of life. Such work is re-sent
only when its queue is drained and its task is not held unacknowledged by a
worker (running, prefetched, or waiting out a crashed worker's visibility
timeout): a message merely waiting its turn is never duplicated. A Postgres
advisory lock makes one janitor act at a time across all workers.
"""

from __future__ import annotations

import json
import logging
import threading

import redis
from celery import Celery
from sqlalchemy import func, select

from shared.db.engine import Database, get_database
from shared.jobs import claim_stale_chunks, claim_stale_queued_jobs
from shared.queue import (
    QUEUE_BATCH,
    chunk_task_id,
    create_celery_app,
    expand_task_id,
    send_chunk,
    send_expand,
)
from shared.services import resolve_broker_url, to_redis_py_url
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)

ADVISORY_LOCK_KEY = 0x5748414C45  # "WHALE"
UNACKED_KEY = "unacked"  # kombu's hash of delivered, unacknowledged messages


def in_flight_task_ids(client: redis.Redis) -> set[str]:
    """Ids of tasks delivered to some worker and not yet acknowledged."""
    ids = set()
    for raw in client.hvals(UNACKED_KEY):
        try:
            message = json.loads(raw)[0]
            ids.add(str(message["headers"]["id"]))
        except (ValueError, KeyError, IndexError, TypeError):
            continue
    return ids


class Janitor:
    def __init__(self, settings: Settings, database: Database, client: redis.Redis, app: Celery):
        self.settings = settings
        self.database = database
        self.redis = client
        self.app = app
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self) -> tuple[int, int]:
        """One pass; returns (chunks re-sent, jobs re-expanded)."""
        if self.redis.llen(QUEUE_BATCH) > 0:
            return 0, 0
        in_flight = in_flight_task_ids(self.redis)
        with self.database.session() as session:
            if not session.execute(
                select(func.pg_try_advisory_xact_lock(ADVISORY_LOCK_KEY))
            ).scalar():
                return 0, 0
            stale = self.settings.stale_chunk_s
            chunks = claim_stale_chunks(session, older_than_s=stale)
            jobs = claim_stale_queued_jobs(session, older_than_s=stale)
        chunks = [(j, i) for j, i in chunks if chunk_task_id(str(j), i) not in in_flight]
        jobs = [j for j in jobs if expand_task_id(str(j)) not in in_flight]
        for job_id, index in chunks:
            log.warning("job %s: chunk %d lost its message; sending it again", job_id, index)
            send_chunk(self.app, str(job_id), index)
        for job_id in jobs:
            log.warning("job %s: expansion lost its message; sending it again", job_id)
            send_expand(self.app, str(job_id))
        return len(chunks), len(jobs)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.janitor_interval_s):
            try:
                self.sweep()
            except Exception as exc:  # the database or broker may be down; try later
                log.warning("janitor pass failed: %s", exc)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="janitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


_janitor: Janitor | None = None


def start_janitor() -> None:
    global _janitor
    if _janitor is not None:
        return
    settings = get_settings()
    broker = resolve_broker_url(settings)
    _janitor = Janitor(
        settings,
        get_database(application_name="whales-janitor"),
        redis.Redis.from_url(to_redis_py_url(broker), socket_timeout=10),
        create_celery_app(settings, broker),
    )
    _janitor.start()


def stop_janitor() -> None:
    global _janitor
    if _janitor is not None:
        _janitor.stop()
        _janitor = None
