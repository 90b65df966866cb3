"""How ``RedisStore`` reaches its data: one Redis or Valkey server, a Redis or Valkey cluster,
or a primary watched by Sentinel, from a URL or from a client the caller built.

``parse_store_url`` is pure (the policy file validates URLs with it). ``connect`` imports
redis-py and ``limits`` and builds the store's client and the ``limits`` storage its rates go
through; what to do with them (keys, scripts, retries) is ``stores.redis``'s business.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

__all__ = ["Backend", "StoreURL", "connect", "parse_store_url"]

Kind = Literal["server", "cluster", "sentinel"]

#: URL schemes, spelled as ``limits`` spells its storages (without its ``async+``).
CLUSTER_SCHEME = "redis+cluster"
SENTINEL_SCHEME = "redis+sentinel"
_SERVER_SCHEMES = ("redis", "rediss", "unix")
_DEFAULT_PORTS = {CLUSTER_SCHEME: 6379, SENTINEL_SCHEME: 26379}
_FORMS = "redis://, rediss://, unix://, redis+cluster:// or redis+sentinel://"
#: What a RedisCluster client passed as ``client=`` lends the rate storage's own cluster client.
_CLUSTER_AUTH = ("username", "password", "credential_provider")


@dataclass(frozen=True, slots=True)
class StoreURL:
    """A parsed store URL: which kind of deployment, its seed nodes, the Sentinel service."""

    kind: Kind
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    username: str | None = None
    password: str | None = None

    @property
    def auth(self) -> dict[str, str]:
        found = {"username": self.username, "password": self.password}
        return {name: value for name, value in found.items() if value is not None}


def _redact(url: str) -> str:
    """The URL with any password replaced, for error messages."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hosts = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.partition(':')[0]}:***@{hosts}"


def _node(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):  # an IPv6 literal, RFC 3986 3.2.2
        host, bracket, port = text[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            raise ValueError(f"bad node {text!r}")
        port = port[1:]
    else:
        host, _, port = text.partition(":")
    if not host:
        raise ValueError(f"node {text!r} has no host")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"node {text!r} has a bad port")
    return host, int(port)


