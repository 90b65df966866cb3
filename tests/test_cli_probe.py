"""The probe against real uvicorn servers (protected and not) and against broken peers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from asgi_ws_handshake.cli import main
from asgi_ws_handshake.cli.probe import ProbeError, ProbeOptions, parse_target, run_probe
from tests.app import ALLOWED_ORIGIN
from tests.support import ROOT, Server, running, uvicorn_argv

MUST_REFUSE = {"foreign_origin", "key_short", "key_not_base64", "two_keys", "version_8"}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asgi_ws_handshake", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def protected(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # wsproto lets malformed handshakes through to the app, so the middleware answers them all.
    argv = uvicorn_argv("wsproto", "tests.app:app")
    with running("probe-protected", argv, tmp_path_factory.mktemp("protected")) as server:
        yield server


@pytest.fixture(scope="module")
def unprotected(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    argv = uvicorn_argv("wsproto", "tests.app:downstream")
    with running("probe-open", argv, tmp_path_factory.mktemp("open")) as server:
        yield server


def test_protected_server_passes_every_case(protected: Server) -> None:
    done = cli(
        "probe",
        protected.url("/ws"),
        "--origin",
        ALLOWED_ORIGIN,
        "--subprotocol",
        "chat.v1",
        "--json",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    verdicts = {case["name"]: (case["verdict"], case["why"]) for case in report["cases"]}
    assert all(v == "pass" for v, _ in verdicts.values()), verdicts
    assert report["ok"] is True
    assert len(verdicts) == 15
    cases = {case["name"]: case for case in report["cases"]}
    assert cases["foreign_origin"]["status"] == 403
    assert cases["foreign_origin"]["body"].strip() == "origin_not_allowed"
    assert cases["version_8"]["headers"]["sec-websocket-version"] == ["13"]
    assert cases["valid"]["status"] == 101
    assert cases["valid"]["headers"]["sec-websocket-protocol"] == ["chat.v1"]
    assert "Origin: http://allowed.test" in cases["valid"]["sent"]


def test_unprotected_server_fails_and_exits_non_zero(unprotected: Server) -> None:
    done = cli("probe", unprotected.url("/ws"))
    assert done.returncode == 1, done.stdout + done.stderr
    table = done.stdout
    assert "FAILED" in table.splitlines()[-1]
    rows = {line.split()[0]: line for line in table.splitlines()[3:-2] if line.strip()}
    for name in ("foreign_origin", "key_short", "key_not_base64", "two_keys"):
        assert " FAIL " in rows[name], rows[name]
    assert " PASS " in rows["valid"]
    assert " WARN " in rows["null_origin"]


def test_same_origin_default_and_reused_key_warning(protected: Server) -> None:
    # "/flag" allows only ALLOWED_ORIGIN and flags (does not refuse) reused keys.
    report = run_probe(protected.url("/flag"), ProbeOptions(origin=ALLOWED_ORIGIN))
    verdicts = {case.name: case.verdict for case in report.cases}
    assert verdicts["reused_key"] == "warn"
    assert report.ok
    # Without --origin the probe sends the target's own origin, which "/flag" refuses.
    report = run_probe(protected.url("/flag"))
    assert report.cases[0].verdict == "fail"
    assert "valid handshake was refused with 403" in report.cases[0].why


# ---- broken peers: one-shot raw servers ---------------------------------------------------


def raw_server(handler: Callable[[socket.socket], None]) -> tuple[int, threading.Thread]:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        with listener:
            listener.settimeout(10)
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(5)
                handler(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread


def read_head(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def not_http(conn: socket.socket) -> None:
    read_head(conn)
    conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")


def plain_http(conn: socket.socket) -> None:
    conn.recv(4096)  # a TLS ClientHello, answered in plain HTTP
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


def silent(conn: socket.socket) -> None:
    read_head(conn)
    conn.recv(1)  # until the probe gives up


def endless(conn: socket.socket) -> None:
    read_head(conn)
    try:
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\n")
        for _ in range(10_000):
            conn.sendall(b"X-Filler: " + b"a" * 100 + b"\r\n")
    except OSError:
        pass  # the probe stopped reading


def wrong_accept(conn: socket.socket) -> None:
    read_head(conn)
    conn.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("handler", "scheme", "kind", "message"),
    [
        (not_http, "ws", "not_http", "did not answer in HTTP/1.1"),
        (silent, "ws", "timeout", "no answer from 127.0.0.1"),
        (endless, "ws", "too_large", "head over"),
        (plain_http, "wss", "tls", "TLS handshake with 127.0.0.1"),
    ],
)
def test_broken_peers_give_clear_errors(
    handler: Callable[[socket.socket], None],
    scheme: str,
    kind: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port, thread = raw_server(handler)
    url = f"{scheme}://127.0.0.1:{port}/ws"
    status = main(["probe", url, "--timeout", "0.5"])
    thread.join(10)
    err = capsys.readouterr().err
    assert status == 2
    assert message in err, err
    port, thread = raw_server(handler)
    with pytest.raises(ProbeError) as caught:
        run_probe(f"{scheme}://127.0.0.1:{port}/ws", ProbeOptions(timeout=0.5))
    thread.join(10)
    assert caught.value.kind == kind


def test_unreachable_host(capsys: pytest.CaptureFixture[str]) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    assert main(["probe", f"ws://127.0.0.1:{port}/"]) == 2
    assert f"cannot connect to 127.0.0.1:{port}" in capsys.readouterr().err


def test_wrong_accept_fails(capsys: pytest.CaptureFixture[str]) -> None:
    # Answer only the first (valid) handshake, with the RFC example Accept for another key.
    port, thread = raw_server(wrong_accept)
    report = run_probe(f"ws://127.0.0.1:{port}/", ProbeOptions(timeout=0.5))
    thread.join(10)
    assert report.cases[0].verdict == "fail"
    assert "wrong Sec-WebSocket-Accept" in report.cases[0].why
    assert not report.ok


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ws://example.com/chat?x=1", ("example.com", 80, "/chat?x=1", "example.com")),
        ("wss://example.com:8443", ("example.com", 8443, "/", "example.com:8443")),
        ("ws://[::1]:9000/", ("::1", 9000, "/", "[::1]:9000")),
    ],
)
def test_parse_target(url: str, expected: tuple[Any, ...]) -> None:
    target = parse_target(url)
    assert (target.host, target.port, target.resource, target.host_header) == expected


@pytest.mark.parametrize("url", ["http://example.com/", "ws:///nohost", "ws://h:99999/"])
def test_parse_target_refuses(url: str) -> None:
    with pytest.raises(ProbeError) as caught:
        parse_target(url)
    assert caught.value.kind == "usage"


def test_probe_refuses_managed_headers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "ws://127.0.0.1:9/", "--header", "Origin: https://x"]) == 2
    assert "set by the probe" in capsys.readouterr().err


def test_secret_headers_are_redacted_in_the_report(protected: Server) -> None:
    options = ProbeOptions(origin=ALLOWED_ORIGIN, headers=(("Cookie", "session=s3cret"),))
    report = run_probe(protected.url("/ws"), options)
    assert "Cookie: <redacted>" in report.cases[0].sent
    assert "s3cret" not in json.dumps(report.to_dict())


def test_probe_module_is_stdlib_only() -> None:
    code = (
        "import sys; import asgi_ws_handshake.cli.probe, asgi_ws_handshake.cli; "
        "bad = [m for m in ('starlette', 'uvicorn', 'websockets') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
