"""The demo: its self-check (``demo --probe``) and its page in headless Chromium."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.support import CHROMIUM, CHROMIUM_ARGS, ROOT, Server, running


def test_demo_probe_self_check_passes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "asgi_ws_handshake", "demo", "--port", "0", "--probe"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"protected chat:\s+http://127\.0\.0\.1:\d+/", out)
    assert re.search(r"foreign origin:\s+http://127\.0\.0\.1:\d+/", out)
    assert re.search(
        r"foreign_origin\s.*\s403\s+PASS\s+refused with 403 \(origin_not_allowed\)", out
    )
    assert re.search(r"valid\s.*\s101\s+PASS", out)
    assert out.rstrip().endswith("0 fail: OK")


def test_demo_port_in_use_is_a_clear_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "asgi_ws_handshake", "demo", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
        )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "--port 0" in done.stderr


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    argv = [
        sys.executable,
        "-m",
        "asgi_ws_handshake",
        "demo",
        "--port",
        "{port}",
        "--foreign-port",
        "0",
    ]
    with running("demo", argv, tmp_path_factory.mktemp("demo")) as server:
        yield urls(server)


def urls(server: Server) -> tuple[str, str]:
    deadline = time.monotonic() + 10
    while not (found := re.search(r"foreign origin:\s+(http://\S+)", server.log())):
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)
    return f"http://127.0.0.1:{server.port}/", found.group(1)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium")
def test_demo_page_in_chromium(demo: tuple[str, str]) -> None:
    from playwright.sync_api import expect, sync_playwright

    main_url, foreign_url = demo
    main_origin, foreign_origin = main_url.rstrip("/"), foreign_url.rstrip("/")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(10_000)
            page.goto(main_url)
            # The allowed page connects and its own audit row appears, live.
            expect(page.locator("#status")).to_have_attribute("data-state", "connected")
            expect(page.locator("#status")).to_contain_text("chat.v1")
            row = page.locator(
                f'tr[data-path="/chat"][data-origin="{main_origin}"][data-outcome="accepted"]'
            )
            expect(row).to_have_count(1)
            expect(row).to_have_attribute("data-subprotocol", "chat.v1")
            expect(row).to_have_attribute("data-status", "101")
            page.fill("#text", "hello from the allowed page")
            page.click("#form button")
            expect(page.locator("#log")).to_contain_text("hello from the allowed page")

            # The foreign page is refused, and says why from the live audit table.
            foreign = browser.new_page()
            foreign.set_default_timeout(10_000)
            foreign.goto(foreign_url)
            expect(foreign.locator("#status")).to_have_attribute("data-state", "refused")
            expect(foreign.locator("#status")).to_have_attribute(
                "data-reason", "origin_not_allowed"
            )
            refused = foreign.locator(
                f'tr[data-origin="{foreign_origin}"][data-reason="origin_not_allowed"]'
            )
            expect(refused).to_have_count(1)
            expect(refused).to_have_attribute("data-status", "403")
            expect(refused).to_have_attribute("data-outcome", "rejected")
            # ... and the refusal shows up, live, in the table of the page already open.
            expect(
                page.locator(
                    f'tr[data-origin="{foreign_origin}"][data-reason="origin_not_allowed"]'
                )
            ).to_have_count(1)
        finally:
            browser.close()


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium")
def test_demo_room_signs_in_refuses_an_expired_ticket_and_closes_at_expiry(
    demo: tuple[str, str],
) -> None:
    from playwright.sync_api import expect, sync_playwright

    main_url, _ = demo
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(10_000)
            page.goto(main_url)
            status = page.locator("#room-status")
            # An expired ticket is refused, and the table says why.
            page.fill("#name", "zoe")
            page.click("#expired-ticket")
            expect(status).to_have_attribute("data-state", "refused")
            expect(page.locator('tr[data-path="/room"][data-reason="auth_expired"]')).to_have_count(
                1
            )
            # Sign in with a short session: the room opens with the identity...
            page.check("#short")
            page.click("#open-room")
            expect(status).to_have_attribute("data-state", "connected")
            expect(status).to_contain_text("in the room as zoe")
            accepted = page.locator(
                'tr[data-path="/room"][data-subject="zoe"][data-outcome="accepted"]'
            )
            expect(accepted).to_have_count(1)
            # ... and the guard closes it when the session expires, live in the table.
            expect(status).to_have_attribute("data-state", "closed", timeout=15_000)
            expect(status).to_have_attribute("data-code", "1008")
            closed = page.locator(
                'tr[data-path="/room"][data-subject="zoe"][data-outcome="closed_by_guard"]'
            )
            expect(closed).to_have_count(1)
            expect(closed).to_have_attribute("data-reason", "credential expired")
        finally:
            browser.close()
