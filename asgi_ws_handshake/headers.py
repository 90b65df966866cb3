"""Reading a handshake's header fields fast, and decoding them once.

Owns the two caches behind ``HandshakeRequest.from_scope`` (request.py stays the one reader
of the scope; this module works on the header list it is given):

- the *layout* of a header list: where Origin, Host, version, key and protocol (and the
  optional fields) are among its names. The names are joined into one ``bytes`` at C speed
  and looked up: a client sends the same names in the same order on every handshake, so a
  layout is computed once per kind of client.
- ``RawValues``: what a handshake's Origin, Host, version and subprotocol lines decode to,
  keyed on the raw values exactly as read: ``bytes`` (any other type a server passes is
  normalised first, so two values of different types never share an entry), ``None`` for an
  absent line, a tuple for repeated lines. An entry also has room for the policy's verdicts
  on it (``memo``): a cache in front of a pure function, keyed on exactly what it reads.

Both are bounded in entries and in bytes, and long values are never kept.
"""

from __future__ import annotations

import operator
from typing import Any, NamedTuple

from .proxies import WSS_SITE, Site

__all__ = ["Layout", "RawValues", "layout_of", "normalised", "value_at", "values_at"]

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


def items(lines: list[str]) -> tuple[str, ...]:
    """Split comma-separated header lines into stripped items, keeping empty ones."""
    if len(lines) == 1:
        line = lines[0]
        if "," not in line:
            return (line,)
    elif not lines:
        return ()
    return tuple([item.strip(_OWS) for line in lines for item in line.split(",")])


def decoded(raw: object) -> list[str]:
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
                fetch_site = ", ".join(decoded(fetch_raw))
        if listed is not None:
            # uvicorn's wsproto backend removes the header and leaves only the scope's list.
            offered = tuple([item for item in listed if type(item) is str and item])  # type: ignore[attr-defined]
        else:
            # RFC 9110 5.6.1.2: empty list items are ignored.
            offered = tuple([item for item in items(decoded(protocol)) if item])
        return cls(
            tuple(decoded(host)),
            items(decoded(origin)),
            items(decoded(version)),
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
    """What a part of a cache key weighs: raw bytes, a marker string, or a tuple of values."""
    if raw is None:
        return 0
    if type(raw) is bytes or type(raw) is str:
        return len(raw)
    if type(raw) is not tuple:
        return 64
    return sum(len(i) + 8 if type(i) is bytes or type(i) is str else 64 for i in raw)


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


def layout_of(headers: list[Any] | tuple[Any, ...]) -> Layout:
    """``_layout`` of the header names, remembered per distinct list of names.

    The names are joined into one ``bytes`` at C speed and looked up: a client sends the same
    names in the same order on every handshake, so a layout is computed once per kind of
    client. A list whose names hold the separator (or are not bytes) is never remembered.
    """
    try:
        joined = b"\n".join(map(_NAME, headers))
    except (TypeError, IndexError, KeyError):  # not pairs, or names that are not bytes
        return _layout([name_at(item) for item in headers])
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


def name_at(item: object) -> object:
    try:
        return item[0]  # type: ignore[index]
    except Exception:
        return None


def values_at(headers: list[Any] | tuple[Any, ...], where: Any) -> Any:
    """A field's value: None when absent, else the tuple of its repeated lines' values."""
    if where is None:
        return None
    return tuple([as_bytes(value_at(headers[index])) for index in where])


def value_at(item: object) -> object:
    try:
        return item[1]  # type: ignore[index]
    except Exception:
        return _UNREADABLE


def normalised(value: object) -> object:
    if value is None or type(value) is bytes or type(value) is tuple:
        return value
    return as_bytes(value)


def as_bytes(value: object) -> bytes:
    """A header value of another type as the bytes it stands for (a broken server's)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        try:
            return value.encode("latin-1")
        except UnicodeEncodeError:
            return _UNREADABLE
    return _UNREADABLE
