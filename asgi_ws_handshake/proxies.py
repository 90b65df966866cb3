"""Deployments behind reverse proxies: which peers to believe, and where the site is served from.

Owns ``Deployment`` (the middleware's ``trusted_proxies``, ``public_origins`` and
``proxy_headers``) and the parsing of ``Forwarded`` (RFC 7239) and ``X-Forwarded-For`` /
``-Host`` / ``-Proto``. ``HandshakeRequest.from_scope`` reads the header values and hands them
here; the result, a ``Site`` and the client address, rides on the request. What the policy
makes of a site is the policy's business.

Only a peer listed in ``trusted_proxies`` is believed: from anyone else the headers are
ignored, since any client can send them (RFC 7239 8.1). Pure: no I/O, no clock; the one
warning (forwarded headers from an untrusted peer) is logged once per deployment.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import Literal, NamedTuple

from .origin import parse_origin

__all__ = ["Deployment", "Site", "parse_forwarded"]

logger = logging.getLogger("asgi_ws_handshake")

ProxyHeaders = Literal["x-forwarded", "forwarded"]
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: A peer on a Unix domain socket has no address (``scope["client"]`` is None).
UNIX = "unix:"
#: Bounds on what is parsed of a proxy header: longer values and more hops are not believed.
_MAX_VALUE = 8192
_MAX_HOPS = 64
_TRUST_CACHE = 1024
_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


class Site(NamedTuple):
    """Where the site is served from, when more is known than the Host header tells.

    The other side of the same-origin rule: built from a trusted proxy's headers and
    ``public_origins``, or for a ``wss`` scope (the server itself speaks TLS).
    """

    #: The public scheme as an Origin spells it ("http", "https"); None when unknown, and then
    #: only the host and port are compared (a proxy may have ended TLS).
    scheme: str | None = None
    #: The public ``host[:port]`` a trusted proxy forwarded, judged in place of Host.
    host: str | None = None
    #: ``public_origins``, serialised: when set, the same-origin rule is "one of these".
    origins: frozenset[str] | None = None


#: A ``wss`` scope, nothing else known: TLS ends at this server.
WSS_SITE = Site("https")


class Deployment:
    """The network in front of the app, as the middleware's options describe it.

    Args:
        trusted_proxies: addresses and networks (``"10.0.0.0/8"``, ``"::1"``) of the reverse
            proxies whose headers are believed, as ``scope["client"]`` names the peer;
            ``"unix:"`` for a proxy on a Unix domain socket (no peer address).
        public_origins: the origins the site is served from (``"https://app.example.com"``).
            Same-origin policies then accept exactly these as the handshake's Origin.
        proxy_headers: which headers the proxies set: ``"x-forwarded"`` (``X-Forwarded-For``,
            ``-Host``, ``-Proto``; nginx, Caddy, Traefik) or ``"forwarded"`` (RFC 7239). The
            other kind is ignored even from a trusted proxy, which may pass it through as the
            client wrote it.

    Raises:
        ValueError: naming the option and the bad entry.
    """

    __slots__ = (
        "_addresses",
        "_networks",
        "_plain",
        "_trust",
        "_unix",
        "_wss",
        "headers",
        "warned",
    )

    def __init__(
        self,
        trusted_proxies: Iterable[str] = (),
        public_origins: Iterable[str] = (),
        proxy_headers: ProxyHeaders = "x-forwarded",
    ) -> None:
        if isinstance(trusted_proxies, str) or isinstance(public_origins, str):
            raise TypeError("trusted_proxies and public_origins must be lists, not a str")
        addresses: set[_Address] = set()
        networks: list[_Network] = []
        self._unix = False
        for entry in trusted_proxies:
            if entry == UNIX:
                self._unix = True
            elif isinstance(entry, str) and "/" in entry:
                networks.append(_network(entry))
            else:
                addresses.add(_address(entry))
        self._addresses = frozenset(addresses)
        self._networks = tuple(networks)
        origins: set[str] = set()
        for entry in public_origins:
            parsed = parse_origin(entry) if isinstance(entry, str) else None
            if parsed is None or parsed.scheme not in ("http", "https"):
                raise ValueError(
                    f"invalid public_origins entry {entry!r}: expected 'https://host[:port]'"
                )
            origins.add(parsed.serialized)
        if proxy_headers not in ("x-forwarded", "forwarded"):
            raise ValueError(
                f"invalid proxy_headers {proxy_headers!r}: expected 'x-forwarded' or 'forwarded'"
            )
        self.headers: ProxyHeaders = proxy_headers
        public = frozenset(origins) if origins else None
        self._plain = Site(None, None, public) if public else None
        self._wss = Site("https", None, public)
        self._trust: dict[str, bool] = {}
        self.warned = False

    @property
    def public_origins(self) -> frozenset[str] | None:
        """``public_origins``, serialised, or None."""
        return self._wss.origins

    @property
    def proxied(self) -> bool:
        """Whether any peer is trusted."""
        return bool(self._addresses or self._networks or self._unix)

    def trusts(self, peer: str | None) -> bool:
        """Whether ``peer`` (an address as ``scope["client"]`` gives it; None: a Unix socket)
        is a trusted proxy. Answers are remembered, bounded in entries."""
        if peer is None:
            return self._unix
        known = self._trust.get(peer)
        if known is not None:
            return known
        answer = self._judge(peer)
        if len(self._trust) >= _TRUST_CACHE:
            self._trust.clear()
        if len(peer) <= 64:
            self._trust[peer] = answer
        return answer

    def _judge(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer.strip("[]"))
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack listener's view of an IPv4 peer
        return address in self._addresses or any(address in net for net in self._networks)

    def resolve(
        self,
        client: tuple[str, int] | None,
        scheme: str,
        forwarded: str | None,
        xff: str | None,
        xf_host: str | None,
        xf_proto: str | None,
    ) -> tuple[Site | None, tuple[str, int] | None]:
        """The site and the client of a handshake from peer ``client`` with these headers."""
        if self.headers == "forwarded":
            present = forwarded is not None
        else:
            present = xff is not None or xf_host is not None or xf_proto is not None
        base = "https" if scheme == "wss" else None
        if present and self.proxied:
            if self.trusts(None if client is None else client[0]):
                if self.headers == "forwarded":
                    proto, host, client = self._forwarded(forwarded or "", client)
                else:
                    proto, host = _last(xf_proto), _last(xf_host)
                    client = self._forwarded_for(xff, client)
                public = _public_scheme(proto) or base
                if public is None and host is None and self._plain is None:
                    return None, client
                return Site(public, host, self.public_origins), client
            if not self.warned:
                self.warned = True
                logger.warning(
                    "ignored proxy headers from %s, which is not in trusted_proxies (if the "
                    "server replaced scope['client'] from X-Forwarded-For, as uvicorn's "
                    "--proxy-headers does, turn that off: the guard reads them itself)",
                    "a Unix socket" if client is None else repr(client[0]),
                )
        if base is None:
            return self._plain, client
        return (self._wss if self._plain is not None else WSS_SITE), client

    def _forwarded_for(
        self, value: str | None, client: tuple[str, int] | None
    ) -> tuple[str, int] | None:
        """The client an ``X-Forwarded-For`` list names: from the right, the first address
        that is not a trusted proxy (each proxy appends the address it received from)."""
        if value is None or len(value) > _MAX_VALUE:
            return client
        entries = [item.strip() for item in value.split(",")][-_MAX_HOPS:]
        for entry in reversed(entries):
            node = _node(entry)
            if node is None:
                return client  # a malformed hop: believe nothing beyond it
            if not self.trusts(node[0]):
                return node
        node = _node(entries[0])
        return node if node is not None else client

    def _forwarded(
        self, value: str, client: tuple[str, int] | None
    ) -> tuple[str | None, str | None, tuple[str, int] | None]:
        """(proto, host, client) from ``Forwarded`` (RFC 7239 4): the element each trusted
        proxy appended, walking left while the ``for`` it names is trusted too."""
        elements = parse_forwarded(value)
        if not elements or elements[-1] is None:
            return None, None, client
        index = len(elements) - 1
        while index > 0 and elements[index - 1] is not None:
            node = _node(elements[index].get("for", ""))  # type: ignore[union-attr]
            if node is None or not self.trusts(node[0]):
                break
            index -= 1
        trusted: list[dict[str, str]] = elements[index:]  # type: ignore[assignment]
        proto = next((e["proto"] for e in trusted if "proto" in e), None)
        host = next((e["host"] for e in trusted if "host" in e), None)
        node = _node(trusted[0].get("for", ""))
        return proto, host, node if node is not None else client


def _address(entry: object) -> _Address:
    if entry == "*":
        raise ValueError(
            "invalid trusted_proxies entry '*': list the proxies' addresses; trusting every "
            "peer lets any client forge the public host"
        )
    try:
        return ipaddress.ip_address(entry)  # type: ignore[arg-type]
    except ValueError:
        raise ValueError(
            f"invalid trusted_proxies entry {entry!r}: expected an IP address, a network "
            "such as '10.0.0.0/8', or 'unix:'"
        ) from None


def _network(entry: str) -> _Network:
    try:
        return ipaddress.ip_network(entry)
    except ValueError as exc:
        raise ValueError(f"invalid trusted_proxies entry {entry!r}: {exc}") from None


def _last(value: str | None) -> str | None:
    """The value the nearest proxy set: the last of a comma-separated list."""
    if value is None:
        return None
    last = value.rpartition(",")[2].strip(" \t")
    return last or None


def _public_scheme(proto: str | None) -> str | None:
    """A forwarded protocol as an Origin's scheme. Unknown values are kept (lowercased):
    no Origin has them, so a same-origin policy refuses rather than guesses."""
    if proto is None:
        return None
    proto = proto.strip(" \t").lower()
    return _SCHEMES.get(proto, proto) if proto else None


def _node(text: str) -> tuple[str, int] | None:
    """A hop as (address, port or 0): ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``,
    or RFC 7239 6's ``unknown`` and obfuscated ``_name`` (kept as text, never trusted)."""
    text = text.strip(" \t")
    if not text or len(text) > 256:
        return None
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[1:end], text[end + 1 :]
        if end < 0 or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host:
        return None
    return host, int(port) if port.isdigit() and len(port) <= 5 else 0


