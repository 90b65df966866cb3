"""Scopes as particular servers build them, through the adapter with scripted receive/send.

The real servers run in ``tests/servers/test_servers.py``; these pin the scope shapes that
once broke the middleware there, so a failure points at the adapter rather than at a server
process.
"""

from __future__ import annotations

from asgi_ws_handshake import Outcome
from tests.asgi import run, ws_scope

#: Three Sec-WebSocket-Protocol lines; hypercorn lists in ``subprotocols`` only what it parsed.
THREE_LINES = [
    (b"sec-websocket-protocol", b"x1"),
    (b"sec-websocket-protocol", b"chat.v1"),
    (b"sec-websocket-protocol", b"x2"),
]


async def test_subprotocol_the_server_cannot_send_is_refused_visibly() -> None:
    # hypercorn keeps the last line only and raises in send on anything else, dropping the
    # connection with no answer: refuse with 500 before the server gets the accept.
    result = await run(None, ws_scope(extra=THREE_LINES, subprotocols=["x2"]))
    assert result.script.types() == [
        "websocket.http.response.start",
        "websocket.http.response.body",
    ]
    assert result.script.sent[0]["status"] == 500
    (event,) = result.sink.events
    assert (event.outcome, event.reason, event.status) == (Outcome.REJECTED, "internal_error", 500)
    assert "chat.v1" not in event.detail  # details never carry subprotocol values


async def test_subprotocol_the_server_lists_is_sent() -> None:
    result = await run(None, ws_scope(extra=THREE_LINES, subprotocols=["x1", "chat.v1", "x2"]))
    assert result.script.sent == [{"type": "websocket.accept", "subprotocol": "chat.v1"}]
    assert result.sink.events[0].outcome is Outcome.ACCEPTED
