"""``suggest-policy`` on an audit log the test writes by running real handshakes through a
report-only route under uvicorn, then the suggestion served and the traffic replayed."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest

from asgi_ws_handshake.cli import main
from asgi_ws_handshake.cli.suggest import group_origins, read_events
from asgi_ws_handshake.config import load_policy_file
from tests.support import handshake_lines, new_key, raw_handshake, running, serve_argv
from tests.support import read_events as audit_of

REPORT_ONLY = """
allow_origins = ["https://app.example.com"]
subprotocols = ["chat.v1"]
enforce = false

[[audit]]
type = "jsonl"
path = "audit.jsonl"
"""
#: (origin, offered subprotocols, key, how many times): the traffic of the rollout.
TRAFFIC: list[tuple[str | None, str | None, str | None, int]] = [
    ("https://app.example.com", "chat.v1", None, 4),
    ("https://a.example.com", "chat.v2, chat.v1", None, 2),
    ("https://b.example.com", "chat.v1", None, 2),
    ("https://c.example.com", "chat.v1", None, 2),
    ("http://localhost:3000", "chat.v1", None, 2),
    (None, None, None, 2),  # a script: no Origin, no subprotocol
    ("https://evil.test", "chat.v1", None, 1),  # once: below --min-handshakes 2
    ("https://app.example.com", "chat.v1", "c2hvcnQ=", 1),  # a short key
    ("https://app.example.com", "chat.v1, chat.v1", None, 1),  # a repeated subprotocol
]


def send(port: int, origin: str | None, protocols: str | None, key: str | None) -> int:
    request = handshake_lines(
        f"127.0.0.1:{port}", origin=origin, protocols=protocols, key=key or new_key()
    )
    return raw_handshake(port, request, timeout=10).status


@pytest.fixture(scope="module")
def rollout_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rollout")
    (folder / "policy.toml").write_text(REPORT_ONLY)
    # wsproto lets a short key reach the app (websockets-sansio would refuse it itself).
    argv = [*serve_argv(folder / "policy.toml"), "--ws", "wsproto"]
    total = sum(count for *_, count in TRAFFIC)
    with running("serve-rollout", argv, folder) as server:
        for origin, protocols, key, count in TRAFFIC:
            for _ in range(count):
                assert send(server.port, origin, protocols, key) == 101  # report-only
        deadline = time.monotonic() + 10
        while len(audit_of(folder / "audit.jsonl")) < total and time.monotonic() < deadline:
            time.sleep(0.02)
    return folder / "audit.jsonl"


def test_suggestion_accepts_the_legitimate_traffic(
    rollout_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "suggested.toml"
    argv = ["suggest-policy", str(rollout_log), "-o", str(out), "--min-handshakes", "2"]
    assert main(argv) == 0
    config = load_policy_file(out)  # what check-policy reads
    policy = config.policy
    assert policy.allow_origins == ("http://localhost:3000", "https://*.example.com")
    assert policy.allow_missing_origin is True
    assert policy.subprotocols == ("chat.v1",)
    assert policy.require_subprotocol is False  # the script offered none
    times = [datetime.fromisoformat(e["time"]) for e in audit_of(rollout_log)]
    if (max(times) - min(times)).total_seconds() < 60:  # (else the peak is fewer)
        assert policy.rate_limit == "30/minute"  # 15 legitimate from one client, times 2
    assert policy.enforce is True
    summary = capsys.readouterr().err
    assert "route default: 17 handshakes, 15 legitimate (9 let through by a report-" in summary
    assert "the suggested policy would refuse 3 of 17:" in summary
    assert "origin_not_allowed" in summary
    assert "https://evil.test 1" in summary
    assert "key_malformed" in summary
    assert "subprotocol_malformed" in summary
    assert main(["check-policy", str(out)]) == 0


def test_the_suggestion_served_refuses_what_it_said(rollout_log: Path, tmp_path: Path) -> None:
    suggested = tmp_path / "suggested.toml"
    assert main(["suggest-policy", str(rollout_log), "-o", str(suggested), "--no-rates"]) == 0
    assert "rate_limit" not in suggested.read_text()
    # Without --min-handshakes, the one foreign handshake of the log was let through, so it
    # is allowed: the thresholds are what keeps a probe of the rollout out.
    assert "https://evil.test" in suggested.read_text()
    strict = tmp_path / "strict.toml"
    argv = ["suggest-policy", str(rollout_log), "-o", str(strict), "--min-handshakes", "2"]
    assert main([*argv, "--no-rates"]) == 0
    with running("serve-suggested", serve_argv(strict), tmp_path) as server:
        assert send(server.port, "https://app.example.com", "chat.v1", None) == 101
        assert send(server.port, "https://d.example.com", "chat.v1", None) == 101  # wildcard
        assert send(server.port, "http://localhost:3000", "chat.v1", None) == 101
        assert send(server.port, None, None, None) == 101
        assert send(server.port, "https://evil.test", "chat.v1", None) == 403
        assert send(server.port, "https://example.com", "chat.v1", None) == 403


def test_policy_file_sinks_and_formatter_lines_are_read(tmp_path: Path) -> None:
    lines = [
        '{"outcome": "accepted", "origin": "https://a.test", "route": "default"}',
        '{"time": "x", "event": {"outcome": "accepted", "origin": "https://b.test"}}',
        "not json",
        '{"no": "outcome"}',
        "",
    ]
    events, skipped = read_events(lines)
    assert [e["origin"] for e in events] == ["https://a.test", "https://b.test"]
    assert skipped == 2


@pytest.mark.parametrize(
    ("origins", "expected"),
    [
        (["https://a.x.test", "https://b.x.test"], ["https://a.x.test", "https://b.x.test"]),
        (
            ["https://a.x.test", "https://b.x.test", "https://c.x.test", "https://x.test"],
            ["https://x.test", "https://*.x.test"],
        ),
        (["https://a.co.uk", "https://b.co.uk", "https://c.co.uk"],
         ["https://a.co.uk", "https://b.co.uk", "https://c.co.uk"]),  # different owners
        (["https://a.x.test:8443", "https://b.x.test:8443", "https://c.x.test:8443"],
         ["https://*.x.test:8443"]),
        (["http://10.0.0.1", "http://10.0.0.2", "http://10.0.0.3"],
         ["http://10.0.0.1", "http://10.0.0.2", "http://10.0.0.3"]),
        (["https://a.test", "https://b.test", "https://c.test"],
         ["https://a.test", "https://b.test", "https://c.test"]),  # never https://*.test
    ],
)  # fmt: skip
def test_group_origins(origins: list[str], expected: list[str]) -> None:
    assert group_origins(origins, 3) == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["suggest-policy", "/nonexistent/audit.jsonl"], "cannot read /nonexistent/audit.jsonl"),
        (["suggest-policy", "{empty}"], "no audit events in"),
        (["suggest-policy", "{empty}", "--headroom", "0"], "--headroom must be > 0"),
    ],
)
def test_suggest_policy_errors(
    tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    status = main([part.replace("{empty}", str(empty)) for part in argv])
    assert status in (1, 2)
    assert message in capsys.readouterr().err
