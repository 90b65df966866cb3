"""``RedisStore``: reused keys, handshake rates and connection leases shared by a fleet.

Several workers and machines point at one Redis (or Valkey) server. Reused keys are
``SET NX PX``; rates go through the ``limits`` library's async Redis storage with its moving
window strategy; connections are leases in sorted sets scored by expiry, which this process
refreshes while its connections live, so a crashed worker's connections stop counting after
``lease_ttl`` seconds. ``redis`` and ``limits`` (the ``redis`` extra) are imported when a
store is built, never at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import StoreError
from .rates import RateLimiter

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisStore"]

logger = logging.getLogger("asgi_ws_handshake")

_T = TypeVar("_T")

# Only commands Redis and Valkey share (SET, ZADD, ZREM, ZCARD, ZREMRANGEBYSCORE, PTTL,
# PEXPIRE, TIME, EVALSHA). TIME inside a script needs effect replication: Redis >= 5, Valkey.
# KEYS: the sorted sets; ARGV: lease ttl in ms, lease id, then one cap per key.
# Returns 0 when the lease was added to every set, else the 1-based index of a full set.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= tonumber(ARGV[i + 2]) then
    return i
  end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + ttl, ARGV[2])
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end
return 0
"""

# KEYS: sorted sets; ARGV: lease ttl in ms, then the lease id for each key. Sweeps expired
# leases (a crashed worker's) and re-adds missing live ones (a restarted, emptied Redis
# counts the live connections again).
_REFRESH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  redis.call('ZADD', key, now + ttl, ARGV[i + 1])
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end
return #KEYS
"""

_REFRESH_BATCH = 500  # keys per refresh script call


class RedisStore:
    """A ``HandshakeStore`` on a Redis or Valkey server, shared by every worker and machine.

    Args:
        url: a ``redis://``, ``rediss://`` or ``unix://`` URL (Valkey speaks the same protocol).
        client: a ``redis.asyncio.Redis`` to use instead of ``url`` (not closed by ``aclose``).
        prefix: the prefix of every key this store writes; give each app its own.
        timeout: seconds any one store call may take, connecting included.
        lease_ttl: seconds a connection lease lives without refresh: how long a crashed
            worker's connections keep counting. Live leases are refreshed every third of it.
            Every process sharing a prefix should use the same value.
        retry_interval: after a failure, calls fail at once for this many seconds instead of
            each waiting ``timeout`` on a store that is down; then the store is tried again.

    Raises:
        ValueError: for a bad option, naming it.
        ImportError: when ``redis`` or ``limits`` is missing (install the ``redis`` extra).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | None = None,
        prefix: str = "wsh:",
        timeout: float = 0.5,
        lease_ttl: float = 30.0,
        retry_interval: float = 1.0,
    ) -> None:
        if (url is None) == (client is None):
            raise ValueError("RedisStore needs exactly one of url or client")
        if not timeout > 0:
            raise ValueError(f"invalid timeout {timeout!r}: must be > 0")
        if not lease_ttl >= 1:
            raise ValueError(f"invalid lease_ttl {lease_ttl!r}: must be >= 1 second")
        if not retry_interval >= 0:
            raise ValueError(f"invalid retry_interval {retry_interval!r}: must be >= 0")
        try:
            import redis.asyncio
            from limits.aio.storage import RedisStorage
        except ImportError as exc:
            raise ImportError(
                "RedisStore needs the redis extra: pip install 'asgi-ws-handshake[redis]'"
            ) from exc
        if client is None:
            assert url is not None
            client = redis.asyncio.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
            self._owns_client = True
        else:
            self._owns_client = False
        self.client: Redis = client
        self.prefix = prefix
        self.timeout = timeout
        self.lease_ttl = lease_ttl
        self.retry_interval = retry_interval
        # limits builds its own redis-py client over our connection pool (so over the same
        # server, credentials and timeouts). Its options are typed as scalars; a pool is fine.
        pool: dict[str, Any] = {"connection_pool": client.connection_pool}
        storage = RedisStorage(
            "async+redis://", implementation="redispy", key_prefix=f"{prefix}rate", **pool
        )
        self._rates = RateLimiter(storage)
        self._acquire = client.register_script(_ACQUIRE)
        self._refresh = client.register_script(_REFRESH)
        self._live: dict[str, tuple[str, ...]] = {}  # lease -> its sorted-set keys
        self._refresher: asyncio.Task[None] | None = None
        self._down_until = 0.0

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self.prefix!r}, timeout={self.timeout!r})"

    async def _call(self, what: str, call: Awaitable[_T]) -> _T:
        """Await one store call within ``timeout``; any failure becomes ``StoreError``."""
        if time.monotonic() < self._down_until:
            if asyncio.iscoroutine(call):
                call.close()
            raise StoreError(f"{what}: store unavailable (retrying shortly)")
        try:
            async with asyncio.timeout(self.timeout):
                return await call
        except Exception as exc:
            self._down_until = time.monotonic() + self.retry_interval
            raise StoreError(f"{what}: {type(exc).__name__}: {exc}") from exc

    async def remember_key(self, key: str, ttl: float) -> bool:
        name = f"{self.prefix}key:{key}"
        created = await self._call(
            "remember_key", self.client.set(name, b"1", nx=True, px=max(1, int(ttl * 1000)))
        )
        return not created

    async def redeem(self, ticket: str, ttl: float) -> bool:
        """Use a one-time ticket up: ``SET NX PX``, True for the first use in the fleet.

        One key (hash-tagged with the ticket, so it has a slot of its own on a cluster).
        """
        name = f"{self.prefix}ticket:{{{ticket}}}"
        first = await self._call(
            "redeem", self.client.set(name, b"1", nx=True, px=max(1, int(ttl * 1000)))
        )
        return bool(first)

    async def hit(self, name: str, limit: int, window: int) -> int:
        return await self._call("hit", self._rates.hit(name, limit, window))

    def _key(self, name: str) -> str:
        return f"{self.prefix}conn:{name}"

    async def acquire(self, lease: str, caps: Mapping[str, int]) -> str | None:
        names = tuple(caps)
        if not names:
            return None
        if lease in self._live:
            raise ValueError(f"lease {lease!r} is already held")
        keys = tuple(map(self._key, names))
        ttl_ms = int(self.lease_ttl * 1000)
        full = await self._call(
            "acquire",
            self._acquire(keys=list(keys), args=[ttl_ms, lease, *caps.values()]),
        )
        if full:
            return names[int(full) - 1]
        self._live[lease] = keys
        self._ensure_refresher()
        return None

    async def release(self, lease: str) -> None:
        # Forget it first: if Redis cannot hear the ZREM now, the lease still expires.
        keys = self._live.pop(lease, None)
        if not keys:
            return
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.zrem(key, lease)
        await self._call("release", pipe.execute())

    async def refresh(self) -> None:
        """Extend every lease this process holds by ``lease_ttl`` (the refresher calls this)."""
        pairs = [(key, lease) for lease, keys in list(self._live.items()) for key in keys]
        ttl_ms = int(self.lease_ttl * 1000)
        for start in range(0, len(pairs), _REFRESH_BATCH):
            batch = pairs[start : start + _REFRESH_BATCH]
            await self._call(
                "refresh",
                self._refresh(
                    keys=[key for key, _ in batch], args=[ttl_ms, *(lease for _, lease in batch)]
                ),
            )

    def _ensure_refresher(self) -> None:
        # One task per store and event loop refreshes all of this process's leases; it stops
        # when none is left and starts again with the next lease.
        task = self._refresher
        loop = asyncio.get_running_loop()
        if task is None or task.done() or task.get_loop() is not loop:
            self._refresher = loop.create_task(
                self._refresh_forever(), name="asgi-ws-handshake lease refresher"
            )

    async def _refresh_forever(self) -> None:
        interval = self.lease_ttl / 3
        while self._live:
            await asyncio.sleep(interval)
            if not self._live:
                break
            try:
                await self.refresh()
            except StoreError as exc:
                logger.warning("could not refresh connection leases: %s", exc)

    async def aclose(self) -> None:
        """Stop refreshing and close the client if this store created it."""
        task, self._refresher = self._refresher, None
        if task is not None:
            task.cancel()
            if task.get_loop() is asyncio.get_running_loop():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._owns_client:
            await self.client.aclose()
