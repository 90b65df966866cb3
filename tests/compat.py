"""The handshake cases of the server compatibility matrix and how to observe one.

Shared by ``tests/servers/test_servers.py`` (which asserts per-server expectations) and
``tests/compat_table.py`` (which regenerates the README table from what it observes).
Every request goes to a real server process on 127.0.0.1 running ``tests.apps.main``.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, replace
from typing import Any, Literal

from asgi_ws_handshake import accept_key
from tests.apps.main import ALLOWED_ORIGIN
from tests.support import (
    SERVERS,
    RawResponse,
    Server,
    handshake_lines,
    new_key,
    raw_handshake,
)

EVIL_ORIGIN = "http://evil.test"
_counter = itertools.count()


@dataclass(frozen=True)
class Case:
    """One handshake the matrix sends: what differs from a valid request."""

    name: str
    title: str
    path: str = "/ws"
    origin: str | tuple[str, ...] | None = ALLOWED_ORIGIN
    #: None: a fresh valid key per request; "" : no key line at all.
    key: str | tuple[str, ...] | None = None
    version: str | tuple[str, ...] | None = "13"
    protocols: str | tuple[str, ...] | None = None


CASES: tuple[Case, ...] = (
    Case("valid", "valid handshake"),
    Case("subprotocol", "negotiated subprotocol", protocols="other, chat.v1, chat.v2"),
    # hypercorn keeps only the last line in scope["subprotocols"], wsproto strips the header.
    Case("subprotocol_lines", "offer split over 3 lines", protocols=("x1", "chat.v1", "x2")),
    Case("cross_origin", "cross-origin", origin=EVIL_ORIGIN),
    Case("null_origin", "Origin: null", origin="null"),
    Case("two_origins", "two Origin lines", origin=(ALLOWED_ORIGIN, EVIL_ORIGIN)),
    Case("version_8", "Sec-WebSocket-Version: 8", version="8"),
    Case("two_versions", "two Version: 13 lines", version=("13", "13")),
    Case("key_missing", "no Sec-WebSocket-Key", key=""),
    Case("key_short", "short key (8 bytes)", key="c2hvcnRrZXk="),
    Case("key_not_base64", "non-base64 key", key="!!!!not-base-64-at-all!!"),
    Case("two_keys", "two Key lines", key=("*", "*")),
    Case("bad_token", "bad subprotocol token", protocols="chat.v1, bad/token"),
    Case("bad_token_line", "bad token on a 2nd Protocol line", protocols=("bad/token", "chat.v1")),
    Case("dup_token", "duplicate subprotocol", protocols="chat.v1, chat.v1"),
    Case(
        "app_unoffered",
        "app picks unoffered subprotocol",
        path="/bad-subprotocol",
        protocols="chat.v1",
    ),
    Case("app_reserved", "app adds reserved accept headers", path="/reserved-headers"),
)
CASE_BY_NAME = {case.name: case for case in CASES}


@dataclass
class Observation:
    """What the client received for one case, and the audit event the app wrote (if any)."""

    case: Case
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    #: The key an Accept must be computed from (None when the request had none).
    key: str | None
    path: str
    event: dict[str, Any] | None = None

    def all(self, name: str) -> list[str]:
        return RawResponse(self.status, "", self.headers).all(name)

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    @property
    def accept_ok(self) -> bool:
        """Exactly one Sec-WebSocket-Accept, and it is the RFC 6455 4.2.2 value for the key."""
        values = self.all("sec-websocket-accept")
        return self.key is not None and values == [accept_key(self.key)]

    def summary(self) -> Summary:
        event = self.event
        return Summary(
            status=self.status,
            by="middleware" if event is not None else "server",
            reason=event["reason"] if event is not None else None,
            denial=event["denial"] if event is not None else None,
            subprotocol=self.header("sec-websocket-protocol") if self.status == 101 else None,
            version_header=self.header("sec-websocket-version") == "13",
        )


@dataclass(frozen=True)
class Summary:
    """The comparable part of what a client sees: the cells of the compatibility table."""

    status: int
    #: "middleware" when the app ran (there is an audit event), "server" when it answered first.
    by: Literal["middleware", "server"] = "middleware"
    #: The audit reason; None when accepted or when the server answered first.
    reason: str | None = None
    #: How the middleware refused: "http_response", "close" or None.
    denial: Literal["http_response", "close"] | None = "http_response"
    #: The negotiated subprotocol of a 101.
    subprotocol: str | None = None
    #: The response carries ``Sec-WebSocket-Version: 13``.
    version_header: bool = False

    def cell(self) -> str:
        text = str(self.status)
        if self.status == 101:
            return f"101 `{self.subprotocol}`" if self.subprotocol else "101"
        if self.by == "server":
            text += " server"
        elif self.denial == "close":
            text += " close"
        if self.version_header:
            text += " +V13"
        return text


def _keys(case: Case) -> tuple[str | tuple[str, ...] | None, str | None]:
    """The key line(s) to send, and the single key an Accept should be computed from."""
    if case.key == "":
        return None, None
    if case.key is None:
        key = new_key()
        return key, key
    if isinstance(case.key, tuple):
        keys = tuple(new_key() if k == "*" else k for k in case.key)
        return keys, keys[0]
    return case.key, case.key


def unique_path(path: str) -> str:
    """A path no other request used, so the audit event can be found by its path."""
    return f"{path}/{os.getpid()}-{next(_counter)}"


def find_event(server: Server, path: str) -> dict[str, Any] | None:
    """The audit event of the request to ``path``, if the app wrote one."""
    found = [e for e in server.events() if e["path"] == path]
    assert len(found) <= 1, found
    return found[0] if found else None


def wait_event(server: Server, path: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (event := find_event(server, path)) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"no audit event for {path!r} on {server.name}")
        time.sleep(0.02)
    return event


def settle(server: Server) -> None:
    """Send a valid handshake and wait for its audit event.

    The app handles connections in order on one event loop, so once this later handshake is
    audited, an earlier one that reached the app is audited too: an absent event then means
    the server answered before the app ran, without waiting for a timeout to prove it.
    """
    path = unique_path("/ws/settle")
    request = handshake_lines(server.host, path=path, origin=ALLOWED_ORIGIN, key=new_key())
    response = raw_handshake(server.port, request)
    assert response.status == 101, response
    wait_event(server, path)


def observe(server: Server, case: Case, *, timeout: float = 5.0) -> Observation:
    """Send ``case`` to ``server``; return the response and the app's audit event, if any."""
    keys, key = _keys(case)
    path = unique_path(case.path)
    request = handshake_lines(
        server.host,
        path=path,
        origin=case.origin,
        key=keys,
        version=case.version,
        protocols=case.protocols,
    )
    response = raw_handshake(server.port, request, timeout=timeout)
    observation = Observation(case, response.status, response.headers, response.body, key, path)
    settle(server)
    observation.event = find_event(server, path)
    return observation


