"""Policy files: load_policy_file / parse_policy_file, the promised errors, check-policy."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_handshake import (
    HandshakePolicy,
    JSONLinesSink,
    LoggingSink,
    PolicyFileError,
    ThreadedSink,
)
from asgi_ws_handshake.cli import main
from asgi_ws_handshake.config import load_policy_file, parse_policy_file
from asgi_ws_handshake.middleware import Receive, Scope, Send

FULL = """
allow_origins = ["https://app.example.com", "https://*.example.com"]
allow_origin_regex = "https://pr-[0-9]+\\\\.preview\\\\.example"
allow_missing_origin = false
allow_null_origin = true
allow_hosts = ["app.example.com", "*.example.com"]
subprotocols = ["graphql-transport-ws", "graphql-ws"]
require_subprotocol = true
subprotocol_preference = "client"
select_subprotocol = "tests.cli.test_check_policy:pick_first"
key_reuse = "reject"
key_reuse_ttl = 30
store = { type = "memory", max_keys = 500 }

[routes."/admin/*"]
allow_origins = ["https://admin.example.com"]
key_reuse = "ignore"

[routes."/public/*"]
allow_any_origin = true

[[audit]]
type = "jsonl"
path = "audit.jsonl"

[[audit]]
type = "logging"
logger = "my.audit"
level = "DEBUG"
threaded = true

