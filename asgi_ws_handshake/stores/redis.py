"""``RedisStore``: reused keys, handshake rates and connection leases shared by a fleet.

Several workers and machines point at one Redis (or Valkey) server, a Redis or Valkey
cluster, or a primary watched by Sentinel. Reused keys are one record each; rates go through
the ``limits`` library's moving window (its cluster storage on a cluster); connections are
leases in sorted sets scored by expiry, which this process refreshes while its connections
live, so a crashed worker's connections stop counting after ``lease_ttl`` seconds. Scripts and
key layout: ``redis_scripts``; URLs and clients: ``redis_connect``. ``redis`` and ``limits``
(the ``redis`` extra) are imported when a store is built, never at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from .errors import StoreError
from .rates import RateLimiter
from .redis_connect import connect
from .redis_scripts import ACQUIRE, REFRESH, RELEASE, REMEMBER, conn_key, key_name

__all__ = ["RedisStore"]

logger = logging.getLogger("asgi_ws_handshake")

_T = TypeVar("_T")

_REFRESH_BATCH = 500  # keys per refresh script call


class RedisStore:
    """A ``HandshakeStore`` on Redis or Valkey, shared by every worker and machine.

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` for one server;
            ``redis+cluster://host:port[,host:port...]`` for a Redis or Valkey cluster (seed
            nodes); ``redis+sentinel://host:port[,host:port...]/service_name`` for the
            primary the Sentinels name. Credentials go in the URL (``user:password@``).
        client: a ``redis.asyncio.Redis`` (``Sentinel.master_for(...)`` included) or a
            ``redis.asyncio.cluster.RedisCluster`` to use instead of ``url`` (not closed by
            ``aclose``).
        prefix: the prefix of every key this store writes; give each app its own.
        timeout: seconds any one store call may take, connecting and one retry included.
        lease_ttl: seconds a connection lease lives without refresh: how long a crashed
            worker's connections keep counting. Live leases are refreshed every third of it.
            Every process sharing a prefix should use the same value.
        retry_interval: after a failure, calls fail at once for this many seconds instead of
            each waiting ``timeout`` on a store that is down; then the store is tried again.

    Raises:
        ValueError: for a bad option or URL, naming it.
        ImportError: when ``redis`` or ``limits`` is missing (install the ``redis`` extra).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
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
        self._backend = backend = connect(url, client, prefix, timeout)
        from redis.exceptions import ConnectionError as LostConnection
        from redis.exceptions import ReadOnlyError

        # Errors that mean "this connection is dead, or points at a former primary".
        self._reconnect = (LostConnection, ReadOnlyError)
        self.client: Any = backend.client
        self.kind = backend.kind
        self.prefix = prefix
        self.timeout = timeout
        self.lease_ttl = lease_ttl
        self.retry_interval = retry_interval
        self._rates: RateLimiter | None = None
        self._remember = backend.client.register_script(REMEMBER)
        self._acquire = backend.client.register_script(ACQUIRE)
        self._refresh = backend.client.register_script(REFRESH)
        self._release = backend.client.register_script(RELEASE)
        # Tokens that mark which call stored a key: unique per process and call.
        self._tokens = map(f"{os.urandom(6).hex()}:{{}}".format, itertools.count())
        self._live: dict[str, tuple[str, tuple[str, ...]]] = {}  # lease -> (tag, keys)
        self._refresher: asyncio.Task[None] | None = None
        self._down_until = 0.0  # fail fast until then
        self._last_ok = 0.0  # when a call last succeeded
        self._last_drop = 0.0  # when idle connections were last dropped

    def __repr__(self) -> str:
        return f"RedisStore(kind={self.kind!r}, prefix={self.prefix!r}, timeout={self.timeout!r})"

    async def _call(self, what: str, attempt: Callable[[], Awaitable[_T]]) -> _T:
        """Run one store call within ``timeout``; any failure becomes ``StoreError``.

        A dead pooled connection (the server restarted, Sentinel or the cluster moved the
        primary) is not an outage: the idle connections are dropped and the call is tried
        once more on a fresh one, within the same ``timeout``. Only a call that still fails
        opens the fail-fast window, and only when nothing succeeded since it began: a slow
        call that fails after the store came back does not close the store again.
        """
        started = time.monotonic()
        if started < self._down_until:
            raise StoreError(f"{what}: store unavailable (retrying shortly)")
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    result = await attempt()
                except self._reconnect:
                    if started > self._last_drop:  # one drop serves every call begun before it
                        self._last_drop = time.monotonic()
                        await self._backend.drop_idle()
                    result = await attempt()
        except Exception as exc:
            if started >= self._last_ok:
                self._down_until = time.monotonic() + self.retry_interval
            raise StoreError(f"{what}: {type(exc).__name__}: {exc}") from exc
        self._last_ok = time.monotonic()
        return result

    async def remember_key(self, key: str, ttl: float) -> bool:
        keys = [key_name(self.prefix, key)]
        args = [next(self._tokens), max(1, int(ttl * 1000))]
        return bool(await self._call("remember_key", lambda: self._remember(keys, args)))

    async def redeem(self, ticket: str, ttl: float) -> bool:
        """Use a one-time ticket up: True for its first use in the whole fleet.

        ``SET NX PX`` semantics through the ``REMEMBER`` script, whose token keeps a retried
        call (a dead pooled connection) from reading its own write as a replay. One key,
        hash-tagged with the ticket: a slot of its own on a cluster.
        """
        keys = [f"{self.prefix}ticket:{{{ticket}}}"]
        args = [next(self._tokens), max(1, int(ttl * 1000))]
        return not await self._call("redeem", lambda: self._remember(keys, args))

    async def hit(self, name: str, limit: int, window: int) -> int:
        # A retried hit may count twice when its first attempt ran and only the reply was
        # lost: rates err towards refusing, never towards letting more through.
        return await self._call("hit", lambda: self._hit(name, limit, window))

    async def _hit(self, name: str, limit: int, window: int) -> int:
        if self._rates is None:
            storage = await self._backend.rate_storage()
            if self._rates is None:
                self._rates = RateLimiter(storage)
        return await self._rates.hit(name, limit, window)

    async def acquire(self, lease: str, caps: Mapping[str, int]) -> str | None:
        names = tuple(caps)
        if not names:
            return None
        if lease in self._live:
            raise ValueError(f"lease {lease!r} is already held")
        tagged = [conn_key(self.prefix, name) for name in names]
        tag = tagged[0][0]
        if any(other != tag for other, _ in tagged):
            # One script, one hash slot (a cluster refuses keys of several slots).
            raise ValueError(f"the names of one lease must share their route: {names!r}")
        keys = [key for _, key in tagged]
        args = [int(self.lease_ttl * 1000), lease, *caps.values()]
        full = await self._call("acquire", lambda: self._acquire(keys, args))
        if full:
            return names[int(full) - 1]
        self._live[lease] = (tag, tuple(keys))
        self._ensure_refresher()
        return None

    async def release(self, lease: str) -> None:
        # Forget it first: if Redis cannot hear the ZREM now, the lease still expires.
        held = self._live.pop(lease, None)
        if not held:
            return
        keys = list(held[1])
        await self._call("release", lambda: self._release(keys, [lease]))

    async def refresh(self) -> None:
        """Extend every lease this process holds by ``lease_ttl`` (the refresher calls this)."""
        by_tag: dict[str, list[tuple[str, str]]] = {}
        for lease, (tag, keys) in list(self._live.items()):
            by_tag.setdefault(tag, []).extend((key, lease) for key in keys)
        ttl_ms = int(self.lease_ttl * 1000)
        for pairs in by_tag.values():  # one script call per hash slot (and batch)
            for start in range(0, len(pairs), _REFRESH_BATCH):
                await self._refresh_batch(ttl_ms, pairs[start : start + _REFRESH_BATCH])

    async def _refresh_batch(self, ttl_ms: int, batch: list[tuple[str, str]]) -> None:
        keys = [key for key, _ in batch]
        args = [ttl_ms, *(lease for _, lease in batch)]
        await self._call("refresh", lambda: self._refresh(keys, args))

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
        """Stop refreshing and close the clients this store created."""
        task, self._refresher = self._refresher, None
        if task is not None:
            task.cancel()
            if task.get_loop() is asyncio.get_running_loop():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._backend.aclose()
