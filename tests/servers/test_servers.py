"""The compatibility matrix: the same handshakes against every ASGI server, as real processes.

Each case is sent over a raw socket to ``tests.apps.main`` on uvicorn (three WebSocket
implementations), hypercorn, daphne and granian. What the client must see is written per
server in ``tests/compat.py`` (``BASE``, and ``SERVER_FIRST`` where a server answers before
the app runs, each with its reason); the README table is rendered from the same data.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from asgi_ws_handshake import accept_key
from asgi_ws_handshake.decision import Reason
from tests import compat
from tests.compat import CASES, SERVER_NAMES, Observation, expected, observe
from tests.compat_table import README, expected_table, readme_section, same_but_versions
from tests.support import Server, running, server_argv


@pytest.fixture(scope="module", params=SERVER_NAMES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    name = str(request.param)
    with running(name, server_argv(name), tmp_path_factory.mktemp(name)) as started:
        yield started


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_handshake(server: Server, case: compat.Case) -> None:
    seen = observe(server, case)
    want, why = expected(server.name, case.name)
    assert seen.summary() == want, f"{server.name} {case.name} ({why or 'base'}): {seen}"
    if want.status == 101:
        check_accepted(server, seen, want.subprotocol)
    elif want.by == "server":
        check_server_answer(seen)
    else:
        check_refusal(server, seen, want)


def check_accepted(server: Server, seen: Observation, subprotocol: str | None) -> None:
    event = seen.event
    assert event is not None
    assert seen.accept_ok, seen.headers  # exactly one, correct Sec-WebSocket-Accept
    assert event["outcome"] == "accepted"
    assert event["status"] == 101
    assert event["subprotocol"] == subprotocol
    assert seen.key is not None
    assert event["expected_accept"] == accept_key(seen.key)
    assert [v.lower() for v in seen.all("upgrade")] == ["websocket"]
    if seen.case.name == "app_reserved":
        # The app's Sec-WebSocket-Accept and Upgrade: h2c never reach the client.
        assert "bogus" not in seen.all("sec-websocket-accept")
        kept = seen.all("x-app")
        assert kept == ([] if server.name in compat.DROPS_APP_HEADERS else ["kept"])


def check_server_answer(seen: Observation) -> None:
    # The app never ran: no audit event, and the body is not one of our reason codes.
    assert seen.event is None
    assert not seen.all("sec-websocket-accept")
    assert seen.body.strip().decode("latin-1") not in {str(r) for r in Reason}


def check_refusal(server: Server, seen: Observation, want: compat.Summary) -> None:
    event = seen.event
    assert event is not None
    assert event["status"] == seen.status  # the audit says what the client got
    outcome = "app_error" if want.reason == "app_subprotocol_not_offered" else "rejected"
    assert event["outcome"] == outcome
    if want.denial == "http_response":
        assert seen.body == f"{want.reason}\n".encode()
        assert seen.header("content-type") == "text/plain; charset=utf-8"
    else:
        assert seen.body == b""
    # A refusal never looks like an upgrade, except where the server adds its own headers.
    upgrade_headers = server.name in compat.UPGRADE_HEADERS_ON_DENIAL
    assert bool(seen.all("sec-websocket-accept")) == upgrade_headers
    assert seen.header("sec-websocket-protocol") is None


def test_readme_table_matches_expectations() -> None:
    # The suite proves the expectations against the servers; this keeps the README in step.
    # Regenerate with `python -m tests.compat_table`.
    assert same_but_versions(readme_section(README.read_text()), expected_table())
