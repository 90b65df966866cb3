"""The plain lane is taken on every server of the matrix, for a browser's ordinary handshake.

The lane only pays off if real servers build scopes it recognises; each server shapes its
scope a little differently (uvicorn's wsproto backend drops the Sec-WebSocket-Protocol
line, daphne passes the client as a list, granian the port as a string). The agreement
between the lane and the full path is tested in ``tests/test_plain_lane.py``.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest

from tests.support import (
    SERVERS,
    Server,
    handshake_lines,
    new_key,
    raw_handshake,
    running,
    server_argv,
)


@pytest.fixture(scope="module", params=list(SERVERS))
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    name = str(request.param)
    argv = server_argv(name, "tests.lane_app:app")
    with running(name, argv, tmp_path_factory.mktemp(f"lane-{name}")) as started:
        yield started


def lane_log(server: Server) -> list[bool]:
    url = f"http://127.0.0.1:{server.port}/__lane"
    with urllib.request.urlopen(url, timeout=5) as answer:
        decided: list[bool] = json.loads(answer.read())
    return decided


@pytest.mark.parametrize("protocols", [None, "chat.v1"])
def test_a_browser_handshake_takes_the_lane(server: Server, protocols: str | None) -> None:
    before = lane_log(server)
    request = handshake_lines(
        server.host, origin="http://allowed.test", key=new_key(), protocols=protocols
    )
    response = raw_handshake(server.port, request)
    assert response.status == 101, response
    assert lane_log(server) == [*before, True]


def test_a_cross_site_handshake_is_refused_in_the_lane(server: Server) -> None:
    before = lane_log(server)
    request = handshake_lines(server.host, origin="http://evil.test", key=new_key())
    response = raw_handshake(server.port, request)
    assert response.status == 403, response
    assert lane_log(server) == [*before, True]


def test_a_malformed_key_goes_the_full_path(server: Server) -> None:
    before = lane_log(server)
    request = handshake_lines(server.host, origin="http://allowed.test", key="not-a-key")
    response = raw_handshake(server.port, request)
    assert response.status in (400, 403), response  # (some servers answer first, see compat)
    assert lane_log(server)[len(before) :] in ([False], [])
