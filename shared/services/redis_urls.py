"""Spellings of one Redis address for the libraries that use it.

Celery (kombu) wants ``redis+socket:///path`` for a unix socket, redis-py
wants ``unix:///path`` and the ``limits`` storage wants ``redis+unix:///path``.
TCP URLs (``redis://host:port/db``) are the same for all three.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

_SOCKET_SCHEMES = ("redis+socket", "unix", "redis+unix")


def socket_path(url: str) -> str | None:
    parts = urlsplit(url)
    return parts.path if parts.scheme in _SOCKET_SCHEMES else None


def _db_query(url: str) -> str:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    db = (query.get("db") or query.get("virtual_host") or [""])[0]
    return f"?db={db}" if db else ""


def to_celery_url(url: str) -> str:
    path = socket_path(url)
    if path is None:
        return url
    db = _db_query(url).removeprefix("?db=")
    return f"redis+socket://{path}" + (f"?virtual_host={db}" if db else "")


def to_redis_py_url(url: str) -> str:
    path = socket_path(url)
    return url if path is None else f"unix://{path}{_db_query(url)}"


def to_limits_url(url: str) -> str:
    path = socket_path(url)
    return url if path is None else f"redis+unix://{path}{_db_query(url)}"