# -- What each server is expected to show the client --------------------------------------------

#: What every case gives when the middleware answers through the denial extension.
BASE: dict[str, Summary] = {
    "valid": Summary(101, denial=None),
    "subprotocol": Summary(101, denial=None, subprotocol="chat.v2"),
    "subprotocol_lines": Summary(101, denial=None, subprotocol="chat.v1"),
    "cross_origin": Summary(403, reason="origin_not_allowed"),
    "null_origin": Summary(403, reason="origin_null"),
    "two_origins": Summary(403, reason="origin_multiple"),
    "version_8": Summary(426, reason="version_unsupported", version_header=True),
    "two_versions": Summary(426, reason="version_unsupported", version_header=True),
    "key_missing": Summary(400, reason="key_missing"),
    "key_short": Summary(400, reason="key_malformed"),
    "key_not_base64": Summary(400, reason="key_malformed"),
    "two_keys": Summary(400, reason="key_multiple"),
    "bad_token": Summary(400, reason="subprotocol_malformed"),
    "bad_token_line": Summary(400, reason="subprotocol_malformed"),
    "dup_token": Summary(400, reason="subprotocol_malformed"),
    "app_unoffered": Summary(500, reason="app_subprotocol_not_offered"),
    "app_reserved": Summary(101, denial=None),
}
assert set(BASE) == set(CASE_BY_NAME)

SERVER_NAMES = tuple(SERVERS)
#: Whether the server offers the ASGI ``websocket.http.response`` extension.
DENIAL_EXTENSION = {name: name != "daphne" for name in SERVER_NAMES}


def _server(status: int, why: str, *, version_header: bool = False) -> tuple[Summary, str]:
    summary = Summary(status, by="server", denial=None, version_header=version_header)
    return summary, why


