"""Behind a real reverse proxy: ``serve`` (uvicorn) with ``trusted_proxies``, and a proxy in
front of it (tests/forwarding_proxy.py) that rewrites Host and sets the forwarding headers,
connecting from 127.0.0.2. Clients that connect to uvicorn directly come from 127.0.0.1 and
forge the same headers: they must be ignored.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from tests.forwarding_proxy import PROXY_ADDRESS, forwarding
from tests.support import handshake_lines, new_key, raw_handshake, read_events, running, serve_argv

PUBLIC = "public.test"

Mode = Literal["x-forwarded", "forwarded"]


def policy_text(mode: Mode) -> str:
    return f"""
[[audit]]
type = "jsonl"
path = "audit.jsonl"

[middleware]
trusted_proxies = ["{PROXY_ADDRESS}"]
proxy_headers = "{mode}"
"""


@pytest.fixture(scope="module", params=["x-forwarded", "forwarded"])
def deployed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, int, Path]]:
    """(proxy port, uvicorn port, audit file) for one kind of proxy headers."""
    mode: Mode = request.param
    folder = tmp_path_factory.mktemp(f"proxy-{mode}")
    (folder / "policy.toml").write_text(policy_text(mode))
    with (
        running(f"serve-{mode}", serve_argv(folder / "policy.toml"), folder) as server,
        forwarding(server.port, mode) as proxy_port,
    ):
        yield proxy_port, server.port, folder / "audit.jsonl"


def event_for(audit: Path, key: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        found = [e for e in read_events(audit) if e["key"] == key]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no audit event for {key!r}")
        time.sleep(0.02)


def send(port: int, host: str, origin: str, **kwargs: Any) -> tuple[int, str]:
    key = new_key()
    request = handshake_lines(host, origin=origin, key=key, **kwargs)
    return raw_handshake(port, request, timeout=10).status, key


def test_the_public_origin_is_accepted_through_the_proxy(
    deployed: tuple[int, int, Path],
) -> None:
    proxy, backend, audit = deployed
    status, key = send(proxy, PUBLIC, f"https://{PUBLIC}")
    assert status == 101
    event = event_for(audit, key)
    assert event["host"] == f"127.0.0.1:{backend}"  # the proxy rewrote Host
    assert (event["public_host"], event["public_scheme"]) == (PUBLIC, "https")
    assert event["client"] == "127.0.0.1:0"  # from the proxy's header, not 127.0.0.2


def test_through_the_proxy_other_origins_are_refused(deployed: tuple[int, int, Path]) -> None:
    proxy, _, audit = deployed
    # The public scheme is known (the proxy ended TLS): an http page is another origin.
    status, key = send(proxy, PUBLIC, f"http://{PUBLIC}")
    assert status == 403
    assert event_for(audit, key)["detail"] == "Origin's scheme is not the site's (https)"
    # A client's own X-Forwarded-Host is replaced by the proxy's.
    forged = [("X-Forwarded-Host", "evil.test"), ("Forwarded", "host=evil.test;proto=https")]
    status, key = send(proxy, PUBLIC, "https://evil.test", extra=forged)
    assert status == 403
    assert event_for(audit, key)["reason"] == "origin_not_allowed"


def test_forged_headers_sent_straight_to_uvicorn_are_ignored(
    deployed: tuple[int, int, Path],
) -> None:
    _, backend, audit = deployed
    forged = [
        ("X-Forwarded-Host", PUBLIC),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-For", "203.0.113.9"),
        ("Forwarded", f'for=203.0.113.9;host="{PUBLIC}";proto=https'),
    ]
    status, key = send(backend, f"127.0.0.1:{backend}", f"https://{PUBLIC}", extra=forged)
    assert status == 403
    event = event_for(audit, key)
    assert (event["reason"], event["public_host"]) == ("origin_not_allowed", None)
    assert event["client"].startswith("127.0.0.1:")  # not the forged 203.0.113.9
    # A direct client of the same origin as the Host it sends is still same-origin.
    status, _ = send(backend, f"127.0.0.1:{backend}", f"http://127.0.0.1:{backend}")
    assert status == 101


def test_without_trusted_proxies_the_proxy_breaks_same_origin(tmp_path: Path) -> None:
    """Why the option exists: the proxy rewrites Host, so every legitimate page is refused."""
    (tmp_path / "policy.toml").write_text('[[audit]]\ntype = "jsonl"\npath = "audit.jsonl"\n')
    with (
        running("serve-plain", serve_argv(tmp_path / "policy.toml"), tmp_path) as server,
        forwarding(server.port, "x-forwarded") as proxy,
    ):
        status, key = send(proxy, PUBLIC, f"https://{PUBLIC}")
        assert status == 403
        assert event_for(tmp_path / "audit.jsonl", key)["public_host"] is None
