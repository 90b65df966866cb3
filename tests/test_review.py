"""The defects a security review found (issue #13, items 1-5), each through the layer where
it lived: route policies under a root_path, log lines forged through the path, IDNA as
browsers do it, caches bounded in bytes, and cache entries never shared across value types.
"""

from __future__ import annotations

import builtins
import gc
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_handshake import HandshakeMiddleware, HandshakePolicy, MemorySink
from asgi_ws_handshake.request import HandshakeRequest, route_path
from tests.asgi import Script, ws_scope
from tests.support import handshake_lines, new_key, raw_handshake, running, uvicorn_argv

# -- 1. route policies match the path the router sees ------------------------------------


@pytest.mark.parametrize(
    ("path", "root", "expected"),
    [
        ("/api/admin/ws", "/api", "/admin/ws"),  # uvicorn: path = root_path + path
        ("/api", "/api", ""),
        ("/apiadmin/ws", "/api", "/apiadmin/ws"),  # not on a segment boundary: as it is
        ("/admin/ws", "/api", "/admin/ws"),  # a server that does not prefix
        ("/admin/ws", "", "/admin/ws"),
    ],
)
def test_route_path_is_the_path_starlette_routes_on(path: str, root: str, expected: str) -> None:
    assert route_path({"path": path, "root_path": root}) == expected


async def test_a_route_policy_holds_under_a_root_path_and_a_mount_in_process() -> None:
    sink = MemorySink()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    guarded = HandshakeMiddleware(
        app,
        policy=HandshakePolicy(allow_any_origin=True),
        routes={"/admin/*": HandshakePolicy(allow_origins=["https://admin.test"])},
        audit=sink,
    )
    for root in ("", "/api", "/api/v1"):
        scope = ws_scope(origin="https://evil.test", path=f"{root}/admin/ws")
        scope["root_path"] = root
        script = Script()
        await guarded(scope, script.receive, script.send)
        assert script.sent[0]["status"] == 403, root
    assert {e.route for e in sink.events} == {"/admin/*"}


@pytest.mark.parametrize("ws", ["websockets-sansio", "websockets", "wsproto"])
def test_uvicorn_root_path_cannot_bypass_a_route_policy(ws: str, tmp_path: Path) -> None:
    argv = uvicorn_argv(ws, "tests.routes_app:app", "--root-path", "/api")
    with running(f"root-{ws}", argv, tmp_path) as server:
        foreign = raw_handshake(
            server.port, handshake_lines(server.host, path="/admin/ws", origin="https://x.test")
        )
        admin = raw_handshake(
            server.port,
            handshake_lines(
                server.host, path="/admin/ws", key=new_key(), origin="https://admin.test"
            ),
        )
        other = raw_handshake(
            server.port,
            handshake_lines(server.host, path="/ws", key=new_key(), origin="https://x.test"),
        )
        events = server.wait_events(3)
    assert (foreign.status, admin.status, other.status) == (403, 101, 101)
    assert [e["route"] for e in events] == ["/admin/*", "/admin/*", "default"]
    assert events[0]["path"] == "/api/admin/ws"  # the event keeps the full path


def test_a_starlette_mount_cannot_bypass_a_route_policy(tmp_path: Path) -> None:
    argv = uvicorn_argv("websockets-sansio", "tests.routes_app:mounted")
    with running("mount", argv, tmp_path) as server:
        foreign = raw_handshake(
            server.port, handshake_lines(server.host, path="/v1/admin/ws", origin="https://x.test")
        )
        events = server.wait_events(1)
    assert foreign.status == 403
    assert events[0]["route"] == "/admin/*"


# -- 2. log lines cannot be forged through the percent-decoded path ----------------------


