"""Task results stored in one Redis round trip.

Celery's Redis backend reads a task's stored state before writing its result
(a late duplicate must not overwrite a success), then writes and publishes
it: two round trips, with a window between them in which another delivery
can write. Here one Lua script does the check, the write and the publish, so
the answer reaches a waiting client one round trip sooner and the check
cannot race.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from celery import states
from celery.backends.base import BackendStoreError
from celery.backends.redis import RedisBackend
from kombu.utils.encoding import bytes_to_str
from redis.commands.core import Script

# KEYS[1]: the result key (also the channel waiting clients subscribe to);
# ARGV[1]: the encoded meta; ARGV[2]: its time to live in seconds, 0 for none.
_STORE_UNLESS_SUCCEEDED = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then
    return 0
  end
end
local ttl = tonumber(ARGV[2])
if ttl and ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""


class OneTripRedisBackend(RedisBackend):
    """Celery's Redis result backend with an atomic check-and-store (JSON
    results only, as this service configures)."""

    @cached_property
    def _store_script(self) -> Script:
        return self.client.register_script(_STORE_UNLESS_SUCCEEDED)

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        meta = self._get_result_meta(
            result=result, state=state, traceback=traceback, request=request
        )
        meta["task_id"] = bytes_to_str(task_id)
        value = self.encode(meta)
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError(
                "value too large for Redis backend", state=state, task_id=task_id
            )
        expires = self.failure_expires if state == states.FAILURE else self.expires
        self.ensure(self._store, (self.get_key_for_task(task_id), value, int(expires or 0)))
        return result

    def _store(self, key: bytes, value: str, expires: int) -> None:
        self._store_script(keys=[key], args=[value, expires])
