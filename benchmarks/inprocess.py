"""In-process cost per handshake: the middleware vs the bare app vs Channels' OriginValidator.

Each handshake is a fresh uvicorn-shaped websocket scope (a browser's headers, a distinct
random key) awaited straight through the ASGI callables in one task: ``receive`` and ``send``
never suspend, so the numbers hold no event-loop scheduling or socket cost. All variants see
the very same scopes. Reported: microseconds per handshake (median over rounds), microseconds
added over the bare app (paired per round), and our overhead divided by Channels' (target: at
most 0.5). Also: a refused handshake, and an ``http`` scope passing through, compared with one
extra pass-through call (a closure, and a Starlette-style middleware class).

Back to back, every call finds the code and data of the previous one in the CPU caches. In a
server it does not: between two handshakes the server's own work evicts them. The cold rows
repeat the accepted handshake with 8 MiB of other memory touched before each call (and the
scope touched again, as a server that has just built it would), timing only the calls.

The headline scopes hold literal ``bytes`` constants as header names and values (shared by
every scope, so their hashes are computed once); the "fresh header objects" rows repeat the
accepted handshake with every name and value a new object, as servers build them per request
(``fresh_websocket_scope``), rebuilt for each measurement so that no hash is cached.

    python -m benchmarks.inprocess [--quick] [--rounds N] [--count N] [--json PATH]
"""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from asgi_ws_handshake import HandshakeMiddleware, HandshakePolicy, MemorySink, MemoryStore
from asgi_ws_handshake.middleware import ASGIApp, Message, Scope
from benchmarks.common import (
    alternate,
    emit,
    median,
    paired,
    parser,
    spread,
    table,
    verdict,
)

ALLOWED = ["https://app.example.com", "https://*.example.com"]
CHANNELS_ALLOWED = ["https://app.example.com", "https://.example.com"]  # Channels' spelling
ORIGIN = "https://app.example.com"
SUBPROTOCOLS = ["graphql-transport-ws", "graphql-ws"]

_CONNECT: Message = {"type": "websocket.connect"}
_ACCEPT: Message = {"type": "websocket.accept"}
_HTTP_START: Message = {"type": "http.response.start", "status": 204, "headers": []}


async def receive() -> Message:
    return _CONNECT


async def send(message: Message) -> None:
    return None


async def minimal_app(scope: Scope, receive: Any, send: Any) -> None:
    """Accept every socket (the app under test does nothing else)."""
    if scope["type"] == "websocket":
        await receive()
        await send(_ACCEPT)
    else:
        await send(_HTTP_START)


def passthrough(app: ASGIApp) -> ASGIApp:
    """The cost of one extra ASGI function call: the yardstick for the http scope."""

    async def wrapper(scope: Scope, receive: Any, send: Any) -> None:
        await app(scope, receive, send)

    return wrapper


class Passthrough:
    """A do-nothing middleware class, as Starlette's are written: one extra ``__call__``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def websocket_scope(key: str, origin: str = ORIGIN) -> Scope:
    """A websocket scope as uvicorn builds it for a browser's handshake."""
    headers = [
        (b"host", b"app.example.com"),
        (b"connection", b"Upgrade"),
        (b"pragma", b"no-cache"),
        (b"cache-control", b"no-cache"),
        (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0"),
        (b"upgrade", b"websocket"),
        (b"origin", origin.encode()),
        (b"sec-websocket-version", b"13"),
        (b"accept-encoding", b"gzip, deflate, br"),
        (b"accept-language", b"en-GB,en;q=0.9"),
        (b"cookie", b"session=0123456789abcdef"),
        (b"sec-websocket-key", key.encode()),
        (b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits"),
        (b"sec-websocket-protocol", b"graphql-transport-ws"),
    ]
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": "wss",
        "server": ("10.0.0.2", 8000),
        "client": ("203.0.113.7", 51234),
        "root_path": "",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "query_string": b"",
        "headers": headers,
        "subprotocols": ["graphql-transport-ws"],
        "state": {},
        "extensions": {"websocket.http.response": {}},
    }


#: A browser's handshake header lines as they arrive, names in the client's spelling.
BROWSER_LINES = (
    ("Host", "app.example.com"),
    ("Connection", "Upgrade"),
    ("Pragma", "no-cache"),
    ("Cache-Control", "no-cache"),
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0"),
    ("Upgrade", "websocket"),
    ("Origin", "{origin}"),
    ("Sec-WebSocket-Version", "13"),
    ("Accept-Encoding", "gzip, deflate, br"),
    ("Accept-Language", "en-GB,en;q=0.9"),
    ("Cookie", "session=0123456789abcdef"),
    ("Sec-WebSocket-Key", "{key}"),
    ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),
    ("Sec-WebSocket-Protocol", "graphql-transport-ws"),
)


