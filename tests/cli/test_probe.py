"""The probe against real uvicorn servers (protected and not) and against broken peers; the
lookalike origins it derives; its exit statuses, --fail-on and JSON document."""

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
from asgi_ws_handshake.cli.probe_origins import lookalikes, parse_origin
from tests.apps.main import ALLOWED_ORIGIN
from tests.support import ROOT, Server, running, uvicorn_argv


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
    argv = uvicorn_argv("wsproto", "tests.apps.main:app")
    with running("probe-protected", argv, tmp_path_factory.mktemp("protected")) as server:
        yield server


@pytest.fixture(scope="module")
def unprotected(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    argv = uvicorn_argv("wsproto", "tests.apps.main:downstream")
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
    # schema 2: "result" and "exit_status" replace version 1's "ok".
    assert (report["schema"], report["result"], report["exit_status"]) == (
        "asgi-ws-handshake/probe/2",
        "pass",
        0,
    )
    assert report["error"] is None
    assert report["advertised_versions"] == ["13"]
    # allowed.test has two labels: no sibling under a parent domain to tell a wildcard by.
    assert [skip["name"] for skip in report["skipped"]] == ["origin_sibling"]
    assert len(verdicts) == 23
    assert report["summary"] == {"pass": 23, "warn": 0, "fail": 0, "error": 0, "skipped": 1}
    cases = {case["name"]: case for case in report["cases"]}
    for name in ("foreign_origin", "origin_prefix", "origin_suffix", "origin_userinfo"):
        assert cases[name]["status"] == 403
        assert cases[name]["body"].strip() in ("origin_not_allowed", "origin_malformed")
    assert cases["origin_suffix"]["sent_summary"] == "Origin: http://evilallowed.test"
    assert cases["version_8"]["headers"]["sec-websocket-version"] == ["13"]
    # uvicorn's wsproto refuses version 99 itself, before the middleware: an empty 426.
    assert cases["version_99"]["why"] == "refused with 426, advertising 13"
    assert cases["valid"]["status"] == 101
    assert cases["valid"]["headers"]["sec-websocket-protocol"] == ["chat.v1"]
    assert "Origin: http://allowed.test" in cases["valid"]["sent"]


def test_unprotected_server_fails_and_exits_non_zero(unprotected: Server) -> None:
    done = cli("probe", unprotected.url("/ws"))
    assert done.returncode == 1, done.stdout + done.stderr
    table = done.stdout
    assert "FAILED" in table.splitlines()[-1]
    rows = {line.split()[0]: line for line in table.splitlines()[3:] if "  " in line}
    for name in ("foreign_origin", "key_short", "key_not_base64", "two_keys"):
        assert " FAIL " in rows[name], rows[name]
    assert " PASS " in rows["valid"]
    # Origin: null is as open as any origin (a sandboxed iframe sends it): a failure now.
    assert " FAIL " in rows["null_origin"]
    assert "as it accepts any origin (see foreign_origin)" in rows["origin_prefix"]


def test_same_origin_default_and_reused_key_warning(protected: Server) -> None:
    # "/flag" allows only ALLOWED_ORIGIN and flags (does not refuse) reused keys.
    report = run_probe(protected.url("/flag"), ProbeOptions(origin=ALLOWED_ORIGIN))
    verdicts = {case.name: case.verdict for case in report.cases}
    assert verdicts["reused_key"] == "warn"
    assert report.ok
    # Without --origin the probe sends the target's own origin, which "/flag" refuses: then
    # nothing else can be judged, and nothing else is sent.
    report = run_probe(protected.url("/flag"))
    assert [case.name for case in report.cases] == ["valid"]
    assert report.cases[0].verdict == "error"
    assert report.error is not None
    assert report.error.kind == "refused"
    assert "answered the valid handshake with 403 (origin_not_allowed)" in (report.error.message)
    assert report.exit_status() == report.exit_status("warn") == 2
    assert not report.ok


def test_refused_valid_handshake_is_exit_2_with_the_reason(
    protected: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["probe", protected.url("/flag")]) == 2
    out, err = capsys.readouterr()
    assert "pass the --origin, --subprotocol or --header" in err
    assert out.rstrip().endswith("1 case: 0 pass, 0 warn, 0 fail: CANNOT JUDGE (refused)")


def test_fail_on_warn_gates_warnings(protected: Server, capsys: pytest.CaptureFixture[str]) -> None:
    # "https://*.allowed.test" is allowed: subdomains and siblings of www.allowed.test get in.
    args = ["probe", protected.url("/ws"), "--origin", "https://www.allowed.test"]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert table.rstrip().endswith("0 fail: OK")
    assert main([*args, "--fail-on", "warn"]) == 1
    table = capsys.readouterr().out
    assert table.rstrip().endswith("3 warn, 0 fail: FAILED (--fail-on warn)")
    rows = {line.split()[0]: line for line in table.splitlines() if line.startswith("origin_")}
    assert "as is any host under allowed.test (see origin_sibling)" in rows["origin_suffix"]
    assert " WARN " in rows["origin_subdomain"]
    assert main([*args, "--fail-on", "fail", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["fail_on"], document["result"], document["exit_status"]) == ("fail", "warn", 0)


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


def test_json_error_document_when_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    assert main(["probe", f"ws://127.0.0.1:{port}/", "--json", "--fail-on", "warn"]) == 2
    out, err = capsys.readouterr()
    document = json.loads(out)
    assert document["schema"] == "asgi-ws-handshake/probe/2"
    assert (document["result"], document["exit_status"], document["fail_on"]) == (
        "error",
        2,
        "warn",
    )
    assert document["error"]["kind"] == "unreachable"
    assert f"cannot connect to 127.0.0.1:{port}" in document["error"]["message"]
    assert document["cases"] == []
    assert f"cannot connect to 127.0.0.1:{port}" in err


@pytest.mark.parametrize(
    ("origin", "message"),
    [
        ("http://allowed.test/", "has a path, query or fragment"),
        ("http://user@allowed.test", "has userinfo"),
        ("allowed.test", "is not an origin"),
        ("http://allowed.test:99999", "has a bad port"),
    ],
)
def test_bad_origin_is_a_usage_error(
    origin: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["probe", "ws://127.0.0.1:9/", "--origin", origin, "--json"]) == 2
    out, err = capsys.readouterr()
    assert f"bad --origin: {origin!r} {message}" in err
    assert json.loads(out)["error"]["kind"] == "usage"


def sent(origin: str) -> dict[str, str]:
    found, _ = lookalikes(parse_origin(origin))
    return {lookalike.name: lookalike.origin for lookalike in found}


def skipped(origin: str) -> set[str]:
    return {skip.name for skip in lookalikes(parse_origin(origin))[1]}


def test_lookalikes_of_a_domain_under_a_parent() -> None:
    assert sent("https://Chat.Example.com:443") == {
        "origin_prefix": "https://chat.example.com.evil.example",
        "origin_suffix": "https://evilchat.example.com",
        "origin_sibling": "https://cswsh-probe.example.com",
        "origin_subdomain": "https://cswsh-probe.chat.example.com",
        "origin_other_port": "https://chat.example.com:8443",
        "origin_other_scheme": "http://chat.example.com",
        "origin_userinfo": "https://chat.example.com@evil.example",
    }
    assert skipped("https://chat.example.com") == set()


@pytest.mark.parametrize(
    ("origin", "expected", "gone"),
    [
        (
            "http://127.0.0.1:8000",
            {
                "origin_prefix": "http://127.0.0.1.evil.example:8000",
                "origin_other_port": "http://127.0.0.1:8001",
                "origin_other_scheme": "https://127.0.0.1:8000",
                "origin_userinfo": "http://127.0.0.1:8000@evil.example",
            },
            {"origin_suffix", "origin_sibling", "origin_subdomain"},
        ),
        (
            "http://[::1]:65535",
            {
                "origin_other_port": "http://[::1]:65534",
                "origin_other_scheme": "https://[::1]:65535",
                "origin_userinfo": "http://[::1]:65535@evil.example",
            },
            {"origin_prefix", "origin_suffix", "origin_sibling", "origin_subdomain"},
        ),
        (
            "http://localhost",
            {
                "origin_prefix": "http://localhost.evil.example",
                "origin_suffix": "http://evillocalhost",
                "origin_subdomain": "http://cswsh-probe.localhost",
                "origin_other_port": "http://localhost:8080",
                "origin_other_scheme": "https://localhost",
                "origin_userinfo": "http://localhost@evil.example",
            },
            {"origin_sibling"},
        ),
        (
            "chrome-extension://abcdef",
            {
                "origin_prefix": "chrome-extension://abcdef.evil.example",
                "origin_suffix": "chrome-extension://evilabcdef",
                "origin_subdomain": "chrome-extension://cswsh-probe.abcdef",
                "origin_other_port": "chrome-extension://abcdef:8080",
                "origin_userinfo": "chrome-extension://abcdef@evil.example",
            },
            {"origin_sibling", "origin_other_scheme"},
        ),
    ],
)
def test_only_meaningful_lookalikes_are_sent(
    origin: str, expected: dict[str, str], gone: set[str]
) -> None:
    assert sent(origin) == expected
    assert skipped(origin) == gone


def test_a_null_valid_origin_has_no_lookalikes() -> None:
    assert sent("null") == {}
    _, skips = lookalikes(parse_origin("null"))
    assert all(
        skip.why == "the valid origin is null: there is no host to imitate" for skip in skips
    )
    assert len(skips) == 7


def test_authorization_is_redacted_too(protected: Server) -> None:
    options = ProbeOptions(
        origin=ALLOWED_ORIGIN, headers=(("Authorization", "Bearer t0ken"), ("X-Trace", "1"))
    )
    report = run_probe(protected.url("/ws"), options)
    document = json.dumps(report.to_dict())
    assert "t0ken" not in document
    assert "Authorization: <redacted>" in report.cases[5].sent
    assert "X-Trace: 1" in report.cases[5].sent
