"""When the worker's consumer flushes its buffered task events (pure logic)."""

from __future__ import annotations

from typing import Any

from workers.consumer import EVENT_FLUSH_DELAY_S, DeferredEventsConsumer


class _RecordingHub:
    """Stands in for kombu's hub: keeps the timers the consumer asks for."""

    def __init__(self) -> None:
        self.timers: list[tuple[float, Any]] = []

    def call_later(self, delay: float, callback: Any) -> object:
        self.timers.append((delay, callback))
        return object()


def _consumer(hub: _RecordingHub, flushes: list[int]) -> DeferredEventsConsumer:
    # Only the two attributes the scheduling reads; building a real consumer
    # needs a running worker (its events are tested with Flower).
    consumer = DeferredEventsConsumer.__new__(DeferredEventsConsumer)
    consumer.hub = hub
    consumer._flush_events = lambda: flushes.append(1)
    return consumer


def test_buffered_events_are_flushed_once_after_a_delay() -> None:
    hub, flushes = _RecordingHub(), []
    consumer = _consumer(hub, flushes)

    consumer.on_send_event_buffered()
    consumer.on_send_event_buffered()  # a second event joins the pending flush

    assert [delay for delay, _ in hub.timers] == [EVENT_FLUSH_DELAY_S]
    assert flushes == []
    hub.timers[0][1]()
    assert flushes == [1]

    consumer.on_send_event_buffered()  # a later event gets a flush of its own
    assert len(hub.timers) == 2