def fresh_websocket_scope(key: str, origin: str = ORIGIN) -> Scope:
    """``websocket_scope`` with its header objects built for this request, as servers build
    them: every name and value a new ``bytes`` (names lowercased from the wire, as uvicorn's
    httptools backend does with ``name.lower()``), so no hash of them is cached yet. The
    literal constants of ``websocket_scope`` are shared by every scope and hashed once.
    """
    scope = websocket_scope(key, origin)
    scope["headers"] = [
        (name.encode("latin-1").lower(), value.format(key=key, origin=origin).encode("latin-1"))
        for name, value in BROWSER_LINES
    ]
    return scope


def http_scope() -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": "/api/items",
        "raw_path": b"/api/items",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"app.example.com"), (b"accept", b"*/*")],
        "client": ("203.0.113.7", 51234),
        "server": ("10.0.0.2", 8000),
        "state": {},
    }


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def full_policy() -> HandshakePolicy:
    return HandshakePolicy(allow_origins=ALLOWED, subprotocols=SUBPROTOCOLS, key_reuse="flag")


def guarded(app: ASGIApp = minimal_app) -> HandshakeMiddleware:
    """The full policy, an in-memory audit sink and key-reuse store."""
    return HandshakeMiddleware(app, policy=full_policy(), audit=MemorySink(), store=MemoryStore())


def channels_validator(app: ASGIApp = minimal_app) -> ASGIApp | None:
    """Django Channels' OriginValidator with the same origins, or None when not installed."""
    try:
        import django
        from django.conf import settings

        if not settings.configured:
            settings.configure(ALLOWED_HOSTS=["*"], INSTALLED_APPS=[], USE_TZ=True)
            django.setup()
        from channels.security.websocket import OriginValidator
    except ImportError:
        return None
    validator: ASGIApp = OriginValidator(app, CHANNELS_ALLOWED)
    return validator


_LOOP: asyncio.AbstractEventLoop | None = None


def _loop() -> asyncio.AbstractEventLoop:
    global _LOOP
    if _LOOP is None:
        _LOOP = asyncio.new_event_loop()
    return _LOOP


async def _calls(app: ASGIApp, scopes: Sequence[Scope]) -> float:
    """Await ``app`` once per scope inside one task; return the seconds it took."""
    start = time.perf_counter()
    for scope in scopes:
        await app(scope, receive, send)
    return time.perf_counter() - start


#: Memory a server's other work touches between two handshakes, in cold mode.
_ELSEWHERE = bytearray(8 * 2**20)
_ELSEWHERE_OBJECTS: list[dict[str, Any]] = [{"n": n, "s": str(n)} for n in range(20_000)]


