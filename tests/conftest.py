from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import Server, start_server, uvicorn_argv

#: The ``redis`` fixture (a real redis-server, then valkey-server) is shared from there.
pytest_plugins = ["tests.redis_server", "asgi_ws_handshake.testing"]

UVICORN_WS = ["websockets-sansio", "websockets", "wsproto"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="run long soaks and benchmarks")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", params=UVICORN_WS)
def uvicorn_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A real uvicorn running tests.app on 127.0.0.1, one per --ws implementation."""
    ws = str(request.param)
    server = start_server(f"uvicorn-{ws}", uvicorn_argv(ws), tmp_path_factory.mktemp(ws))
    yield server
    server.stop()
