"""The handshake as the policy sees it: a frozen value built from an ASGI websocket scope.

``HandshakeRequest.from_scope`` is the one reader of ``scope["headers"]``. It keeps every
repeated header line (a second Origin or Key must stay visible), splits comma-joined lists
(daphne joins repeated lines into one), decodes bytes as latin-1 and never raises on header
content. Judging the values is left to the policy.

Why it is fast (the one place this is explained): a handshake's Origin, Host, version and
subprotocol lines are the same for every handshake from the same page, so what they decode
to is remembered in ``RawValues``, keyed on the raw values exactly as read: ``bytes`` (any
other type a server passes is normalised first, so two values of different types never
share an entry), ``None`` for an absent line, a tuple for repeated lines. The cache is
bounded in entries and in bytes, and long values are never kept. An entry also has room for
the policy's verdicts on it (``memo``): a cache in front of a pure function, keyed on
exactly what that function reads. Only the key, the path and the client differ per
handshake and are read fresh.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

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

_ORIGIN, _HOST, _VERSION, _KEY, _PROTOCOL = range(5)
#: Fields read when present, most handshakes carrying none of them: Sec-Fetch-Site, and the
#: headers a proxy adds (judged only from peers in ``trusted_proxies``, see ``proxies``).
_FETCH_SITE, _FORWARDED, _XFF, _XF_HOST, _XF_PROTO = range(5, 10)
_OTHER = -1
#: Header names -> the field they are, or _OTHER. The common lowercase names of a browser's
#: handshake are listed as _OTHER so that only unknown names need the lowercase check.
_FIELDS = {
    b"origin": _ORIGIN,
    b"host": _HOST,
    b"sec-websocket-version": _VERSION,
    b"sec-websocket-key": _KEY,
    b"sec-websocket-protocol": _PROTOCOL,
    b"sec-fetch-site": _FETCH_SITE,
    b"forwarded": _FORWARDED,
    b"x-forwarded-for": _XFF,
    b"x-forwarded-host": _XF_HOST,
    b"x-forwarded-proto": _XF_PROTO,
    **dict.fromkeys(
        [
            b"accept",
            b"accept-encoding",
            b"accept-language",
            b"authorization",
            b"cache-control",
            b"connection",
            b"cookie",
            b"pragma",
            b"sec-fetch-dest",
            b"sec-fetch-mode",
            b"sec-websocket-extensions",
            b"upgrade",
            b"user-agent",
            b"x-real-ip",
        ],
        _OTHER,
    ),
}
# RFC 9110 5.5: leading and trailing whitespace is not part of a field value.
_OWS = " \t"
#: What a header value that is neither bytes nor str reads as: present, and malformed for
#: every field (no parser accepts a NUL), so a broken server fails closed.
_UNREADABLE = b"\x00"
#: The raw-value cache's key for a ``wss`` scope with nothing optional (``WSS_SITE``).
_WSS = "wss"
#: The cache's bounds: entries, and bytes of raw values (each entry's values at most _LONG).
_ENTRIES = 1024
_LONG = 1024
_BYTES = 256 * 1024


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


def _items(lines: list[str]) -> tuple[str, ...]:
    """Split comma-separated header lines into stripped items, keeping empty ones."""
    if len(lines) == 1:
        line = lines[0]
        if "," not in line:
            return (line,)
    elif not lines:
        return ()
    return tuple([item.strip(_OWS) for line in lines for item in line.split(",")])


def _decoded(raw: object) -> list[str]:
    """A field's lines as text: ``None`` (absent), one ``bytes`` value, or a tuple of them."""
    if raw is None:
        return []
    if type(raw) is bytes:
        return [raw.decode("latin-1").strip(_OWS)]
    return [value.decode("latin-1").strip(_OWS) for value in raw]  # type: ignore[attr-defined]


