"""``/metrics``: Prometheus text for the API, the workers' outcomes and the queues.

What is counted where:

- HTTP requests, errors, latency and refused uploads are counted by the API
  process that answered. Under gunicorn's several workers they live in
  prometheus_client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``, which
  ``whales api`` creates and empties), so any worker's ``/metrics`` reports the
  sum of all; without that variable a registry of the app's own is used.
- Predictions and rejections are counted by the workers in Redis
  (``shared.counters``) and read at scrape time, as are queue depths (``LLEN``
  of the Celery queues); jobs by status are read from Postgres.

Names follow the EcoMarineAI seed where it has them: ``requests_total``,
``errors_total``, ``predictions_total``, ``rejections_total``,
``rejections_by_reason``, ``uptime_seconds``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from api.context import ApiServices
from shared.counters import read_counters
from shared.db.models import Job
from shared.queue import QUEUES
from shared.schemas import REJECTION_REASONS

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STARTED_AT_CONFIG = "WHALES_STARTED_AT"
_JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
# kombu's Redis transport keeps a list per priority step; step 0 is the bare name.
_PRIORITY_STEPS = (0, 3, 6, 9)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_NOT_INPUT_REJECTIONS = frozenset({404, 405, 429})


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def queue_keys(queue: str) -> list[str]:
    return [queue if step == 0 else f"{queue}\x06\x16{step}" for step in _PRIORITY_STEPS]


class ServiceCollector(Collector):
    """Numbers read at scrape time from Redis and Postgres."""

    def __init__(self, services: ApiServices, started_at: float) -> None:
        self.services = services
        self.started_at = started_at

    def collect(self) -> Iterator[Metric]:
        uptime = GaugeMetricFamily("uptime_seconds", "Seconds since the API started.")
        uptime.add_metric([], time.time() - self.started_at)
        yield uptime
        up = GaugeMetricFamily(
            "metrics_source_up", "Whether a source of these metrics answered.", labels=["source"]
        )
        yield from self._from_redis(up)
        yield from self._from_database(up)
        yield up

    def _from_redis(self, up: GaugeMetricFamily) -> Iterator[Metric]:
        client = self.services.redis
        try:
            totals, by_reason = read_counters(client)
            pipe = client.pipeline(transaction=False)
            for queue in QUEUES:
                for key in queue_keys(queue):
                    pipe.llen(key)
            lengths = pipe.execute()
        except Exception as exc:  # a scrape reports what it can
            log.warning("metrics: Redis unavailable: %s", exc)
            up.add_metric(["redis"], 0)
            return
        up.add_metric(["redis"], 1)
        for name, doc in (
            ("predictions", "Images processed by the workers (stored detections)."),
            ("rejections", "Processed images rejected by the gate or for low confidence."),
            ("failed", "Images that could not be processed at all."),
        ):
            family = CounterMetricFamily(name, doc)
            family.add_metric([], totals.get(f"{name}_total", 0))
            yield family
        reasons = GaugeMetricFamily(
            "rejections_by_reason",
            "Rejected images by rejection_reason (a running count kept in Redis).",
            labels=["reason"],
        )
        for reason in sorted(set(REJECTION_REASONS) | set(by_reason)):
            reasons.add_metric([reason], by_reason.get(reason, 0))
        yield reasons
        depth = GaugeMetricFamily(
            "queue_depth", "Messages waiting in each Celery queue.", labels=["queue"]
        )
        steps = len(_PRIORITY_STEPS)
        for index, queue in enumerate(QUEUES):
            depth.add_metric([queue], sum(lengths[index * steps : (index + 1) * steps]))
        yield depth

    def _from_database(self, up: GaugeMetricFamily) -> Iterator[Metric]:
        try:
            with self.services.session() as session:
                rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        except Exception as exc:
            log.warning("metrics: database unavailable: %s", exc)
            up.add_metric(["database"], 0)
            return
        up.add_metric(["database"], 1)
        counts = {str(status): int(count) for status, count in rows}
        jobs = GaugeMetricFamily("jobs", "Jobs by status (from Postgres).", labels=["status"])
        for status in sorted(set(_JOB_STATUSES) | set(counts)):
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs


class ApiMetrics:
    """The API's own counters, and the exposition of everything."""

    def __init__(self, services: ApiServices, started_at: float) -> None:
        self.multiprocess = multiprocess_mode()
        # In multiprocess mode the values live in per-process files, not in a
        # registry; the registry for the exposition is made per scrape.
        self.registry: CollectorRegistry | None = None if self.multiprocess else CollectorRegistry()
        labels = ["route", "method", "status"]
        self.requests = Counter(
            "requests", "HTTP requests answered.", labels, registry=self.registry
        )
        self.errors = Counter(
            "errors",
            "HTTP answers with a status of 400 or more, by error code.",
            ["route", "status", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "request_duration_seconds",
            "Time to answer an HTTP request.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.input_rejections = Counter(
            "input_rejections",
            "Uploads refused before any inference, by reason (error code).",
            ["reason"],
            registry=self.registry,
        )
        self.collector = ServiceCollector(services, started_at)
        if self.registry is not None:
            self.registry.register(self.collector)

    def exposition(self) -> bytes:
        if self.registry is not None:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(self.collector)
        return generate_latest(registry)

    def observe(self, response: Response) -> Response:
        started = g.get("metrics_started")
        rule = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        status = response.status_code
        labels = (rule, request.method, str(status))
        self.requests.labels(*labels).inc()
        if started is not None:
            self.latency.labels(*labels).observe(time.perf_counter() - started)
        if status >= 400:
            code = g.get("error_code") or "http_error"
            self.errors.labels(rule, str(status), code).inc()
            if request.method == "POST" and status < 500 and status not in _NOT_INPUT_REJECTIONS:
                self.input_rejections.labels(code).inc()
        return response


def init_metrics(app: Flask, services: ApiServices) -> ApiMetrics:
    started_at = float(app.config.get(STARTED_AT_CONFIG) or time.time())
    metrics = ApiMetrics(services, started_at)

    @app.before_request
    def _start_timer() -> None:
        g.metrics_started = time.perf_counter()

    app.after_request(metrics.observe)
    app.extensions["whales_metrics"] = metrics
    return metrics


def metrics_response(app: Flask) -> Response:
    metrics: ApiMetrics = app.extensions["whales_metrics"]
    return Response(metrics.exposition(), mimetype=None, content_type=CONTENT_TYPE_LATEST)
