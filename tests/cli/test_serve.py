"""``serve``: any ASGI app behind the middleware, configured by a policy file, real clients."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin, Subprotocol

from tests.apps.main import ALLOWED_ORIGIN
from tests.support import (
    ROOT,
    Server,
    handshake_lines,
    new_key,
    raw_handshake,
    running,
    serve_argv,
)

POLICY = f"""
allow_origins = ["{ALLOWED_ORIGIN}"]
subprotocols = ["chat.v2", "chat.v1"]
key_reuse = "reject"

[routes."/admin/*"]
allow_origins = ["https://admin.allowed.test"]

[[audit]]
type = "jsonl"
path = "served.audit.jsonl"
"""


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serve")
    (path / "policy.toml").write_text(POLICY)
    return path


@pytest.fixture(scope="module")
def served(policy_dir: Path) -> Iterator[Server]:
    with running("serve", serve_argv(policy_dir / "policy.toml"), policy_dir) as server:
        yield server


def open_ws(url: str, origin: str, subprotocols: Sequence[str] = ()) -> ClientConnection:
    return connect(
        url,
        origin=Origin(origin),
        subprotocols=[Subprotocol(p) for p in subprotocols] or None,
        open_timeout=10,
    )


def refusal(url: str, origin: str) -> tuple[int, bytes]:
    with pytest.raises(InvalidStatus) as caught, open_ws(url, origin):
        pass
    return caught.value.response.status_code, bytes(caught.value.response.body or b"")


def audit(policy_dir: Path, reason: str | None = None) -> list[dict[str, object]]:
    """The events of the file the policy names, once one has ``reason`` (audits follow
    the answer, so a client can see the response before the line is written)."""
    deadline = time.monotonic() + 5
    while True:
        path = policy_dir / "served.audit.jsonl"
        events = [json.loads(line) for line in path.read_text().splitlines()]
        if reason is None or any(e["reason"] == reason for e in events):
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"no {reason!r} event in {events}")
        time.sleep(0.02)


def test_allowed_origin_connects_through_the_policy(served: Server, policy_dir: Path) -> None:
    with open_ws(served.url("/ws"), ALLOWED_ORIGIN, ["chat.v1"]) as ws:
        assert ws.subprotocol == "chat.v1"
        welcome = json.loads(ws.recv(timeout=5))
        assert welcome["subprotocol"] == "chat.v1"
        assert welcome["route"] == "default"
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
    events = audit(policy_dir)
    assert any(e["outcome"] == "accepted" and e["path"] == "/ws" for e in events)


def test_foreign_origin_and_route_policy_refuse(served: Server, policy_dir: Path) -> None:
    assert refusal(served.url("/ws"), "https://evil.test") == (403, b"origin_not_allowed\n")
    # /admin/* has its own policy: the default's allowed origin is not enough there.
    assert refusal(served.url("/admin/x"), ALLOWED_ORIGIN)[0] == 403
    with open_ws(served.url("/admin/x"), "https://admin.allowed.test") as ws:
        assert json.loads(ws.recv(timeout=5))["route"] == "/admin/*"
    # key_reuse = "reject" from the file.
    request = handshake_lines(served.host, path="/ws", origin=ALLOWED_ORIGIN, key=new_key())
    assert raw_handshake(served.port, request).status == 101
    assert raw_handshake(served.port, request).status == 400
    reasons = [e["reason"] for e in audit(policy_dir, "key_reused")]
    assert "origin_not_allowed" in reasons


def test_serve_with_workers_uses_the_factory(policy_dir: Path) -> None:
    argv = serve_argv(policy_dir / "policy.toml", "--workers", "2")
    with running("serve-workers", argv, policy_dir) as server:
        with open_ws(server.url("/ws"), ALLOWED_ORIGIN) as ws:
            assert json.loads(ws.recv(timeout=5))["origin"] == ALLOWED_ORIGIN
        assert refusal(server.url("/ws"), "https://evil.test")[0] == 403
    assert "each worker has its own memory store" in server.log()


@pytest.mark.parametrize(
    ("app", "policy", "message"),
    [
        (
            "tests.apps.main:downstream",
            'key_reuse = "maybe"',
            "policy.toml: key_reuse: expected one of",
        ),
        ("tests.apps.main:nothing", "", "cannot load the app 'tests.apps.main:nothing'"),
    ],
)
def test_serve_refuses_bad_input_before_starting(
    tmp_path: Path, app: str, policy: str, message: str
) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(policy)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "asgi_ws_handshake",
            "serve",
            app,
            "--policy",
            str(path),
            "--port",
            "9",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert done.returncode == 1
    assert message in done.stderr
