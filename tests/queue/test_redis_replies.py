"""Commands sent at once, replies read later, on the real Redis."""

from __future__ import annotations

import uuid

import pytest
import redis

from workers.redis_replies import SentCommands


def test_replies_come_in_the_order_of_the_commands(redis_client: redis.Redis) -> None:
    key = f"test:sent:{uuid.uuid4().hex}"

    with SentCommands(redis_client, ("INCR", key), ("EXPIRE", key, 60), ("INCR", key)) as sent:
        assert sent.replies() == [1, 1, 2]

    assert 0 < redis_client.ttl(key) <= 60


def test_commands_run_even_when_their_replies_are_never_read(
    redis_client: redis.Redis,
) -> None:
    key = f"test:sent:{uuid.uuid4().hex}"

    with SentCommands(redis_client, ("INCR", key), ("INCR", key)):
        pass  # left unread, as when the task fails before it reads them

    # The pool hands out no connection with stale replies on it: the next
    # command gets its own reply.
    assert int(redis_client.incr(key)) == 3
    assert redis_client.ping()


def test_an_error_reply_is_raised_and_the_connection_dropped(
    redis_client: redis.Redis,
) -> None:
    key = f"test:sent:{uuid.uuid4().hex}"
    redis_client.set(key, "not a number")

    sent = SentCommands(redis_client, ("INCR", key), ("GET", key))
    with pytest.raises(redis.ResponseError):
        sent.replies()

    assert redis_client.get(key) == b"not a number"
    with pytest.raises(RuntimeError):
        sent.replies()
