"""Clients that vanish at every step of the handshake, against a real uvicorn: raw sockets
dropped at each step, with a slow async audit sink; exactly one event per complete request,
no task or audit work left behind (tests/adapter/test_vanish.py does the same in process).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.soak_support import log_problems, wait_diag
from tests.support import handshake_lines, new_key, running, uvicorn_argv


@pytest.mark.parametrize("ws", ["websockets-sansio", "wsproto"])
def test_real_server_vanishing_clients(ws: str, tmp_path: Path) -> None:
    """Raw sockets dropped at each step against uvicorn, with a slow async audit sink."""
    argv = uvicorn_argv(ws, "tests.apps.soak:app")
    env = {"WSH_SLOW_SINK": "0.3"}
    with running(f"vanish-{ws}", argv, tmp_path, env=env) as server:
        baseline = wait_diag(server, pending_audits=0)
        complete = 0
        for n in range(20):
            step = n % 4
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            request = handshake_lines(
                server.host,
                path=f"/ws/vanish-{n}",
                origin="http://allowed.test" if n // 4 % 2 else "http://evil.test",
                key=new_key(),
            )
            if step == 1:  # half a request head
                sock.sendall(request[:30])
            elif step >= 2:  # the whole head; step 3 also waits for the answer's first bytes
                sock.sendall(request)
                complete += 1
                if step == 3:
                    sock.recv(1)
            sock.close()  # step 0: connect and vanish
        events = server.wait_events(complete)
        after = wait_diag(server, pending_audits=0, tasks=baseline["tasks"])
        assert len(events) == complete
        assert len({e["id"] for e in events}) == complete
        assert after["tasks"] == baseline["tasks"]
        assert after["pending_audits"] == 0
        assert after["slow_sink_started"] == complete
    assert {e["outcome"] for e in events} == {"accepted", "rejected"}
    assert log_problems(server, events) == []
