"""The worker's message consumer: task events flushed after the task is handed out.

With its event loop, Celery buffers task events and flushes them at the top
of the loop's next turn, which comes before the pool process is handed the
task it just received: the task-received event's publish, a Redis round trip,
sat on every task's latency. This consumer flushes a moment later instead,
while the task runs; monitors such as Flower get each event up to
``EVENT_FLUSH_DELAY_S`` later, with its own timestamp, and under load more
events share one publish.
"""

from __future__ import annotations

from typing import Any

from celery.worker.consumer import Consumer

EVENT_FLUSH_DELAY_S = 0.05


class DeferredEventsConsumer(Consumer):
    _event_flush: Any = None  # the pending timer entry, if any

    def on_send_event_buffered(self) -> None:
        # Called on the event loop's thread, for every buffered event. A full
        # buffer is flushed at once by the dispatcher itself.
        if not self.hub:
            super().on_send_event_buffered()
        elif self._event_flush is None:
            self._event_flush = self.hub.call_later(EVENT_FLUSH_DELAY_S, self._flush_deferred)

    def _flush_deferred(self) -> None:
        self._event_flush = None
        self._flush_events()
