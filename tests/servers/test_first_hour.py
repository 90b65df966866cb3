"""The first hour of a new user: quiet and visible logs under uvicorn, clear errors, pipes.

Real uvicorn processes (all three ``--ws`` backends) for the logging; the command line
in-process or as a subprocess.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_handshake import HandshakeMiddleware, HandshakePolicy
from asgi_ws_handshake.cli import main
from asgi_ws_handshake.cli.serve import find_guard
from asgi_ws_handshake.config import PolicyFileError, load_policy_file
from tests.apps.main import ALLOWED_ORIGIN
from tests.asgi import run_sync
from tests.support import (
    ROOT,
    Server,
    free_port,
    handshake_lines,
    new_key,
    read_response,
    running,
    serve_argv,
    uvicorn_argv,
)

#: How many of uvicorn's "without completing handshake" ERRORs ``exercise`` leaves, per
#: backend (uvicorn 0.54: only websockets-sansio logs it after a denial response; the one
#: left is after the app's own failure, the guard's refusal's is dropped).
BACKENDS = {"websockets-sansio": 1, "websockets": 0, "wsproto": 0}
UVICORN_LINE = "ASGI callable returned without completing handshake."
LOGGED_POLICY = f"""
allow_origins = ["{ALLOWED_ORIGIN}"]

[[audit]]
type = "logging"
"""


def until_closed(port: int, path: str, origin: str) -> int:
    """Send a handshake and read until the server closes: uvicorn has logged by then."""
    request = handshake_lines(f"127.0.0.1:{port}", path=path, origin=origin, key=new_key())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        status = read_response(sock, read_body=False).status
        if status != 101:
            while sock.recv(4096):
                pass
    return status


def wait_for(server: Server, text: str) -> str:
    deadline = time.monotonic() + 10
    while text not in (log := server.log()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the log:\n{log}")
        time.sleep(0.02)
    return log


def exercise(server: Server, backend: str) -> str:
    """An accepted, a refused and an app-error handshake; the server's log afterwards."""
    assert until_closed(server.port, "/ws", ALLOWED_ORIGIN) == 101
    assert until_closed(server.port, "/ws", "https://evil.test") == 403
    assert until_closed(server.port, "/app-return", ALLOWED_ORIGIN) == 500
    log = wait_for(server, "reason=app_error")
    if BACKENDS[backend]:
        # The app-error refusal is the app's doing: its ERROR stays (the refusal's went).
        log = wait_for(server, UVICORN_LINE)
    return log


def after_the_refusal(log: str) -> str:
    """The log between the guard's refusal and the next handshake."""
    return log.split("reason=origin_not_allowed", 1)[1].split("/app-return", 1)[0]


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_serve_shows_accepted_handshakes_and_drops_uvicorns_error_after_refusals(
    tmp_path: Path, backend: str
) -> None:
    (tmp_path / "policy.toml").write_text(LOGGED_POLICY)
    argv = [*serve_argv(tmp_path / "policy.toml"), "--ws", backend, "--log-level", "info"]
    with running(f"serve-{backend}", argv, tmp_path) as server:
        log = exercise(server, backend)
    assert "INFO:     websocket handshake accepted /ws status=101" in log
    assert "WARNING:  websocket handshake rejected /ws status=403 reason=origin_not_allowed" in log
    assert log.count(UVICORN_LINE) == BACKENDS[backend]
    assert UVICORN_LINE not in after_the_refusal(log)


