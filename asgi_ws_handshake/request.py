"""The handshake as the policy sees it: a frozen value built from an ASGI websocket scope.

``HandshakeRequest.from_scope`` reads ``scope["headers"]``. It keeps every repeated header
line (a second Origin or Key must stay visible), splits comma-joined lists (daphne joins
repeated lines into one), decodes bytes as latin-1 and never raises on header content.
Judging the values is left to the policy.

``plain_fields`` is the other reader, for the middleware's plain lane: it only recognises
ordinary header lists (every name lowercase, each of the five handshake fields at most once)
and hands back their raw values; anything else is left to ``from_scope``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

__all__ = ["HandshakeRequest", "client_address", "plain_fields"]

_ORIGIN, _HOST, _VERSION, _KEY, _PROTOCOL = range(5)
_FIELDS = {
    b"origin": _ORIGIN,
    b"host": _HOST,
    b"sec-websocket-version": _VERSION,
    b"sec-websocket-key": _KEY,
    b"sec-websocket-protocol": _PROTOCOL,
}
# RFC 9110 5.5: leading and trailing whitespace is not part of a field value.
_OWS = " \t"


def client_address(client: Any) -> tuple[str, int] | None:
    """``scope["client"]`` as ``(host, port)``, or None.

    Servers differ: uvicorn gives a tuple, daphne a list, granian the port as a string.
    """
    if (
        type(client) is tuple
        and len(client) == 2
        and type(client[0]) is str
        and type(client[1]) is int
    ):
        return client
    if client is None:
        return None
    try:
        host_part, port_part = client
        return (str(host_part), int(port_part))
    except (TypeError, ValueError):
        return None


def _items(lines: list[str]) -> tuple[str, ...]:
    """Split comma-separated header lines into stripped items, keeping empty ones."""
    if len(lines) == 1:
        line = lines[0]
        if "," not in line:
            return (line,)
    elif not lines:
        return ()
    return tuple([item.strip(_OWS) for line in lines for item in line.split(",")])


class HandshakeRequest(NamedTuple):
    """The parts of an opening handshake that the policy judges.

    Repeated headers keep every value, in order: ``origins``, ``versions`` and ``keys`` hold one
    item per header line and per comma-separated element of a line, so a daphne-joined
    ``"a, b"`` and two separate lines give the same request.

    A ``NamedTuple`` rather than a frozen dataclass: just as immutable, and built several
    times faster, which matters on a path every handshake takes.
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

    @classmethod
    def from_scope(cls, scope: Mapping[str, Any]) -> HandshakeRequest:
        """Build a request from an ASGI ``websocket`` scope.

        Tolerates every byte sequence in header names and values and reads the optional scope
        keys (``extensions``, ``http_version``, ``scheme``, ``client``) with ``.get``.
        """
        origin_lines: list[str] = []
        host_lines: list[str] = []
        version_lines: list[str] = []
        key_lines: list[str] = []
        protocol_lines: list[str] = []
        found = (origin_lines, host_lines, version_lines, key_lines, protocol_lines)
        fields = _FIELDS
        for name, value in scope.get("headers") or ():
            index = fields.get(name)
            if index is None:
                # ASGI names are lowercase; a server that forgot is still read, never skipped.
                if type(name) is not bytes or name.islower():
                    continue
                index = fields.get(name.lower())
                if index is None:
                    continue
            if type(value) is bytes:
                found[index].append(value.decode("latin-1").strip(_OWS))

        if protocol_lines:
            offered = tuple([item for item in _items(protocol_lines) if item])
        else:
            # uvicorn's wsproto backend removes the header and leaves only this list.
            fallback = scope.get("subprotocols") or ()
            offered = tuple([item for item in fallback if type(item) is str and item])

        client = client_address(scope.get("client"))
        extensions = scope.get("extensions")
        path = scope.get("path", "/")
        http_version = scope.get("http_version", "1.1")
        scheme = scope.get("scheme", "ws")
        return tuple.__new__(
            cls,
            (
                path if type(path) is str else str(path),
                tuple(host_lines),
                _items(origin_lines),
                _items(version_lines),
                _items(key_lines),
                offered,
                http_version if type(http_version) is str else str(http_version),
                scheme if type(scheme) is str else str(scheme),
                client,
                (type(extensions) is dict or isinstance(extensions, Mapping))
                and "websocket.http.response" in extensions,
            ),
        )


PlainFields = list[Any]


def plain_fields(headers: object) -> PlainFields | None:
    """The raw Origin, Host, version, key and protocol values of an ordinary header list.

    The plain lane's reader: ``[origin, host, version, key, protocol]`` (None when absent), or
    None when one of the five is repeated, a name is not lowercase (ASGI says servers
    lowercase them; ``from_scope`` still reads one that is not), or ``headers`` is not a list
    or tuple of pairs; the caller then reads the scope with ``HandshakeRequest.from_scope``.
    Values are as the server gave them (bytes, or whatever a broken server passed): the
    caller checks them.
    """
    if type(headers) is not list and type(headers) is not tuple:
        return None
    found: list[Any] = [None, None, None, None, None]
    get = _FIELDS.get
    try:
        for name, value in headers:
            index = get(name)
            if index is None:
                if not name.islower():  # bytes.islower(): no uppercase ASCII letter
                    return None
            elif found[index] is None:
                found[index] = value
            else:
                return None  # a repeated line
    except (TypeError, ValueError, AttributeError):  # not pairs, or names not bytes or str
        return None
    return found
