"""At most one run of a piece of bookkeeping per interval, and never a lost one.

Single images arrive many per second; evaluating drift after each of them
costs a few database round trips that the next request then waits behind.
The window of the last N scores moves slowly, so once per interval is
enough, provided the last request of a burst is not skipped for good: a
skipped run is made up by a timer when the interval ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Throttle:
    def __init__(self, action: Callable[[], None], interval_s: float) -> None:
        self._action = action
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._last = float("-inf")
        self._timer: threading.Timer | None = None

    def request(self) -> None:
        """Run now if the interval has passed, else make sure a run follows it."""
        with self._lock:
            wait = self._last + self._interval_s - time.monotonic()
            if wait <= 0 and self._timer is None:
                self._last = time.monotonic()
                run_now = True
            else:
                run_now = False
                if self._timer is None:
                    self._timer = threading.Timer(max(wait, 0.0), self._from_timer)
                    self._timer.daemon = True
                    self._timer.start()
        if run_now:
            self._run()

    def _from_timer(self) -> None:
        with self._lock:
            self._timer = None
            self._last = time.monotonic()
        self._run()

    def _run(self) -> None:
        try:
            self._action()
        except Exception:
            # Bookkeeping after the answer: log it, lose nothing else.
            log.exception("throttled action failed")