def test_without_the_filter_uvicorn_logs_an_error_per_refusal(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text(LOGGED_POLICY)
    argv = [*serve_argv(tmp_path / "policy.toml"), "--keep-uvicorn-denial-errors"]
    with running("serve-noisy", argv, tmp_path) as server:
        log = exercise(server, "websockets-sansio")
    assert log.count(UVICORN_LINE) == 2
    assert UVICORN_LINE in after_the_refusal(log)


def test_plain_uvicorn_with_the_example_log_config(tmp_path: Path) -> None:
    config = str(ROOT / "examples" / "uvicorn-logging.json")
    argv = uvicorn_argv("websockets-sansio", "tests.apps.logged:app", "--log-config", config)
    with running("uvicorn-log-config", argv, tmp_path) as server:
        log = exercise(server, "websockets-sansio")
    assert "websocket handshake accepted /ws status=101" in log
    assert log.count(UVICORN_LINE) == 1
    assert UVICORN_LINE not in after_the_refusal(log)


def test_the_example_log_config_is_uvicorns_plus_ours() -> None:
    import json

    from asgi_ws_handshake.logs import uvicorn_log_config

    shipped = json.loads((ROOT / "examples" / "uvicorn-logging.json").read_text())
    assert shipped == json.loads(json.dumps(uvicorn_log_config()))


# -- serve and guarded apps


@pytest.mark.parametrize(
    "app", ["examples.starlette_app:app", "examples.fastapi_app:app", "tests.apps.main:app"]
)
def test_serve_refuses_an_app_that_is_already_guarded(
    tmp_path: Path, app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "policy.toml").write_text("")
    sys_path = list(sys.path)
    try:
        status = main(["serve", app, "--policy", str(tmp_path / "policy.toml"), "--port", "9"])
    finally:
        sys.path[:] = sys_path
    assert status == 1
    assert "is already guarded" in capsys.readouterr().err


def test_find_guard_looks_through_wrapping_middleware() -> None:
    async def bare(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not called")

    class Wrapper:
        def __init__(self, app: Any) -> None:
            self.app = app

    guarded = HandshakeMiddleware(bare, policy=HandshakePolicy())
    assert find_guard(bare) is None
    assert find_guard(Wrapper(bare)) is None
    assert find_guard(guarded) is not None
    assert find_guard(Wrapper(Wrapper(guarded))) is not None
    loop = Wrapper(None)
    loop.app = loop
    assert find_guard(loop) is None


def test_the_unguarded_example_is_served(tmp_path: Path) -> None:
    argv = [
        sys.executable,
        "-m",
        "asgi_ws_handshake",
        "serve",
        "examples.unguarded_app:app",
        "--policy",
        str(ROOT / "examples" / "policy.toml"),
        "--port",
        "{port}",
    ]
    with running("serve-example", argv, tmp_path) as server:
        status = until_closed(server.port, "/ws", "https://evil.test")
        assert status == 403
        log = wait_for(server, "reason=origin_not_allowed")
        assert UVICORN_LINE not in log
        request = handshake_lines(server.host, origin=f"http://{server.host}", protocols="chat.v1")
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(request)
            response = read_response(sock)
        assert response.status == 101
        assert response.header("sec-websocket-protocol") == "chat.v1"
    audit = ROOT / "examples" / "audit.jsonl"
    audit.unlink(missing_ok=True)  # (written beside the example policy; ignored by git)


# -- clear errors and tidy output


def test_rate_limit_without_the_limits_extra_names_the_key_and_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "limits", None)  # as if it were not installed
    path = tmp_path / "policy.toml"
    path.write_text('[routes."/ws"]\nrate_limit = "30/minute"\n')
    with pytest.raises(PolicyFileError) as caught:
        load_policy_file(path)
    assert caught.value.key == 'routes."/ws".rate_limit'
    assert "pip install 'asgi-ws-handshake[limits]'" in caught.value.problem
    for argv in (
        ["check-policy", str(path)],
        ["serve", "tests.apps.main:downstream", "--policy", str(path), "--port", "9"],
    ):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith(f'asgi-ws-handshake: error: {path}: routes."/ws".rate_limit: ')
        assert "Traceback" not in err


def test_check_policy_prints_whole_numbers_as_integers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("key_reuse_ttl = 600\n[middleware]\naudit_timeout = 2.5\n")
    assert main(["check-policy", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\nkey_reuse_ttl = 600\n" in out
    assert "audit_timeout = 2.5" in out
    assert "600.0" not in out


@pytest.mark.parametrize(
    "argv",
    [
        ["check-policy", str(ROOT / "examples" / "policy.toml")],
        ["probe", "ws://127.0.0.1:{port}/ws", "--json", "--timeout", "1"],
    ],
)
def test_output_into_a_closed_pipe_ends_quietly(argv: list[str]) -> None:
    argv = [part.replace("{port}", str(free_port())) for part in argv]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written (`| head`, finished)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "asgi_ws_handshake", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 141
    assert "Traceback" not in done.stderr
    assert "BrokenPipeError" not in done.stderr


def test_the_denial_filter_keeps_what_is_not_after_a_guard_refusal() -> None:
    import asyncio
    import logging

    from asgi_ws_handshake.logs import UvicornDenialFilter, note_denial, quiet_uvicorn_denials

    note_denial()  # no running loop: nothing to note, no error
    line = logging.LogRecord("uvicorn.error", logging.ERROR, "", 0, UVICORN_LINE, None, None)
    other = logging.LogRecord("uvicorn.error", logging.ERROR, "", 0, "other", None, None)
    keep = UvicornDenialFilter()
    assert keep.filter(line)  # no running loop: kept

    async def connection(refused: bool) -> tuple[bool, bool]:
        if refused:
            note_denial()
        return keep.filter(other), keep.filter(line)

    async def both() -> list[tuple[bool, bool]]:
        return list(await asyncio.gather(connection(True), connection(False)))

    # Sync on purpose: the filter's behaviour outside any event loop is part of the test.
    assert run_sync(both()) == [(True, False), (True, True)]
    installed = quiet_uvicorn_denials("tests.quiet")
    assert quiet_uvicorn_denials("tests.quiet") is installed
    logging.getLogger("tests.quiet").removeFilter(installed)


def test_serve_refuses_a_factory_that_builds_a_guarded_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from asgi_ws_handshake.cli import serve

    monkeypatch.setenv(serve.ENV_APP, "tests.apps.logged:guarded_factory")
    monkeypatch.setenv(serve.ENV_FACTORY, "1")
    monkeypatch.setenv(serve.ENV_POLICY, str(ROOT / "examples" / "policy.toml"))
    monkeypatch.setenv(serve.ENV_APP_DIR, str(ROOT))
    with pytest.raises(RuntimeError, match="is already guarded"):
        serve.served_app()