[middleware]
audit_fail_closed = true
audit_timeout = 1.5
redact_subprotocols = ["*token*"]
"""


def pick_first(request: Any, offered: tuple[str, ...]) -> str | None:
    return offered[0] if offered else None


def write(tmp_path: Path, text: str, name: str = "policy.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_option_round_trips_from_toml(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    policy = load_policy_file(path).policy
    assert policy.allow_origins == ("https://app.example.com", "https://*.example.com")
    assert policy.allow_origin_regex == "https://pr-[0-9]+\\.preview\\.example"
    assert policy.allow_missing_origin is False
    assert policy.allow_null_origin is True
    assert policy.allow_hosts == ("app.example.com", "*.example.com")
    assert policy.subprotocols == ("graphql-transport-ws", "graphql-ws")
    assert policy.require_subprotocol is True
    assert policy.subprotocol_preference == "client"
    assert policy.select_subprotocol is pick_first
    assert policy.key_reuse == "reject"
    assert policy.key_reuse_ttl == 30.0

    config = load_policy_file(path)
    assert set(config.routes) == {"/admin/*", "/public/*"}
    assert config.routes["/admin/*"].key_reuse == "ignore"
    assert config.routes["/public/*"].allow_any_origin is True
    assert config.audit is not None
    assert config.audit[0].options["path"] == str(tmp_path / "audit.jsonl")  # file-relative

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not called")

    middleware = config.middleware(app)
    assert middleware.route_for("/admin/x") == ("/admin/*", config.routes["/admin/*"])
    sinks = middleware.auditor.sinks
    assert isinstance(sinks[0], JSONLinesSink)
    assert isinstance(getattr(sinks[1], "sink", None), LoggingSink)  # threaded
    assert middleware.auditor.fail_closed is True
    assert middleware.auditor.timeout == 1.5
    assert middleware.redact("my-token") == "<redacted>"
    assert middleware.store.max_keys == 500  # type: ignore[attr-defined]
    for sink in sinks:
        assert isinstance(sink, JSONLinesSink | ThreadedSink)
        sink.close()


def test_from_mapping_takes_options_only() -> None:
    policy = parse_policy_file({"allow_origins": ["https://a.example"]}).policy
    assert policy == HandshakePolicy(allow_origins=["https://a.example"])
    assert parse_policy_file({}).policy == HandshakePolicy()


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ('allow_origin = ["https://a.example"]', "allow_origin", "did you mean 'allow_origins'"),
        ('allow_origins = "https://a.example"', "allow_origins", "expected an array of strings"),
        ("allow_null_origin = 1", "allow_null_origin", "expected true or false, got an integer"),
        ('key_reuse = "sometimes"', "key_reuse", "expected one of 'ignore', 'flag', 'reject'"),
        ('key_reuse_ttl = "ten"', "key_reuse_ttl", "expected a number"),
        ("key_reuse_ttl = -1", "key_reuse_ttl", "must be > 0"),
        ('allow_origins = ["https://*example.com"]', "allow_origins", "invalid origin pattern"),
        ('allow_origins = ["*"]', "allow_origins", "use allow_any_origin = true"),
        ('allow_origin_regex = "("', "allow_origin_regex", "invalid allow_origin_regex"),
        ('allow_hosts = ["a.example:80"]', "allow_hosts", "invalid host pattern"),
        ('subprotocols = ["a b"]', "subprotocols", "not an RFC 9110 token"),
        ('select_subprotocol = "nope"', "select_subprotocol", "expected 'module:attribute'"),
        ('select_subprotocol = "tests.nowhere:f"', "select_subprotocol", "cannot import"),
        (
            'allow_any_origin = true\nallow_origins = ["https://a.example"]',
            "(top level)",
            "conflicts with allow_origins",
        ),
        (
            '[routes."/admin/*"]\nkey_reuse = "no"',
            'routes."/admin/*".key_reuse',
            "expected one of",
        ),
        ('[routes."/a"]\nallow_orgins = []', 'routes."/a".allow_orgins', "unknown key"),
        ('[routes."admin"]\nkey_reuse = "flag"', 'routes."admin"', "must start with '/'"),
        ('[[audit]]\ntype = "syslog"', "audit[0].type", "expected one of 'logging'"),
        ('[[audit]]\ntype = "jsonl"', "audit[0].path", "required for a 'jsonl' sink"),
        ('[[audit]]\ntype = "logging"\nlevel = "LOUD"', "audit[0].level", "expected one of"),
        ('[[audit]]\ntype = "logging"\nfile = "x"', "audit[0].file", "unknown key"),
        ('store = { type = "disk" }', "store.type", "expected 'memory' or 'redis'"),
        ('store = { type = "memory", max_keys = 0 }', "store.max_keys", "must be >= 1"),
        ('store = { type = "redis" }', "store.url", "needs url"),
        ("[middleware]\naudit_timeout = 0", "middleware.audit_timeout", "must be > 0"),
        ("[middleware]\nclock = 1", "middleware.clock", "unknown key"),
    ],
)
def test_bad_policy_files_name_the_file_the_key_and_the_problem(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyFileError) as caught:
        load_policy_file(path)
    error = caught.value
    assert isinstance(error, ValueError)
    assert (error.source, error.key) == (str(path), key)
    assert problem in error.problem
    assert str(error).startswith(f"{path}: {key}: ")


def test_redis_store_unavailable_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the redis extra's packages, naming the store is refused with how to get them.
    monkeypatch.setattr(
        "asgi_ws_handshake.config._REDIS_DEPENDENCIES", ("redis", "no_such_package_for_tests")
    )
    path = write(tmp_path, 'store = { type = "redis", url = "redis://127.0.0.1:6379/0" }')
    with pytest.raises(PolicyFileError) as caught:
        load_policy_file(path)
    assert caught.value.key == "store.type"
    assert "no_such_package_for_tests" in caught.value.problem
    assert "asgi-ws-handshake[redis]" in caught.value.problem


def test_redis_store_in_a_policy_file_builds_a_redis_store(tmp_path: Path) -> None:
    from asgi_ws_handshake.stores.redis import RedisStore

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("never called")

    path = write(tmp_path, 'store = { type = "redis", url = "redis://127.0.0.1:1/0" }')
    middleware = load_policy_file(path).middleware(app)
    assert isinstance(middleware.store, RedisStore)


@pytest.mark.parametrize(
    ("text", "problem"),
    [("allow_origins = [", "not valid TOML"), (None, "cannot read")],
)
def test_unreadable_files(tmp_path: Path, text: str | None, problem: str) -> None:
    path = tmp_path / "policy.toml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(PolicyFileError) as caught:
        load_policy_file(path)
    assert caught.value.key is None
    assert problem in str(caught.value)


def test_check_policy_prints_the_effective_policy_as_a_valid_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, FULL)
    assert main(["check-policy", str(path)]) == 0
    out = capsys.readouterr().out
    assert 'subprotocol_preference = "client"' in out
    assert '[routes."/admin/*"]' in out
    assert "allow_missing_origin = true" in out  # a default, made explicit in /admin/*
    # The output is itself a policy file describing the same configuration.
    again = write(tmp_path, out, "effective.toml")
    original = load_policy_file(path).describe()
    reparsed = load_policy_file(again).describe()
    del original["source"], reparsed["source"]
    assert reparsed == original
    assert tomllib.loads(out)["key_reuse"] == "reject"


def test_check_policy_defaults_and_no_sinks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-policy", str(write(tmp_path, "audit = []"))]) == 0
    out = capsys.readouterr().out
    assert "audit = []" in out
    assert parse_policy_file(tomllib.loads(out)).audit == ()
    assert main(["check-policy", "--json", str(write(tmp_path, ""))]) == 0
    assert '"logger": "asgi_ws_handshake.audit"' in capsys.readouterr().out


def test_check_policy_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, 'key_reuse = "sometimes"')
    assert main(["check-policy", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{path}: key_reuse: expected one of" in captured.err
