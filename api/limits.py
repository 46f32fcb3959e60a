"""Per-client rate limits, counted in Redis so every API process shares them.

The client is the socket's peer address. ``X-Forwarded-For`` counts only when
``WHALES_TRUSTED_PROXIES`` says how many proxies stand in front (werkzeug's
ProxyFix then takes exactly that many hops from the right), so a client cannot
dodge its limit by forging the header.

Two budgets: the predict routes (v1 and legacy, single and batch, and job
submission) share ``WHALES_RATE_LIMIT_PREDICT``; polling a job and reading its
results have their own, higher ``WHALES_RATE_LIMIT_JOBS``, so a client that
has spent its predictions can still collect them.
"""

from __future__ import annotations

import logging

import redis
from flask import Flask, Response, current_app, g
from flask_limiter import Limiter, RequestLimit
from flask_limiter.util import get_remote_address
from werkzeug.middleware.proxy_fix import ProxyFix

from api.errors import DETAIL_RATE_LIMITED, error_response
from shared.services.redis_urls import to_limits_url
from shared.settings import Settings

log = logging.getLogger(__name__)

PREDICT_SCOPE = "predict"
JOBS_SCOPE = "jobs"


def _on_breach(limit: RequestLimit) -> Response:
    # The JSON body of every 429; flask-limiter adds Retry-After and the
    # X-RateLimit-* headers to it.
    return error_response(
        429,
        "rate_limited",
        f"Rate limit of {limit.limit} exceeded; try again later.",
        detail=DETAIL_RATE_LIMITED,
    )


def _keep_own_retry_after(response: Response) -> Response:
    """flask-limiter puts its window's reset in Retry-After on every limited
    answer. Only a 429 means that; a 503 keeps the delay it chose itself, and a
    success carries none."""
    if response.status_code == 429:
        return response
    own = g.get("retry_after")
    if own is not None:
        response.headers["Retry-After"] = own
    else:
        response.headers.pop("Retry-After", None)
    return response


def read_window_ahead() -> None:
    """Read this request's rate-limit window now, while the request waits on
    something else anyway (a worker): the X-RateLimit headers are then made
    from it without a Redis round trip after the answer has arrived.
    flask-limiter keeps the window it read on the request's limit."""
    limiter: Limiter | None = current_app.extensions.get("whales_limiter")
    limit = limiter.current_limit if limiter is not None and limiter.enabled else None
    if limit is None:
        return
    try:
        limit.remaining  # noqa: B018  (read for its side effect: the cached window)
    except redis.RedisError as exc:
        # Like the limiter itself (swallow_errors): no headers, no failure.
        log.warning("rate-limit window not read: %s", exc)


def create_limiter(app: Flask, settings: Settings, broker_url: str) -> Limiter:
    if settings.trusted_proxies:
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops
        )
    limiter = Limiter(
        get_remote_address,
        storage_uri=to_limits_url(broker_url),
        storage_options={"socket_connect_timeout": 3, "socket_timeout": 3},
        strategy="moving-window",
        headers_enabled=True,
        key_prefix="whales-limits",
        on_breach=_on_breach,
        # A Redis outage must not turn every request into a 500: requests pass
        # unlimited until it is back (the queue itself needs Redis anyway).
        swallow_errors=True,
        enabled=settings.rate_limit_enabled,
    )
    # Registered before the limiter's own hook, so it runs after it.
    app.after_request(_keep_own_retry_after)
    limiter.init_app(app)
    # The limits hold only a weak reference to their limiter: the app keeps it.
    app.extensions["whales_limiter"] = limiter
    return limiter