def _unquote(value: str) -> str | None:
    """A token or an RFC 9110 5.6.4 quoted-string's content; None when malformed."""
    if not value.startswith('"'):
        return value if value and '"' not in value and "\\" not in value else None
    if len(value) < 2 or not value.endswith('"'):
        return None
    out: list[str] = []
    chars = iter(value[1:-1])
    for char in chars:
        if char == "\\":
            char = next(chars, "")
            if not char:
                return None
        elif char == '"':
            return None
        out.append(char)
    return "".join(out)


def _split(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside quoted strings."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def parse_forwarded(value: str) -> list[dict[str, str] | None]:
    """The elements of a ``Forwarded`` value (RFC 7239 4), one per hop, left to right.

    Each is a dict of its parameters (names lowercased, values unquoted), or None when that
    element is malformed (a repeated parameter, a pair without ``=``, bad quoting). An empty
    list when the value is too long to be believed.
    """
    if len(value) > _MAX_VALUE:
        return []
    elements: list[dict[str, str] | None] = []
    for text in _split(value, ",")[-_MAX_HOPS:]:
        element: dict[str, str] | None = {}
        for pair in _split(text, ";"):
            pair = pair.strip(" \t")
            if not pair:
                continue
            name, sep, raw = pair.partition("=")
            name = name.strip(" \t").lower()
            unquoted = _unquote(raw.strip(" \t")) if sep else None
            if element is None or not name or unquoted is None or name in element:
                element = None  # RFC 7239 4: each parameter at most once per element
                continue
            element[name] = unquoted
        elements.append(element)
    return elements
