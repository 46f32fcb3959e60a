"""Liveness, readiness and metrics."""

from __future__ import annotations

import logging

from flask import Response, current_app, jsonify
from sqlalchemy import text

from api.context import ApiServices, services
from api.errors import error_response
from api.metrics import metrics_response
from shared.worker_registry import WorkerInfo, live_workers

log = logging.getLogger(__name__)

READY_RETRY_AFTER_S = 5


def _workers(svc: ApiServices) -> list[WorkerInfo]:
    try:
        return live_workers(svc.redis)
    except Exception:
        return []


def health_view() -> Response:
    """Liveness only: answers while the process serves, whatever the backends do."""
    svc = services()
    workers = _workers(svc)
    device = workers[0].device if workers else svc.settings.device
    return jsonify({"status": "ok", "device": device})


def readiness_checks(svc: ApiServices) -> tuple[dict[str, str], int]:
    checks: dict[str, str] = {}
    try:
        with svc.session() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        log.warning("readiness: database down: %s", exc)
        checks["database"] = "down"
    workers: list[WorkerInfo] = []
    try:
        svc.redis.ping()
        checks["broker"] = "ok"
        workers = live_workers(svc.redis)
        checks["worker"] = "ok" if workers else "down"
    except Exception as exc:
        log.warning("readiness: broker down: %s", exc)
        checks["broker"] = "down"
        checks["worker"] = "unknown"
    return checks, len(workers)


def ready_view() -> Response:
    """Ready when the database and the broker answer and a worker is warm."""
    checks, worker_count = readiness_checks(services())
    down = [name for name, state in checks.items() if state != "ok"]
    if down:
        return error_response(
            503,
            "service_unavailable",
            f"Not ready: {', '.join(down)} {'is' if len(down) == 1 else 'are'} not available.",
            headers={"Retry-After": str(READY_RETRY_AFTER_S)},
            extra={"checks": checks, "down": down},
        )
    return jsonify({"status": "ready", "checks": checks, "workers": worker_count})


def metrics_view() -> Response:
    return metrics_response(current_app)