_SANSIO = "websockets' sans-I/O handshake parser refuses it before the app runs"
_WEBSOCKETS = "uvicorn's legacy websockets handshake refuses it before the app runs"
#: Where a server answers before the app runs: (what the client sees, why).
SERVER_FIRST: dict[str, dict[str, tuple[Summary, str]]] = {
    "uvicorn-websockets-sansio": {
        "two_origins": _server(400, _SANSIO + " (invalid Origin header)"),
        "version_8": _server(400, _SANSIO + " (400, no Sec-WebSocket-Version)"),
        "two_versions": _server(400, _SANSIO),
        "key_missing": _server(400, _SANSIO),
        "key_short": _server(400, _SANSIO),
        "key_not_base64": _server(400, _SANSIO),
        "two_keys": _server(400, _SANSIO),
        "bad_token": _server(400, _SANSIO + " (invalid Sec-WebSocket-Protocol)"),
        "bad_token_line": _server(400, _SANSIO + " (invalid Sec-WebSocket-Protocol)"),
    },
    "uvicorn-websockets": {
        "version_8": _server(400, _WEBSOCKETS + " (400, no Sec-WebSocket-Version)"),
        "two_versions": _server(400, _WEBSOCKETS),
        "key_missing": _server(400, _WEBSOCKETS),
        "key_short": _server(400, _WEBSOCKETS),
        "key_not_base64": _server(400, _WEBSOCKETS),
        "two_keys": _server(400, _WEBSOCKETS),
    },
    "uvicorn-wsproto": {
        "version_8": _server(426, "wsproto answers 426 itself", version_header=True),
        "key_missing": _server(400, "wsproto refuses a request without a key"),
    },
    "hypercorn": {
        "version_8": _server(400, "hypercorn refuses a version other than 13 (400, no header)"),
        "key_missing": _server(400, "hypercorn refuses a request without a key"),
    },
    "daphne": {
        "two_versions": _server(400, "daphne joins the lines into '13, 13' and refuses"),
        "key_missing": _server(400, "autobahn (daphne) checks the key itself"),
        "key_short": _server(400, "autobahn (daphne) checks the key itself"),
        "key_not_base64": _server(400, "autobahn (daphne) checks the key itself"),
        "two_keys": _server(400, "daphne joins the keys into one invalid value"),
        "dup_token": _server(400, "autobahn (daphne) refuses duplicate subprotocols"),
    },
    "granian": {
        "version_8": _server(400, "granian refuses a version other than 13 (400, no header)"),
        "key_missing": _server(400, "granian refuses a request without a key"),
    },
}
assert set(SERVER_FIRST) == set(SERVER_NAMES)

#: Where the middleware answers, but differently on one server: (what the client sees, why).
MIDDLEWARE_DIFFERS: dict[str, dict[str, tuple[Summary, str]]] = {
    "hypercorn": {
        "subprotocol_lines": (
            Summary(500, reason="internal_error"),
            "hypercorn can only send a subprotocol from the last Protocol line (it raises on "
            "others and drops the connection): the middleware refuses visibly instead",
        ),
    },
}

#: Servers that do not pass the app's own accept headers (``x-app``) to the client.
DROPS_APP_HEADERS = {
    "daphne": "daphne ignores websocket.accept headers",
    "granian": "granian ignores websocket.accept headers",
}
#: Servers that put their upgrade headers (Upgrade, Connection, Sec-WebSocket-Accept) on a
#: denial response; the status is still the refusal, so clients fail the connection.
UPGRADE_HEADERS_ON_DENIAL = {
    "granian": "granian adds Upgrade, Connection and Sec-WebSocket-Accept to denial responses",
}


def expected(server: str, case: str) -> tuple[Summary, str]:
    """What ``server`` shows the client for ``case``, and why it differs from BASE (or "")."""
    first = SERVER_FIRST[server].get(case)
    if first is not None:
        return first
    differs = MIDDLEWARE_DIFFERS.get(server, {}).get(case)
    if differs is not None:
        return differs
    base = BASE[case]
    if base.status != 101 and not DENIAL_EXTENSION[server]:
        # Without websocket.http.response our refusal is websocket.close: sent as 403.
        why = f"{server} has no denial extension: the refusal is a close, sent as 403"
        return replace(base, status=403, denial="close", version_header=False), why
    return base, ""
