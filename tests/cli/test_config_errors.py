"""Every way a policy mapping can be wrong is refused naming the key and the problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from asgi_ws_handshake import AuditEvent, MemorySink, PolicyFileError
from asgi_ws_handshake.config import parse_policy, parse_policy_file


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ({"allow_origins": "https://a.test"}, "allow_origins", "expected an array of strings"),
        ({"allow_origins": {"a": 1}}, "allow_origins", "got a table"),
        ({"allow_any_origin": "yes"}, "allow_any_origin", "expected true or false"),
        ({"allow_origin_regex": 5}, "allow_origin_regex", "expected a string"),
        ({"key_reuse_ttl": "10"}, "key_reuse_ttl", "expected a number"),
        ({"key_reuse_ttl": float("inf")}, "key_reuse_ttl", "finite"),
        ({"key_reuse_ttl": True}, "key_reuse_ttl", "expected a number"),
        ({"max_connections": 1.5}, "max_connections", "expected an integer"),
        ({"subprotocol_preference": "random"}, "subprotocol_preference", "expected one of"),
        ({"select_subprotocol": "not an import"}, "select_subprotocol", "module:attribute"),
        ({"select_subprotocol": "no_such_module_x:f"}, "select_subprotocol", "cannot import"),
        ({"select_subprotocol": "json:__name__"}, "select_subprotocol", "is not callable"),
        ({"store": "memory"}, "store", "expected a table"),
        ({"store": {"type": "memory", "size": 3}}, "store.size", "unknown"),
        ({"routes": ["/a"]}, "routes", "expected a table"),
        ({"routes": {"/a/*": 3}}, 'routes."/a/*"', "expected a table"),
        ({"audit": 3}, "audit", "expected [[audit]] tables"),
        ({"audit": [{"type": "memory", "maxlen": 0}]}, "audit[0].maxlen", "must be >= 1"),
        ({"audit": [{"type": "carrier-pigeon"}]}, "audit[0].type", "expected one of"),
        ({"middleware": []}, "middleware", "expected a table"),
    ],
)
def test_bad_mappings(data: dict[str, Any], key: str, problem: str) -> None:
    with pytest.raises(PolicyFileError) as caught:
        parse_policy_file(data, source="t.toml")
    assert caught.value.key == key
    assert problem in caught.value.problem


def test_not_a_table_at_all() -> None:
    with pytest.raises(PolicyFileError, match="expected a table"):
        parse_policy_file([], source="t.toml")  # type: ignore[arg-type]
    with pytest.raises(PolicyFileError, match="expected a table"):
        parse_policy([], source="t.toml")  # type: ignore[arg-type]


def test_nullable_options_accept_absent_values() -> None:
    policy = parse_policy({"allow_hosts": None, "rate_limit": None})
    assert policy.allow_hosts is None
    assert policy.rate_limit is None


def collect(event: AuditEvent) -> None:
    COLLECTED.append(event)


COLLECTED: list[AuditEvent] = []


def test_audit_sinks_from_a_mapping(tmp_path: Path) -> None:
    data: dict[str, Any] = {
        "audit": {"type": "memory", "maxlen": 5},  # one table stands for a list of one
        "routes": {},
    }
    built = parse_policy_file(data, source="t.toml")
    assert built.audit is not None
    (spec,) = built.audit
    assert isinstance(spec.build(), MemorySink)

    data = {"audit": [{"type": "callable", "target": "tests.cli.test_config_errors:collect"}]}
    sinks = parse_policy_file(data, source="t.toml").audit
    assert sinks is not None
    (spec,) = sinks
    assert spec.build() is collect