class RawValues(NamedTuple):
    """What a handshake's Origin, Host, version and subprotocol lines decode to."""

    hosts: tuple[str, ...]
    origins: tuple[str, ...]
    versions: tuple[str, ...]
    subprotocols: tuple[str, ...]
    #: Verdicts of pure functions of these values (see the module docstring); None when the
    #: entry is not cached, so nothing is remembered about it either.
    memo: dict[object, Any] | None = None
    #: Where the site is served from, when known beyond Host (part of the cache key).
    site: Site | None = None
    #: The ``Sec-Fetch-Site`` value (Fetch Metadata), repeated lines comma-joined; None when
    #: absent (non-browser clients, older browsers).
    fetch_site: str | None = None

    @classmethod
    def decode(
        cls,
        origin: object,
        host: object,
        version: object,
        protocol: object,
        listed: object,
        optional: object = None,
    ) -> RawValues:
        """Decode raw values; ``listed`` is the scope's ``subprotocols`` when there is no line;
        ``optional`` is None, ``"wss"`` (for ``WSS_SITE``: a cheaper cache key), or a
        ``(site, raw Sec-Fetch-Site)`` pair."""
        site: Site | None = None
        fetch_site = None
        if optional == _WSS:
            site = WSS_SITE
        elif optional is not None:
            pair: tuple[Site | None, object] = optional  # type: ignore[assignment]
            site, fetch_raw = pair
            if fetch_raw is not None:
                fetch_site = ", ".join(_decoded(fetch_raw))
        if listed is not None:
            # uvicorn's wsproto backend removes the header and leaves only the scope's list.
            offered = tuple([item for item in listed if type(item) is str and item])  # type: ignore[attr-defined]
        else:
            # RFC 9110 5.6.1.2: empty list items are ignored.
            offered = tuple([item for item in _items(_decoded(protocol)) if item])
        return cls(
            tuple(_decoded(host)),
            _items(_decoded(origin)),
            _items(_decoded(version)),
            offered,
            None,
            site,
            fetch_site,
        )


class _Cache:
    """Decoded raw values, bounded in entries and bytes; forgotten together when full."""

    __slots__ = ("entries", "size")

    def __init__(self) -> None:
        self.entries: dict[tuple[object, ...], RawValues] = {}
        self.size = 0

    def add(self, key: tuple[object, ...]) -> RawValues:
        """Decode the raw values of ``key`` (not found in ``entries``) and keep them if short."""
        entry = RawValues.decode(*key)
        weight = sum(map(_weight, key))
        if weight > _LONG:  # long values are decoded for this handshake only, never kept
            return entry
        try:
            hash(key)
        except TypeError:  # an unhashable scope list: decoded, never kept
            return entry
        entry = entry._replace(memo={})
        if len(self.entries) >= _ENTRIES or self.size + weight > _BYTES:
            self.entries.clear()
            self.size = 0
        self.entries[key] = entry
        self.size += weight
        return entry


def _weight(raw: object) -> int:
    if raw is None:
        return 0
    if type(raw) is bytes:
        return len(raw)
    items: tuple[object, ...] = raw  # type: ignore[assignment]
    return sum(len(i) + 8 if type(i) is bytes or type(i) is str else 64 for i in items)


_CACHE = _Cache()
_ENTRY = _CACHE.entries.get


#: Where the fields are in a header list: for each of the five handshake fields, None
#: (absent), the index of its one line, or a tuple of the indexes of its repeated lines; then
#: for the optional fields None when none is there, the index of the Sec-Fetch-Site line when
#: it is alone (as browsers send it), else a tuple of where each is.
Layout = tuple[Any, Any, Any, Any, Any, Any]
_NAME = operator.itemgetter(0)
_LAYOUTS: dict[bytes, Layout] = {}


def _layout(names: list[Any]) -> Layout:
    """Where the fields are among ``names``. Pure, and it never raises."""
    found: list[list[int]] = [[], [], [], [], [], [], [], [], [], []]
    for position, name in enumerate(names):
        if type(name) is not bytes:
            continue  # (not a header name: nothing a policy could read)
        index = _FIELDS.get(name)
        if index is None:
            # ASGI names are lowercase; a server that forgot is still read, never skipped.
            if name.islower():
                continue
            index = _FIELDS.get(name.lower())
            if index is None:
                continue
        if index >= 0:
            found[index].append(position)
    o, h, v, k, p, *optional = (
        None if not where else where[0] if len(where) == 1 else tuple(where) for where in found
    )
    if optional.count(None) == len(optional):
        return (o, h, v, k, p, None)
    if type(optional[0]) is int and optional.count(None) == len(optional) - 1:
        return (o, h, v, k, p, optional[0])  # one Sec-Fetch-Site line: a browser's handshake
    return (o, h, v, k, p, tuple(optional))