def test_a_percent_decoded_line_feed_cannot_forge_a_log_line(tmp_path: Path) -> None:
    forged = "/ws%0aAUDIT%20forged%20handshake%20accepted%0d%1b[31mred"
    argv = uvicorn_argv("websockets-sansio", "tests.routes_app:app")
    with running("logs", argv, tmp_path) as server:
        response = raw_handshake(
            server.port, handshake_lines(server.host, path=forged, origin="https://x.test")
        )
        events = server.wait_events(1)
    assert response.status == 101
    assert events[0]["path"] == "/ws\nAUDIT forged handshake accepted\r\x1b[31mred"  # JSON: exact
    audit_lines = [line for line in server.log().splitlines() if line.startswith("AUDIT")]
    assert len(audit_lines) == 1, audit_lines  # one event, one line
    assert "\\nAUDIT forged" in audit_lines[0]
    assert "\x1b" not in server.log()


def test_escape_leaves_printable_text_alone_and_escapes_the_rest() -> None:
    from asgi_ws_handshake.sinks import escape

    assert escape("/chat/ü") == "/chat/ü"
    assert escape("a\nb\rc\x1b[0m\u2028") == "a\\nb\\rc\\x1b[0m\\u2028"


# -- 3. Unicode patterns as browsers encode them (UTS #46, non-transitional) -------------


def test_unicode_origin_patterns_are_encoded_as_browsers_do() -> None:
    pytest.importorskip("idna")
    policy = HandshakePolicy(allow_origins=["https://straße.de"], allow_hosts=["straße.de"])

    def decide(origin: str, host: str) -> str:
        request = HandshakeRequest.from_scope(
            ws_scope(origin=origin, host=host, key=new_key()) | {"type": "websocket"}
        )
        decision = policy.evaluate(request)
        return getattr(decision, "reason", "accepted")

    # What browsers send for straße.de (IDNA 2008): accepted.
    assert decide("https://xn--strae-oqa.de", "xn--strae-oqa.de") == "accepted"
    # strasse.de is another domain (IDNA 2003 would have mapped ß to ss): refused.
    assert decide("https://strasse.de", "xn--strae-oqa.de") == "origin_not_allowed"
    assert decide("https://xn--strae-oqa.de", "strasse.de") == "host_not_allowed"


def test_without_the_idna_extra_a_unicode_pattern_names_its_ascii_form(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_import = builtins.__import__

    def no_idna(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "idna":
            raise ImportError("No module named 'idna'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_idna)
    with pytest.raises(ValueError, match=r"xn--strae-oqa\.de") as caught:
        HandshakePolicy(allow_origins=["https://straße.de"])
    assert "idna extra" in str(caught.value)
    with pytest.raises(ValueError, match=r"xn--bcher-kva\.example"):
        HandshakePolicy(allow_hosts=["bücher.example"])


# -- 4. caches bounded in bytes: long values are never kept ------------------------------


async def test_long_origins_do_not_stay_in_memory() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("refused before the app")

    guarded = HandshakeMiddleware(app, policy=HandshakePolicy(), audit=[])

    async def flood(count: int) -> None:
        for n in range(count):
            origin = f"https://{n:06d}{'a' * 200_000}.test"  # ~200 KB, each distinct
            script = Script()
            await guarded(ws_scope(origin=origin, key=new_key()), script.receive, script.send)
            assert script.sent[0]["status"] == 403

    await flood(50)  # warm: every cache at its steady state
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await flood(1100)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # 1,100 x 200 KB would be 220 MB; nothing of them is kept.
    assert grown < 2_000_000, grown


# -- 5. a cache entry is never shared across value types ---------------------------------


@pytest.mark.parametrize("odd", [memoryview, bytearray, type("Bytes", (bytes,), {})])
async def test_an_origin_of_another_type_is_judged_as_the_bytes_it_holds(odd: Any) -> None:
    policy = HandshakePolicy(allow_origins=["https://app.test"], allow_missing_origin=True)
    sink = MemorySink()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    guarded = HandshakeMiddleware(app, policy=policy, audit=sink)
    for value in (odd(b"https://evil.test"), b"https://evil.test"):
        scope = ws_scope(origin=None, key=new_key())
        scope["headers"].append((b"origin", value))
        script = Script()
        await guarded(scope, script.receive, script.send)
        # Never "no Origin: accept": the odd value is the origin it spells, and refused.
        assert script.sent[0]["status"] == 403
    assert [e.reason for e in sink.events] == ["origin_not_allowed", "origin_not_allowed"]
