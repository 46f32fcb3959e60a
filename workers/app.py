"""The workers' Celery app: tasks, and the signals that keep models warm.

Models load in ``worker_process_init``, i.e. in each pool process after the
fork; the parent process never imports torch, so it never touches CUDA. The
parent runs the janitor that re-sends work whose messages were lost.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals

from shared.queue import create_celery_app
from shared.settings import get_settings

log = logging.getLogger(__name__)

TASK_MODULES = ("workers.tasks.single", "workers.tasks.batch")

# Loading a full bundle takes seconds to minutes; Celery's default of 4 s
# would kill every pool process before its models are warm.
PROCESS_INIT_TIMEOUT_S = 600


class WorkerCelery(Celery):
    """The workers' Celery: results stored in one round trip
    (:mod:`workers.result_store`)."""

    def _get_backend(self) -> Any:
        from celery.app.backends import by_url
        from celery.backends.redis import RedisBackend

        from workers.result_store import OneTripRedisBackend

        backend_class, url = by_url(self.conf.result_backend, self.loader)
        if backend_class is RedisBackend:
            return OneTripRedisBackend(app=self, url=url)
        return super()._get_backend()


def create_worker_app() -> Celery:
    app = create_celery_app(app_class=WorkerCelery)
    app.conf.update(
        include=list(TASK_MODULES),
        worker_proc_alive_timeout=PROCESS_INIT_TIMEOUT_S,
        # Task events are published while the task runs, not before it starts.
        worker_consumer="workers.consumer:DeferredEventsConsumer",
    )
    _connect_signals()
    return app


_signals_connected = False


def _connect_signals() -> None:
    global _signals_connected
    if _signals_connected:
        return
    _signals_connected = True
    signals.worker_init.connect(_check_bundle, weak=False)
    signals.worker_process_init.connect(_load_models, weak=False)
    signals.worker_process_shutdown.connect(_release_process, weak=False)
    signals.worker_ready.connect(_start_janitor, weak=False)
    signals.worker_shutdown.connect(_stop_janitor, weak=False)


def _consumed_queues(sender: Any) -> list[str]:
    try:
        return sorted(sender.app.amqp.queues.consume_from)
    except AttributeError:
        return get_settings().queues()


def _check_bundle(sender: Any = None, **_: Any) -> None:
    from shared.inference.bundle import BundleError, check_bundle_present

    try:
        check_bundle_present(get_settings().models_path)
    except BundleError as exc:
        log.critical("%s", exc)
        raise SystemExit(2) from exc


def _load_models(**_: Any) -> None:
    from workers.state import load_state

    load_state(get_settings().queues())


def _release_process(**_: Any) -> None:
    from workers.state import close_state

    close_state()


def _start_janitor(sender: Any = None, **_: Any) -> None:
    from workers.janitor import start_janitor

    start_janitor()


def _stop_janitor(**_: Any) -> None:
    from workers.janitor import stop_janitor

    stop_janitor()
