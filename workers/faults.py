"""Fault injection for the tests of the delivery cap.

``WHALES_FAULT_CRASH_SHA256`` names an image that kills the worker process
that meets it, exactly as a native crash in a decoder or a model would. It is
off unless set, and never set in production.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal

log = logging.getLogger(__name__)


def crash_if_poisoned(data: bytes, poisoned_sha256: str | None) -> None:
    if poisoned_sha256 and hashlib.sha256(data).hexdigest() == poisoned_sha256:
        log.error("fault injection: image %s kills this worker", poisoned_sha256[:12])
        os.kill(os.getpid(), signal.SIGKILL)
