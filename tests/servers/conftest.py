from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import Server, start_server, uvicorn_argv

UVICORN_WS = ["websockets-sansio", "websockets", "wsproto"]


@pytest.fixture(scope="session", params=UVICORN_WS)
def uvicorn_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A real uvicorn running tests.apps.main on 127.0.0.1, one per --ws implementation."""
    ws = str(request.param)
    server = start_server(f"uvicorn-{ws}", uvicorn_argv(ws), tmp_path_factory.mktemp(ws))
    yield server
    server.stop()
