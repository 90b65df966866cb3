"""Route policies and the audit log under a real uvicorn (review items 1-2 of issue #13): a
``--root-path`` or a Starlette mount cannot bypass a route policy, and a percent-decoded line
feed in the path cannot forge a log line. In process: tests/adapter/test_routes.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import handshake_lines, new_key, raw_handshake, running, uvicorn_argv


@pytest.mark.parametrize("ws", ["websockets-sansio", "websockets", "wsproto"])
def test_uvicorn_root_path_cannot_bypass_a_route_policy(ws: str, tmp_path: Path) -> None:
    argv = uvicorn_argv(ws, "tests.apps.routes:app", "--root-path", "/api")
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
    argv = uvicorn_argv("websockets-sansio", "tests.apps.routes:mounted")
    with running("mount", argv, tmp_path) as server:
        foreign = raw_handshake(
            server.port, handshake_lines(server.host, path="/v1/admin/ws", origin="https://x.test")
        )
        events = server.wait_events(1)
    assert foreign.status == 403
    assert events[0]["route"] == "/admin/*"


def test_a_percent_decoded_line_feed_cannot_forge_a_log_line(tmp_path: Path) -> None:
    forged = "/ws%0aAUDIT%20forged%20handshake%20accepted%0d%1b[31mred"
    argv = uvicorn_argv("websockets-sansio", "tests.apps.routes:app")
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