def parse_store_url(url: str) -> StoreURL:
    """Check a store URL and say what it names.

    Forms: ``redis://``, ``rediss://`` and ``unix://`` for one server (read by redis-py's
    ``from_url``); ``redis+cluster://[user:password@]host:port[,host:port...]`` for a cluster
    (seed nodes; the rest is discovered); ``redis+sentinel://[user:password@]host:port[,...]
    /service_name`` for the primary that the Sentinels name ``service_name``.

    Raises:
        ValueError: naming the URL (password hidden) and what is wrong with it.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in (*_SERVER_SCHEMES, CLUSTER_SCHEME, SENTINEL_SCHEME):
        raise ValueError(f"invalid store url {_redact(url)!r}: expected {_FORMS}")
    if scheme in _SERVER_SCHEMES:
        return StoreURL("server", url)
    cut = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    netloc, parts = rest[:cut], urlsplit(f"x://x{rest[cut:]}")
    try:
        if parts.query or parts.fragment:
            raise ValueError(f"{scheme} urls take no query options (pass client= instead)")
        userinfo, _, hosts = netloc.rpartition("@")
        nodes = tuple(_node(node, _DEFAULT_PORTS[scheme]) for node in hosts.split(","))
        path = parts.path.strip("/")
        if scheme == CLUSTER_SCHEME and path not in ("", "0"):
            raise ValueError("a cluster has database 0 only")
        if scheme == SENTINEL_SCHEME and (not path or "/" in path):
            raise ValueError("name the service: redis+sentinel://host:port/service_name")
    except ValueError as exc:
        raise ValueError(f"invalid store url {_redact(url)!r}: {exc}") from None
    username, colon, password = userinfo.partition(":")
    return StoreURL(
        "cluster" if scheme == CLUSTER_SCHEME else "sentinel",
        url,
        nodes,
        unquote(path) if scheme == SENTINEL_SCHEME else "",
        unquote(username) or None,
        unquote(password) if colon else None,
    )


@dataclass(slots=True)
class Backend:
    """What a connected store talks to.

    Attributes:
        client: a ``redis.asyncio.Redis`` (one server, or the Sentinel-managed primary) or a
            ``redis.asyncio.cluster.RedisCluster``; the store's own commands go there.
        kind: "server", "cluster" or "sentinel".
        rates: the ``limits`` async storage rates are counted in (built by ``rate_storage``
            when a URL does not already say where).
        closers: what closes the clients built from a URL (none for a caller's client).
    """

    client: Any
    kind: Kind
    prefix: str
    rates: Any = None
    closers: tuple[Callable[[], Awaitable[Any]], ...] = ()

    async def rate_storage(self) -> Any:
        """The ``limits`` storage, built on first use (a cluster client must know its nodes)."""
        if self.rates is None and self.kind == "cluster":
            await self.client.initialize()
        if self.rates is None:  # checked again: a concurrent call may have built it meanwhile
            if self.kind == "cluster":
                nodes = [(node.host, node.port) for node in self.client.get_nodes()]
                kwargs = self.client.get_connection_kwargs()
                options = {name: kwargs[name] for name in _CLUSTER_AUTH if kwargs.get(name)}
                for name in ("socket_timeout", "socket_connect_timeout"):
                    options[name] = kwargs.get(name)
                self.rates = cluster_rates(nodes, self.prefix, options)
            else:
                self.rates = server_rates(self.client.connection_pool, self.prefix)
        return self.rates

    async def drop_idle(self) -> None:
        """Disconnect idle pooled connections, which a restart or failover left stale.

        A cluster client does this itself, node by node, before it retries a command.
        """
        if self.kind != "cluster":
            await self.client.connection_pool.disconnect(inuse_connections=False)

    async def aclose(self) -> None:
        rates = self.rates
        if rates is not None and self.kind == "cluster":
            # limits offers no close; its bridge hands out the cluster client it built.
            bridge = getattr(rates, "bridge", None)
            get = getattr(bridge, "get_connection", None)
            if get is not None:
                with contextlib.suppress(Exception):
                    await get().aclose()
        for close in self.closers:
            await close()


def server_rates(pool: Any, prefix: str) -> Any:
    """``limits``' Redis storage over the store's own pool (one server, or Sentinel's)."""
    from limits.aio.storage import RedisStorage

    # limits builds its own redis-py client over this pool: the same server, credentials,
    # timeouts and (for Sentinel) the same view of which node is the primary.
    options: dict[str, Any] = {"connection_pool": pool}
    return RedisStorage(
        "async+redis://", implementation="redispy", key_prefix=f"{prefix}rate", **options
    )


def cluster_rates(nodes: list[tuple[str, int]], prefix: str, options: dict[str, Any]) -> Any:
    """``limits``' cluster storage: its own cluster client, seeded with the same nodes."""
    from limits.aio.storage import RedisClusterStorage

    seeds = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in nodes)
    return RedisClusterStorage(
        f"async+{CLUSTER_SCHEME}://{seeds}",
        implementation="redispy",
        key_prefix=f"{prefix}rate",
        **options,
    )


def connect(url: str | None, client: Any, prefix: str, timeout: float) -> Backend:
    """Build the client for ``url`` (or adopt ``client``) and the storage for rates.

    Nothing connects yet: redis-py connects on the first command.

    Raises:
        ValueError: a bad URL.
        ImportError: redis or limits is missing.
    """
    try:
        import limits.aio.storage  # noqa: F401  (fail here, not at the first handshake)
        import redis.asyncio
        from redis.asyncio.cluster import ClusterNode, RedisCluster
        from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
    except ImportError as exc:
        raise ImportError(
            "RedisStore needs the redis extra: pip install 'asgi-ws-handshake[redis]'"
        ) from exc
    if client is not None:
        kind: Kind = "server"
        if isinstance(client, RedisCluster):
            kind = "cluster"
        elif isinstance(getattr(client, "connection_pool", None), SentinelConnectionPool):
            kind = "sentinel"
        return Backend(client, kind, prefix)
    assert url is not None
    target = parse_store_url(url)
    if target.kind == "server":
        single = redis.asyncio.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        return Backend(single, "server", prefix, closers=(single.aclose,))
    user, password = target.username, target.password
    if target.kind == "cluster":
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            username=user,
            password=password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        options = {**target.auth, "socket_timeout": timeout, "socket_connect_timeout": timeout}
        rates = cluster_rates(list(target.nodes), prefix, options)
        return Backend(cluster, "cluster", prefix, rates, closers=(cluster.aclose,))
    # As limits does: the URL's credentials serve both the Sentinels and the data nodes.
    socket = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.nodes), sentinel_kwargs={**target.auth, **socket}, **target.auth
    )
    primary: Any = sentinel.master_for(
        target.service, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    return Backend(primary, "sentinel", prefix, closers=(primary.aclose, sentinel.aclose))
