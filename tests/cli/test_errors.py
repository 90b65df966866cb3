"""Command-line usage errors: a clear message on stderr and exit status 2 (probe) or 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from asgi_ws_handshake.cli import main
from tests.support import free_port


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["probe", "ws://127.0.0.1:1/ws", "--header", "no colon"], 2, "--header expects"),
        (["probe", "ws://127.0.0.1:1/ws", "--header", ": empty name"], 2, "--header expects"),
        (["probe", "ws://127.0.0.1:1/ws", "--timeout", "0"], 2, "--timeout must be > 0"),
        (["probe", "http://127.0.0.1:1/ws"], 2, "ws://"),
        (
            ["probe", "wss://127.0.0.1:1/ws", "--cafile", "/nonexistent/ca.pem"],
            2,
            "No such file",
        ),
    ],
)
def test_probe_usage_errors(
    argv: list[str], status: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == status
    err = capsys.readouterr().err
    assert err.startswith("asgi-ws-handshake: error: ")
    assert message in err


def test_probe_unreachable_target_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens there
    assert main(["probe", f"ws://127.0.0.1:{port}/ws", "--timeout", "2"]) == 2
    assert "asgi-ws-handshake: error: " in capsys.readouterr().err


def test_serve_with_a_bad_policy_or_app_is_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("key_reuse = 'sometimes'\n")
    assert main(["serve", "tests.apps.main:app", "--policy", str(bad)]) == 1
    assert "key_reuse" in capsys.readouterr().err
    good = tmp_path / "good.toml"
    good.write_text("allow_any_origin = true\n")
    assert main(["serve", "no_such_module_here:app", "--policy", str(good)]) == 1
    assert "no_such_module_here" in capsys.readouterr().err


def test_check_policy_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        'allow_origins = ["https://a.test"]\nstore = { type = "memory", max_keys = 5 }\n'
    )
    assert main(["check-policy", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    assert '"allow_origins": [' in out
    assert '"https://a.test"' in out
