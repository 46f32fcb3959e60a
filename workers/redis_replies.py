"""Redis commands sent at once, their replies read when they are needed."""

from __future__ import annotations

from typing import Any

import redis


class SentCommands:
    """Commands written to Redis in one send on a connection of their own.

    Once the constructor returns they are on their way, whatever this process
    does next (it may even die: Redis still runs them). :meth:`replies` reads
    their replies and gives the connection back; :meth:`discard` (also on
    leaving a ``with`` block) drops a connection whose replies nobody will
    read, so the pool never hands out one with unread replies on it.
    """

    def __init__(self, client: redis.Redis, *commands: tuple[Any, ...]) -> None:
        self._pool = client.connection_pool
        self._count = len(commands)
        connection = self._pool.get_connection()
        try:
            connection.send_packed_command(connection.pack_commands(commands))
        except BaseException:
            connection.disconnect()
            self._pool.release(connection)
            raise
        self._connection: Any = connection

    def __enter__(self) -> SentCommands:
        return self

    def __exit__(self, *_: object) -> None:
        self.discard()

    def replies(self) -> list[Any]:
        """The replies, in order; a Redis error is raised as redis-py would."""
        connection, self._connection = self._connection, None
        if connection is None:
            raise RuntimeError("the replies were already read or discarded")
        try:
            return [connection.read_response() for _ in range(self._count)]
        except BaseException:
            connection.disconnect()
            raise
        finally:
            self._pool.release(connection)

    def discard(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.disconnect()
            self._pool.release(connection)
