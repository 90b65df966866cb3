"""The handshake as the policy sees it: a frozen value built from an ASGI websocket scope.

``HandshakeRequest.from_scope`` is the one reader of ``scope["headers"]``. It keeps every
repeated header line (a second Origin or Key must stay visible), splits comma-joined lists
(daphne joins repeated lines into one), decodes bytes as latin-1 and never raises on header
content. Judging the values is left to the policy.

How the fields are found and decoded once (the caches in front of this) is ``headers``'s;
only the key, the path and the client differ per handshake and are read fresh here. Why the
whole path is fast is explained in one place: the README's "Why it is fast".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from .headers import (
    _CACHE,
    _ENTRY,
    _OWS,
    _WSS,
    RawValues,
    as_bytes,
    decoded,
    items,
    layout_of,
    name_at,
    normalised,
    value_at,
    values_at,
)
from .proxies import WSS_SITE, Site

if TYPE_CHECKING:
    from .proxies import Deployment

__all__ = [
    "CredentialFields",
    "HandshakeRequest",
    "RawValues",
    "Site",
    "client_address",
    "credential_fields",
    "route_path",
]


def client_address(client: Any) -> tuple[str, int] | None:
    """``scope["client"]`` as ``(host, port)``, or None.

    Servers differ: uvicorn gives a tuple, daphne a list, granian the port as a string.
    """
    if type(client) is tuple and len(client) == 2:
        host, port = client
        if type(host) is str and type(port) is int:
            return client
    if client is None:
        return None
    try:
        host_part, port_part = client
        return (str(host_part), int(port_part))
    except (TypeError, ValueError):
        return None


def route_path(scope: Mapping[str, Any]) -> str:
    """The path a router dispatches on: ``path`` without the ``root_path`` it starts with.

    uvicorn (every backend) sets ``path = root_path + path``, and Starlette's ``Mount`` hands
    its child a longer ``root_path``; Starlette routes on what follows (its
    ``get_route_path``), so route policies must match the same text, or a request under a
    ``root_path`` would be judged by the wrong route's policy. The same rule as Starlette:
    the prefix is removed only on a segment boundary.
    """
    path = scope.get("path", "/")
    if type(path) is not str:
        path = str(path)
    root = scope.get("root_path")
    if not root or type(root) is not str or not path.startswith(root):
        return path
    if len(path) == len(root):
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path


class HandshakeRequest(NamedTuple):
    """The parts of an opening handshake that the policy judges.

    Repeated headers keep every value, in order: ``origins``, ``versions`` and ``keys`` hold one
    item per header line and per comma-separated element of a line, so a daphne-joined
    ``"a, b"`` and two separate lines give the same request.
    """

    path: str = "/"
    #: Every Host header line (RFC 9110 7.2 allows exactly one).
    hosts: tuple[str, ...] = ()
    #: Every Origin value; empty tuple when absent. "null" stays the string "null".
    origins: tuple[str, ...] = ()
    versions: tuple[str, ...] = ("13",)
    keys: tuple[str, ...] = ()
    #: Offered subprotocols in client order, empty items dropped (RFC 9110 5.6.1.2).
    subprotocols: tuple[str, ...] = ()
    #: "1.1", "2" or "3": RFC 8441 / RFC 9220 handshakes carry no key.
    http_version: str = "1.1"
    scheme: str = "ws"
    client: tuple[str, int] | None = None
    #: Whether the server offers the ``websocket.http.response`` extension.
    denial_response: bool = False
    #: The decoded Origin, Host, version and offer; ``from_scope`` shares one per distinct
    #: set of raw values (see the module docstring). None: build it from the fields above.
    raw: RawValues | None = None

    @property
    def site(self) -> Site | None:
        """Where the site is served from beyond Host (``raw.site``): a trusted proxy's view,
        ``public_origins``, or https under a ``wss`` scope. A request built by hand carries
        one in its ``raw``, as it does ``fetch_site``."""
        raw = self.raw
        return None if raw is None else raw.site

    @property
    def fetch_site(self) -> str | None:
        """``Sec-Fetch-Site`` (``raw.fetch_site``), or None."""
        raw = self.raw
        return None if raw is None else raw.fetch_site

    @classmethod
    def from_scope(
        cls, scope: Mapping[str, Any], deployment: Deployment | None = None
    ) -> HandshakeRequest:
        """Build a request from an ASGI ``websocket`` scope.

        Tolerates every byte sequence in header names and values and reads the optional scope
        keys (``extensions``, ``http_version``, ``scheme``, ``client``) with ``.get``.

        Args:
            scope: the ASGI scope.
            deployment: the middleware's ``trusted_proxies`` and ``public_origins``; a
                trusted peer's ``Forwarded`` / ``X-Forwarded-*`` headers then give the public
                host, scheme and client address. None: those headers are not read.
        """
        headers = scope.get("headers") or ()
        if type(headers) is not list and type(headers) is not tuple:
            headers = list(headers)
        o, h, v, k, p, optional = layout_of(headers)
        # Each field on one line, its value bytes: the usual case, inline.
        origin = headers[o][1] if type(o) is int else values_at(headers, o)
        host = headers[h][1] if type(h) is int else values_at(headers, h)
        version = headers[v][1] if type(v) is int else values_at(headers, v)
        key = headers[k][1] if type(k) is int else values_at(headers, k)
        protocol = headers[p][1] if type(p) is int else values_at(headers, p)
        if not (
            type(origin) is bytes
            and type(host) is bytes
            and type(version) is bytes
            and type(key) is bytes
            and (type(protocol) is bytes or protocol is None)
        ):
            # Absent or repeated fields, or a broken server's values: normalise to bytes (or
            # tuples of bytes), so values of different types never share a cache entry.
            origin, host, version, key, protocol = map(
                normalised, (origin, host, version, key, protocol)
            )
        listed = None
        if protocol is None:
            scope_list = scope.get("subprotocols")
            if scope_list and (type(scope_list) is list or type(scope_list) is tuple):
                listed = tuple(scope_list)
        client = scope.get("client")
        if not (
            type(client) is tuple
            and len(client) == 2
            and type(client[0]) is str
            and type(client[1]) is int
        ):
            client = client_address(client)
        scheme = scope.get("scheme", "ws")
        if optional is None and deployment is None:  # the usual case: nothing optional
            if scheme == "wss":  # TLS ends here: the public scheme is known (see Site)
                raw_key: tuple[object, ...] = (origin, host, version, protocol, listed, _WSS)
            else:
                raw_key = (origin, host, version, protocol, listed)
        else:
            extra, client = _optional(headers, optional, scheme, client, deployment)
            if extra is None:
                raw_key = (origin, host, version, protocol, listed)
            else:
                raw_key = (origin, host, version, protocol, listed, extra)
        try:
            raw = _ENTRY(raw_key)
        except TypeError:  # an unhashable scope list
            raw = None
        if raw is None:
            raw = _CACHE.add(raw_key)
        # One line, one value: the usual case. (``find``, not ``in``: ``bytes.__contains__``
        # first tries its operand as an integer and builds a TypeError to discard.)
        if type(key) is bytes and key.find(b",") < 0:
            keys: tuple[str, ...] = (key.decode("latin-1").strip(_OWS),)
        else:
            keys = items(decoded(key))
        extensions = scope.get("extensions")
        path = scope.get("path", "/")
        http_version = scope.get("http_version", "1.1")
        return cls(
            path if type(path) is str else str(path),
            raw.hosts,
            raw.origins,
            raw.versions,
            keys,
            raw.subprotocols,
            http_version if type(http_version) is str else str(http_version),
            scheme if type(scheme) is str else str(scheme),
            client,
            (type(extensions) is dict or isinstance(extensions, Mapping))
            and "websocket.http.response" in extensions,
            raw,
        )


def _optional(
    headers: list[Any] | tuple[Any, ...],
    optional: int | tuple[Any, ...] | None,
    scheme: object,
    client: tuple[str, int] | None,
    deployment: Deployment | None,
) -> tuple[object, tuple[str, int] | None]:
    """The optional fields' part of the cache key (see ``RawValues.decode``), and the client
    as the deployment sees it."""
    texts: list[str | None] = [None, None, None, None]
    if type(optional) is int:  # one Sec-Fetch-Site line, nothing else: a browser's handshake
        fetch_raw = normalised(value_at(headers[optional]))
    elif optional is None:
        fetch_raw = None
    else:
        assert type(optional) is tuple
        where = optional[0]
        fetch_raw = (
            normalised(value_at(headers[where]))
            if type(where) is int
            else values_at(headers, where)
        )
        texts = [_text(headers, where) for where in optional[1:]]
    if deployment is None:
        site = WSS_SITE if scheme == "wss" else None
    else:
        site, client = deployment.resolve(client, str(scheme), *texts)
    if fetch_raw is None:
        return (None if site is None else _WSS if site is WSS_SITE else (site, None)), client
    return (site, fetch_raw), client


def _text(headers: list[Any] | tuple[Any, ...], where: Any) -> str | None:
    """An optional field's value as text, repeated lines comma-joined (as daphne joins them)."""
    if where is None:
        return None
    if type(where) is int:
        value = value_at(headers[where])
        if type(value) is bytes:
            return value.decode("latin-1").strip(_OWS)
        return as_bytes(value).decode("latin-1").strip(_OWS)
    return ", ".join(decoded(values_at(headers, where)))