def _layout_of(headers: list[Any] | tuple[Any, ...]) -> Layout:
    """``_layout`` of the header names, remembered per distinct list of names.

    The names are joined into one ``bytes`` at C speed and looked up: a client sends the same
    names in the same order on every handshake, so a layout is computed once per kind of
    client. A list whose names hold the separator (or are not bytes) is never remembered.
    """
    try:
        joined = b"\n".join(map(_NAME, headers))
    except (TypeError, IndexError, KeyError):  # not pairs, or names that are not bytes
        return _layout([_name(item) for item in headers])
    found = _LAYOUTS.get(joined)
    if found is not None:
        return found
    layout = _layout(list(map(_NAME, headers)))
    # Unambiguous (no name holds the separator) and bounded in entries and bytes.
    if joined.count(b"\n") == max(len(headers) - 1, 0) and len(joined) <= _LONG * 8:
        if len(_LAYOUTS) >= _ENTRIES // 8:
            _LAYOUTS.clear()
        _LAYOUTS[joined] = layout
    return layout


def _name(item: object) -> object:
    try:
        return item[0]  # type: ignore[index]
    except Exception:
        return None


def _values(headers: list[Any] | tuple[Any, ...], where: Any) -> Any:
    """A field's value: None when absent, else the tuple of its repeated lines' values."""
    if where is None:
        return None
    return tuple([_as_bytes(_value(headers[index])) for index in where])


def _value(item: object) -> object:
    try:
        return item[1]  # type: ignore[index]
    except Exception:
        return _UNREADABLE


def _normalised(value: object) -> object:
    if value is None or type(value) is bytes or type(value) is tuple:
        return value
    return _as_bytes(value)


def _as_bytes(value: object) -> bytes:
    """A header value of another type as the bytes it stands for (a broken server's)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        try:
            return value.encode("latin-1")
        except UnicodeEncodeError:
            return _UNREADABLE
    return _UNREADABLE


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
        o, h, v, k, p, optional = _layout_of(headers)
        # Each field on one line, its value bytes: the usual case, inline.
        origin = headers[o][1] if type(o) is int else _values(headers, o)
        host = headers[h][1] if type(h) is int else _values(headers, h)
        version = headers[v][1] if type(v) is int else _values(headers, v)
        key = headers[k][1] if type(k) is int else _values(headers, k)
        protocol = headers[p][1] if type(p) is int else _values(headers, p)
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
                _normalised, (origin, host, version, key, protocol)
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
        if type(key) is bytes and b"," not in key:  # one line, one value: the usual case
            keys: tuple[str, ...] = (key.decode("latin-1").strip(_OWS),)
        else:
            keys = _items(_decoded(key))
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
        fetch_raw = _normalised(_value(headers[optional]))
    elif optional is None:
        fetch_raw = None
    else:
        assert type(optional) is tuple
        where = optional[0]
        fetch_raw = (
            _normalised(_value(headers[where])) if type(where) is int else _values(headers, where)
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
        value = _value(headers[where])
        if type(value) is bytes:
            return value.decode("latin-1").strip(_OWS)
        return _as_bytes(value).decode("latin-1").strip(_OWS)
    return ", ".join(_decoded(_values(headers, where)))


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
        name = _name(item)
        if type(name) is not bytes:
            continue
        if name != _COOKIE and name != _AUTHORIZATION:
            name = name.lower()
            if name != _COOKIE and name != _AUTHORIZATION:
                continue
        text = _as_bytes(_value(item)).decode("latin-1").strip(_OWS)
        (cookies if name == _COOKIE else authorizations).append(text)
    query = scope.get("query_string")
    return CredentialFields(
        tuple(cookies),
        tuple(authorizations),
        _as_bytes(query).decode("latin-1") if query else "",
    )
