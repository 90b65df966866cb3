"""The request caches through the middleware (review items 4-5 of issue #13): bounded in
bytes, so long values are never kept; an entry never shared across value types.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import pytest

from asgi_ws_handshake import HandshakeMiddleware, HandshakePolicy, MemorySink
from tests.asgi import Script, ws_scope
from tests.support import new_key


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


@pytest.mark.parametrize("odd", [memoryview, bytearray, type("Bytes", (bytes,), {})])
async def test_an_origin_of_another_type_is_judged_as_the_bytes_it_holds(odd: Any) -> None:
    policy = HandshakePolicy(allow_origins=["https://app.test"], allow_missing_origin=True)
    sink = MemorySink()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    guarded = HandshakeMiddleware(app, policy=policy, audit=sink)
    for value in (odd(b"https://evil.test"), b"https://evil.test"):
        scope = ws_scope(origin=None, key=new_key(), extra=[(b"origin", value)])
        script = Script()
        await guarded(scope, script.receive, script.send)
        # Never "no Origin: accept": the odd value is the origin it spells, and refused.
        assert script.sent[0]["status"] == 403
    assert [e.reason for e in sink.events] == ["origin_not_allowed", "origin_not_allowed"]