def _elsewhere(scope: Scope) -> None:
    """Evict the caches the way a server's other work does, then touch ``scope`` as a server
    that has just built it would (its headers are fresh in a real server)."""
    _ELSEWHERE[::64] = bytes(len(_ELSEWHERE) // 64)
    for item in _ELSEWHERE_OBJECTS[::5]:
        item["n"] += 1
    for name, value in scope["headers"]:
        len(name) + len(value)
    for key in scope:
        scope[key]


async def _cold_calls(app: ASGIApp, scopes: Sequence[Scope]) -> float:
    """Like ``_calls``, but caches are evicted before each call and only the calls are timed."""
    total = 0.0
    for scope in scopes:
        _elsewhere(scope)
        start = time.perf_counter()
        await app(scope, receive, send)
        total += time.perf_counter() - start
    return total


def drive(app: ASGIApp, scope: Scope) -> None:
    """Run one ASGI call to completion on the benchmark's event loop."""
    _loop().run_until_complete(_calls(app, [scope]))


def timed(
    make_app: Callable[[], ASGIApp],
    scopes: Sequence[Scope] | Callable[[], Sequence[Scope]],
    cold: bool = False,
) -> Callable[[], float]:
    """A measurement: a fresh app (empty store), then microseconds per call over ``scopes``
    (or over new scopes from ``scopes()`` each time, built before the clock starts).

    The calls run back to back in one task on an event loop (the middleware may use
    ``asyncio.timeout``); ``receive`` and ``send`` never suspend, so no loop iteration, socket
    or scheduling cost is counted, only the ASGI callables themselves.
    """

    def measure() -> float:
        app = make_app()
        scopes_ = scopes() if callable(scopes) else scopes
        drive(app, scopes_[0])  # warm: first call paths, caches
        gc.collect()
        gc.disable()
        try:
            calls = _cold_calls if cold else _calls
            elapsed = _loop().run_until_complete(calls(app, scopes_[1:]))
        finally:
            gc.enable()
        return elapsed / (len(scopes_) - 1) * 1e6

    return measure


def check_outcomes() -> None:
    """Make sure each variant does what the benchmark claims (accepts, refuses)."""
    sink = MemorySink()
    mw = HandshakeMiddleware(minimal_app, policy=full_policy(), audit=sink, store=MemoryStore())
    drive(mw, websocket_scope(new_key()))
    drive(mw, websocket_scope(new_key(), origin="https://evil.example.net"))
    outcomes = [(e.outcome, e.reason, e.subprotocol) for e in sink.events]
    expected = [
        ("accepted", None, "graphql-transport-ws"),
        ("rejected", "origin_not_allowed", None),
    ]
    if outcomes != expected:
        raise RuntimeError(f"unexpected outcomes {outcomes!r}")


def run(rounds: int, count: int, cold_count: int | None = None) -> dict[str, Any]:
    check_outcomes()
    scopes = [websocket_scope(new_key()) for _ in range(count + 1)]
    cold_scopes = scopes[: (cold_count or max(20, count // 7)) + 1]
    refused = [websocket_scope(new_key(), origin="https://evil.example.net") for _ in scopes]
    # An http call costs a tenth of a handshake: ten times as many keep the timer noise out.
    https = [http_scope() for _ in range(len(scopes) * 10)]
    channels = channels_validator()

    accept_variants: dict[str, Callable[[], float]] = {
        "bare": timed(lambda: minimal_app, scopes),
        "ours": timed(guarded, scopes),
        "ours_refused": timed(guarded, refused),
        "http_bare": timed(lambda: minimal_app, https),
        "http_ours": timed(guarded, https),
        "http_wrapper": timed(lambda: passthrough(minimal_app), https),
        "http_class": timed(lambda: Passthrough(minimal_app), https),
        "bare_cold": timed(lambda: minimal_app, cold_scopes, cold=True),
        "ours_cold": timed(guarded, cold_scopes, cold=True),
    }

    def fresh() -> list[Scope]:  # new header objects every measurement: no hash cached yet
        return [fresh_websocket_scope(new_key()) for _ in range(count + 1)]

    accept_variants["fresh_bare"] = timed(lambda: minimal_app, fresh)
    accept_variants["fresh_ours"] = timed(guarded, fresh)
    if channels is not None:
        validator = channels
        accept_variants["channels"] = timed(lambda: validator, scopes)
        accept_variants["channels_cold"] = timed(lambda: validator, cold_scopes, cold=True)
        accept_variants["fresh_channels"] = timed(lambda: validator, fresh)
    raw = alternate(accept_variants, rounds)
    med = {name: median(values) for name, values in raw.items()}
    ours_added = paired(raw["ours"], raw["bare"])
    result: dict[str, Any] = {
        "benchmark": "inprocess",
        "rounds": rounds,
        "count": count,
        "us_per_call": med,
        "spread": {name: spread(values) for name, values in raw.items()},
        "ours_added_us": ours_added,
        "ours_cold_added_us": paired(raw["ours_cold"], raw["bare_cold"]),
        "cold_count": len(cold_scopes) - 1,
        "refused_us": med["ours_refused"],
        "http_added_us": paired(raw["http_ours"], raw["http_bare"]),
        "http_wrapper_added_us": paired(raw["http_wrapper"], raw["http_bare"]),
        "http_class_added_us": paired(raw["http_class"], raw["http_bare"]),
        "fresh_ours_added_us": paired(raw["fresh_ours"], raw["fresh_bare"]),
    }
    result["http_ratio_to_class_call"] = result["http_added_us"] / max(
        result["http_class_added_us"], 1e-9
    )
    result["http_ratio_to_one_call"] = result["http_added_us"] / max(
        result["http_wrapper_added_us"], 1e-9
    )
    if channels is not None:
        channels_added = paired(raw["channels"], raw["bare"])
        result["channels_added_us"] = channels_added
        result["ratio_to_channels"] = ours_added / channels_added
        result["channels_cold_added_us"] = paired(raw["channels_cold"], raw["bare_cold"])
        result["ratio_to_channels_cold"] = (
            result["ours_cold_added_us"] / result["channels_cold_added_us"]
        )
        result["fresh_channels_added_us"] = paired(raw["fresh_channels"], raw["fresh_bare"])
        result["fresh_ratio_to_channels"] = (
            result["fresh_ours_added_us"] / result["fresh_channels_added_us"]
        )
    return result


def render(result: dict[str, Any]) -> str:
    med = result["us_per_call"]
    rows: list[list[object]] = [
        ["bare app, accepted handshake", f"{med['bare']:.2f}", "", ""],
        [
            "asgi-ws-handshake full policy, accepted",
            f"{med['ours']:.2f}",
            f"{result['ours_added_us']:.2f}",
            "",
        ],
    ]
    if "channels" in med:
        rows.append(
            [
                "Channels OriginValidator (origin only), accepted",
                f"{med['channels']:.2f}",
                f"{result['channels_added_us']:.2f}",
                "",
            ]
        )
        ratio = result["ratio_to_channels"]
        rows.append(
            [
                "ours / Channels added cost (target <= 0.5)",
                "",
                "",
                f"{ratio:.2f} {verdict(ratio <= 0.5)}",
            ]
        )
    rows.append(
        [
            "cold caches: asgi-ws-handshake, accepted",
            f"{med['ours_cold']:.2f}",
            f"{result['ours_cold_added_us']:.2f}",
            "",
        ]
    )
    if "channels_cold" in med:
        rows.append(
            [
                "cold caches: Channels OriginValidator, accepted",
                f"{med['channels_cold']:.2f}",
                f"{result['channels_cold_added_us']:.2f}",
                f"{result['ratio_to_channels_cold']:.2f}",
            ]
        )
    rows.append(
        [
            "fresh header objects: asgi-ws-handshake, accepted",
            f"{med['fresh_ours']:.2f}",
            f"{result['fresh_ours_added_us']:.2f}",
            "",
        ]
    )
    if "fresh_channels" in med:
        rows.append(
            [
                "fresh header objects: Channels OriginValidator, accepted",
                f"{med['fresh_channels']:.2f}",
                f"{result['fresh_channels_added_us']:.2f}",
                f"{result['fresh_ratio_to_channels']:.2f}",
            ]
        )
    rows += [
        ["asgi-ws-handshake, refused (403, app not called)", f"{med['ours_refused']:.2f}", "", ""],
        ["bare app, http request", f"{med['http_bare']:.2f}", "", ""],
        [
            "one pass-through call (closure), http",
            f"{med['http_wrapper']:.2f}",
            f"{result['http_wrapper_added_us']:.2f}",
            "",
        ],
        [
            "one pass-through middleware class, http",
            f"{med['http_class']:.2f}",
            f"{result['http_class_added_us']:.2f}",
            "",
        ],
        [
            "asgi-ws-handshake, http",
            f"{med['http_ours']:.2f}",
            f"{result['http_added_us']:.2f}",
            "",
        ],
    ]
    for label, key in (
        ("closure", "http_ratio_to_one_call"),
        ("class", "http_ratio_to_class_call"),
    ):
        ratio = result[key]
        rows.append(
            [
                f"http added / pass-through {label} added (target <= 1)",
                "",
                "",
                f"{ratio:.2f} {verdict(ratio <= 1.0)}",
            ]
        )
    head = (
        f"In-process cost per call, median of {result['rounds']} rounds x "
        f"{result['count']} calls (µs; 'added' is paired per round against the bare app)"
    )
    return head + "\n" + table(["variant", "µs/call", "µs added", "ratio"], rows)


#: (rounds, count)
FULL = (15, 2000)
QUICK = (3, 50)


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--rounds", type=int, default=FULL[0])
    p.add_argument("--count", type=int, default=FULL[1])
    args = p.parse_args(argv)
    rounds, count = QUICK if args.quick else (args.rounds, args.count)
    result = run(rounds, count)
    emit(result, render(result), args.json)


if __name__ == "__main__":
    main()