# -- credentials: read only for a policy that authenticates (``identity.AuthRequest``)

_COOKIE, _AUTHORIZATION = b"cookie", b"authorization"


class CredentialFields(NamedTuple):
    """The parts of a handshake that can carry a credential, as text (latin-1)."""

    #: Every Cookie line (RFC 9113 8.2.3: HTTP/2 may split the field into several).
    cookies: tuple[str, ...] = ()
    #: Every Authorization line (more than one is ambiguous, and never used).
    authorizations: tuple[str, ...] = ()
    #: The raw query string, still percent-encoded.
    query: str = ""


def credential_fields(scope: Mapping[str, Any]) -> CredentialFields:
    """Read the Cookie and Authorization lines and the query string of a websocket scope.

    Only handshakes whose policy authenticates pay for this pass; like ``from_scope`` it
    tolerates any bytes and never raises.
    """
    cookies: list[str] = []
    authorizations: list[str] = []
    headers = scope.get("headers") or ()
    for item in headers if type(headers) in (list, tuple) else list(headers):
        name = name_at(item)
        if type(name) is not bytes:
            continue
        if name != _COOKIE and name != _AUTHORIZATION:
            name = name.lower()
            if name != _COOKIE and name != _AUTHORIZATION:
                continue
        text = as_bytes(value_at(item)).decode("latin-1").strip(_OWS)
        (cookies if name == _COOKIE else authorizations).append(text)
    query = scope.get("query_string")
    return CredentialFields(
        tuple(cookies),
        tuple(authorizations),
        as_bytes(query).decode("latin-1") if query else "",
    )
