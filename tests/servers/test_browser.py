"""CSWSH in a real browser: headless Chromium (Debian's, driven by Playwright) loads a page from
an allowed origin and from a foreign one, two servers on different 127.0.0.1 ports, and each
page opens a WebSocket to the protected app.

The allowed page connects and sees the negotiated subprotocol; the foreign page's socket fails
and the audit records ``origin_not_allowed``; the same foreign page reaches an unprotected
endpoint, which proves the browser would have let the attack through.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import CHROMIUM, CHROMIUM_ARGS, Server, free_port, running, uvicorn_argv

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="chromium is not installed (tests/run.sh installs it)"
)


@pytest.fixture(scope="module")
def browser_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """(the protected app, which also serves the allowed page; the foreign page server)."""
    tmp = tmp_path_factory.mktemp("browser")
    port = free_port()
    env = {"WSH_ALLOWED_ORIGIN": f"http://127.0.0.1:{port}"}
    argv = uvicorn_argv("websockets-sansio", "tests.apps.browser:app")
    with (
        running("browser-app", argv, tmp, env=env, port=port) as protected,
        running(
            "foreign", uvicorn_argv("websockets-sansio", "tests.apps.browser:pages"), tmp
        ) as foreign,
    ):
        yield protected, foreign


@pytest.fixture(scope="module")
def page_result() -> Iterator[Any]:
    """A function: open ``page_url`` in a fresh browser context, return ``window.result``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)

        def result(page_url: str) -> dict[str, Any]:
            context = browser.new_context()
            try:
                page = context.new_page()
                page.set_default_timeout(15_000)
                page.goto(page_url)
                seen: dict[str, Any] = page.evaluate("window.result")
                return seen
            finally:
                context.close()

        try:
            yield result
        finally:
            browser.close()


def wait_for(server: Server, match: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in server.events() if all(e.get(k) == v for k, v in match.items())]
        if found:
            assert len(found) == 1, found
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no audit event matching {match}: {server.events()}")
        time.sleep(0.05)


def test_allowed_page_connects_with_negotiated_subprotocol(
    browser_servers: tuple[Server, Server], page_result: Any
) -> None:
    protected, _ = browser_servers
    origin = f"http://127.0.0.1:{protected.port}"
    seen = page_result(f"{origin}/?ws={protected.url('/ws')}")
    assert seen["opened"] is True
    assert seen["protocol"] == "chat.v2"  # server preference among chat.v1, chat.v2
    message = json.loads(seen["message"])
    assert message["subprotocol"] == "chat.v2"
    event = wait_for(protected, {"id": message["audit_id"]})
    assert (event["outcome"], event["origin"], event["subprotocol"]) == (
        "accepted",
        origin,
        "chat.v2",
    )


def test_foreign_page_is_refused_and_audited(
    browser_servers: tuple[Server, Server], page_result: Any
) -> None:
    protected, foreign = browser_servers
    origin = f"http://127.0.0.1:{foreign.port}"
    seen = page_result(f"{origin}/?ws={protected.url('/ws')}")
    assert seen["opened"] is False
    assert seen["closeCode"] == 1006  # the browser failed the connection (403)
    event = wait_for(protected, {"origin": origin})
    assert (event["outcome"], event["reason"], event["status"]) == (
        "rejected",
        "origin_not_allowed",
        403,
    )


def test_foreign_page_reaches_an_unprotected_endpoint(
    browser_servers: tuple[Server, Server], page_result: Any
) -> None:
    # The control: without the middleware the browser lets the foreign page in (CSWSH).
    protected, foreign = browser_servers
    seen = page_result(f"http://127.0.0.1:{foreign.port}/?ws={protected.url('/open')}")
    assert seen["opened"] is True
    assert seen["protocol"] == "chat.v1"
    assert json.loads(seen["message"]) == {"audit_id": None, "subprotocol": "chat.v1"}
    assert not [e for e in protected.events() if e["path"] == "/open"]  # no middleware ran
