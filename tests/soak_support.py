"""Helpers for the real-server soak and vanishing-client tests: the ``tests.apps.soak``
diagnostic endpoint and the server-log check.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from tests.support import Server

#: uvicorn's websockets-sansio and wsproto backends log this ERROR after every refusal sent
#: with the websocket.http.response extension (they do not count the denial response as
#: completing the handshake): a uvicorn bug, not ours, so it is counted instead of hidden.
UVICORN_SPURIOUS = "ASGI callable returned without completing handshake."


def diag(server: Server) -> dict[str, Any]:
    """GET /__diag from a server running ``tests.apps.soak``."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /__diag HTTP/1.1\r\nHost: diag\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return dict(json.loads(body))


def wait_diag(server: Server, timeout: float = 10.0, **expected: int) -> dict[str, Any]:
    """Poll /__diag until every ``expected`` field has its value (or the time is up)."""
    deadline = time.monotonic() + timeout
    while True:
        found = diag(server)
        if all(found[k] == v for k, v in expected.items()) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def log_problems(server: Server, events: list[dict[str, Any]]) -> list[str]:
    """Server-log lines that show an error, except uvicorn's known spurious one.

    The spurious line is allowed at most once per refusal sent as an HTTP response; any more
    of them, or any other ERROR, traceback or exception line, is returned.
    """
    lines = server.log().splitlines()
    spurious = [line for line in lines if UVICORN_SPURIOUS in line]
    problems = [
        line
        for line in lines
        if UVICORN_SPURIOUS not in line
        and ("ERROR" in line or "Traceback" in line or "Exception" in line)
    ]
    denials = sum(1 for event in events if event["denial"] == "http_response")
    if len(spurious) > denials:
        problems.append(f"{len(spurious)} x {UVICORN_SPURIOUS!r} for {denials} HTTP refusals")
    return problems
