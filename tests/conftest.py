"""The suite's plugins and options (pytest reads ``pytest_plugins`` only here, at the top).

Layout: tests/core (the pure core), tests/adapter (the middleware in process, through the
scripted harness of tests/asgi.py), tests/servers (real servers), tests/cli (the command and
the docs), tests/stores (the stores, real Redis and Valkey); the apps servers run are in
tests/apps, shared support beside this file.
"""

from __future__ import annotations

import pytest

#: The ``redis`` fixture (a real redis-server, then valkey-server) is shared from there.
pytest_plugins = ["tests.redis_server", "asgi_ws_handshake.testing"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="run long soaks and benchmarks")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
