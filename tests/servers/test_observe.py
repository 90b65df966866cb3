"""Observability through a real uvicorn (``tests/apps/observe.py``): OpenTelemetry spans and
meters read back from the server's own SDK, with and without the ASGI instrumentation in
front; a real ``/metrics`` scrape; the Grafana dashboard's queries against that scrape; and
``prometheus_client``'s multiprocess mode under ``--workers 2``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin, Subprotocol

from asgi_ws_handshake.otel import SPAN_NAME
from tests.support import ROOT, Server, handshake_lines, new_key, raw_handshake, running
from tests.support import uvicorn_argv as _uvicorn_argv

APP = "tests.apps.observe:app"
ALLOWED = Origin("http://allowed.test")
DASHBOARD = ROOT / "examples" / "grafana_dashboard.json"
T = TypeVar("T")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def uvicorn_argv(*extra: str) -> list[str]:
    return _uvicorn_argv("websockets-sansio", APP, *extra)


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running("observe", uvicorn_argv(), tmp_path_factory.mktemp("observe")) as server:
        yield server


@pytest.fixture(scope="module")
def instrumented_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("observe-otel")
    with running("observe-otel", uvicorn_argv(), tmp, env={"WSH_OTEL_ASGI": "1"}) as server:
        yield server


def fetch(server: Server, path: str) -> bytes:
    with urllib.request.urlopen(f"http://{server.host}{path}", timeout=5) as response:
        body: bytes = response.read()
        return body


def scrape(server: Server) -> Samples:
    text = fetch(server, "/metrics").decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def until(probe: Callable[[], T], done: Callable[[T], bool], timeout: float = 10.0) -> T:
    """Probe until ``done`` (the server records after answering), at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if done(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


async def chat(server: Server, room: str) -> contextlib.AbstractAsyncContextManager[Any]:
    return connect(
        server.url(f"/chat/{room}"), origin=ALLOWED, subprotocols=[Subprotocol("chat.v1")]
    )


async def hello(ws: ClientConnection) -> int:
    """The worker's pid, which the chat endpoint sends first."""
    pid: int = json.loads(await ws.recv())["pid"]
    return pid


def refuse(server: Server, path: str, **kwargs: Any) -> int:
    request = handshake_lines(server.host, path=path, key=new_key(), **kwargs)
    return raw_handshake(server.port, request).status


# -- OpenTelemetry ----------------------------------------------------------------------------


def telemetry(server: Server) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(fetch(server, "/telemetry"))
    return found


def point(found: dict[str, Any], name: str, **attributes: Any) -> Any:
    """The value (or histogram count) of the point of ``name`` with exactly ``attributes``."""
    for p in found["metrics"]:
        if p["name"] == name and p["attributes"] == attributes:
            return p["value"] if p["value"] is not None else p["count"]
    return 0


@pytest.mark.parametrize("instrumented", [False, True], ids=["own-span", "asgi-instrumented"])
async def test_opentelemetry_through_uvicorn(
    instrumented: bool, request: pytest.FixtureRequest
) -> None:
    server: Server = request.getfixturevalue(
        "instrumented_server" if instrumented else "plain_server"
    )
    route = {"websocket.handshake.route": "/chat/*"}
    accepted = {
        "websocket.handshake.outcome": "accepted",
        "http.response.status_code": 101,
        **route,
    }
    lifetime = {
        **route,
        "websocket.connection.close_code": "4xxx",
        "websocket.connection.closed_by": "client",
    }
    before = telemetry(server)
    room = uuid.uuid4().hex
    async with await chat(server, room) as ws:
        await hello(ws)
        during = telemetry(server)
        await ws.close(4001)
    assert point(during, "websocket.server.active_connections", **route) == (
        point(before, "websocket.server.active_connections", **route) + 1
    )
    assert refuse(server, f"/chat/{room}-x", origin="http://evil.test") == 403

    after = until(
        lambda: telemetry(server),
        lambda t: (
            point(t, "websocket.server.connection.duration", **lifetime)
            > point(before, "websocket.server.connection.duration", **lifetime)
        ),
    )
    events = until(server.events, lambda e: sum(room in x.get("path", "") for x in e) >= 3)
    opened, closed, refused = (e for e in events if room in e.get("path", ""))
    assert (opened["outcome"], closed["event"], refused["reason"]) == (
        "accepted",
        "closed",
        "origin_not_allowed",
    )

    def grown(name: str, **attributes: Any) -> Any:
        return point(after, name, **attributes) - point(before, name, **attributes)

    assert grown("websocket.server.handshakes", **accepted) == 1
    refusal = {
        "websocket.handshake.outcome": "rejected",
        "websocket.handshake.reason": "origin_not_allowed",
        "http.response.status_code": 403,
        **route,
    }
    assert grown("websocket.server.handshakes", **refusal) == 1
    outcome = {"websocket.handshake.outcome": "accepted", **route}
    assert grown("websocket.server.handshake.duration", **outcome) == 1
    assert grown("websocket.server.connection.duration", **lifetime) == 1
    assert point(after, "websocket.server.active_connections", **route) == point(
        before, "websocket.server.active_connections", **route
    )

    by_id = {
        span["attributes"].get("websocket.handshake.id"): span
        for span in after["spans"]
        if "websocket.handshake.id" in span["attributes"]
    }
    mine, theirs = by_id[opened["id"]], by_id[refused["id"]]
    assert mine["kind"] == theirs["kind"] == "SERVER"
    assert mine["attributes"]["websocket.handshake.subprotocol"] == "chat.v1"
    assert mine["attributes"]["websocket.handshake.origin"] == "http://allowed.test"
    assert theirs["attributes"]["http.response.status_code"] == 403
    if instrumented:
        # The instrumentation's server span carries everything; no span of ours beside it.
        assert room in mine["name"]
        assert mine["name"] != SPAN_NAME
        assert mine["attributes"]["websocket.connection.close_code"] == "4001"
        assert mine["attributes"]["websocket.connection.closed_by"] == "client"
        assert not any(s["name"] == SPAN_NAME for s in after["spans"])
    else:
        assert mine["name"] == theirs["name"] == SPAN_NAME
        assert mine["attributes"]["http.route"] == "/chat/*"
        assert mine["attributes"]["url.path"] == f"/chat/{room}"
        # The span is the audited interval: it ends when the outcome was known.
        assert mine["end"] - mine["start"] == pytest.approx(opened["duration"] * 1e9, abs=1000)


# -- Prometheus -----------------------------------------------------------------------------------


async def test_prometheus_scrape_through_uvicorn(plain_server: Server) -> None:
    server = plain_server
    before = scrape(server)
    chat_route = {"route": "/chat/*"}
    async with await chat(server, "lobby") as ws:
        await hello(ws)
        during = scrape(server)
        async with connect(server.url("/bye")) as bye:  # the app closes it with 4001
            await bye.wait_closed()
        await ws.close(1000)
    assert value(during, "websocket_connections_open", **chat_route) == (
        value(before, "websocket_connections_open", **chat_route) + 1
    )
    assert refuse(server, "/chat/lobby", origin="http://evil.test") == 403
    assert refuse(server, "/bye", protocols="x, x") == 400  # a duplicate: malformed
    async with connect(server.url("/boom")) as boom:  # its audit event makes a sink raise
        await boom.wait_closed()

    lifetime = {"route": "/chat/*", "code": "1000", "closed_by": "client"}
    name = "websocket_connections_lifetime_seconds_count"
    after = until(
        lambda: scrape(server),
        lambda s: (
            value(s, name, **lifetime) > value(before, name, **lifetime)
            and value(s, "websocket_audit_failures_total")
            > value(before, "websocket_audit_failures_total")
        ),
    )

    def grown(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    total = "websocket_handshakes_total"
    assert grown(total, outcome="accepted", reason="", route="/chat/*", status="101") == 1
    assert grown(total, outcome="accepted", reason="", route="default", status="101") == 2
    assert (
        grown(total, outcome="rejected", reason="origin_not_allowed", route="/chat/*", status="403")
        == 1
    )
    assert (
        grown(
            total, outcome="rejected", reason="subprotocol_malformed", route="default", status="400"
        )
        == 1
    )
    timed = "websocket_handshakes_duration_seconds_count"
    assert grown(timed, outcome="accepted", route="default") == 2
    assert grown(name, **lifetime) == 1
    assert grown(name, route="default", code="none", closed_by="app") == 2  # /bye and /boom
    assert grown("websocket_audit_failures_total") == 1
    assert value(after, "websocket_connections_open", **chat_route) == value(
        before, "websocket_connections_open", **chat_route
    )
    # Bounded label values: route patterns and codes, never a path, an origin or a client.
    labels = {v for (_, pairs) in after for (_, v) in pairs}
    assert not any("lobby" in v or "allowed.test" in v or "127.0.0.1" in v for v in labels)


# -- the dashboard ---------------------------------------------------------------------------------

_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}


def promql_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (enough PromQL for a dashboard's queries)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for found in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[found.end() :].lstrip().startswith("(") or found.group() in _PROMQL_WORDS:
            continue  # a function or an aggregation, or a keyword
        names.add(found.group())
    return names


def dashboard_queries() -> tuple[list[str], set[str]]:
    """The dashboard's panel expressions, and the metrics its variables query."""
    board = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]
    variables = {
        match.group(1)
        for variable in board["templating"]["list"]
        if variable["type"] == "query"
        for match in [re.fullmatch(r"label_values\((\w+),\s*\w+\)", variable["query"]["query"])]
        if match
    }
    return exprs, variables


def test_promql_metric_names_are_found() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, route) (rate(a_bucket{route=~"$route", x="y(z)"}'
        "[$__rate_interval]))) / ignoring(k) b_total + 1e3"
    )
    assert promql_metrics(expr) == {"a_bucket", "b_total"}


async def test_dashboard_queries_name_only_exported_metrics(plain_server: Server) -> None:
    exprs, variables = dashboard_queries()
    assert len(exprs) >= 4
    used = set().union(*(promql_metrics(expr) for expr in exprs)) | variables
    # What the panels must show: outcomes, refusal reasons, open connections, p95 duration.
    assert {
        "websocket_handshakes_total",
        "websocket_connections_open",
        "websocket_handshakes_duration_seconds_bucket",
    } <= used
    async with await chat(plain_server, "dashboard") as ws:  # every family has samples
        await hello(ws)
    assert refuse(plain_server, "/chat/dashboard", origin="http://evil.test") == 403
    exported = until(
        lambda: {name for (name, _) in scrape(plain_server)},
        lambda names: "websocket_connections_lifetime_seconds_bucket" in names,
    )
    assert used <= exported, used - exported


# -- several workers ----------------------------------------------------------------------------


async def test_prometheus_multiprocess_under_workers(tmp_path: Path) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    argv = uvicorn_argv("--workers", "2")
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory)}
    open_ = ("websocket_connections_open", frozenset({("route", "/chat/*")}))
    accepted = frozenset(
        {("outcome", "accepted"), ("reason", ""), ("route", "/chat/*"), ("status", "101")}
    )
    with running("observe-workers", argv, tmp_path, env=env) as server:
        started = until(server.log, lambda log: log.count("Application startup complete") == 2)
        assert started.count("Application startup complete") == 2, started
        async with contextlib.AsyncExitStack() as stack:
            pids: Counter[int] = Counter()
            for batch in range(6):  # until both workers hold connections (bounded)
                opened = [
                    await stack.enter_async_context(await chat(server, f"w{batch}-{i}"))
                    for i in range(4)
                ]
                pids.update([await hello(ws) for ws in opened])
                if len(pids) == 2:
                    break
            held = sum(pids.values())
            # Whichever worker answers the scrape, it reports every worker's sum.
            for _ in range(4):
                samples = scrape(server)
                assert samples[open_] == held
                assert samples[("websocket_handshakes_total", accepted)] == held
            assert len(pids) == 2, f"one worker took all {held} connections"
            victim, lost = pids.most_common()[-1]
            os.kill(victim, signal.SIGKILL)  # a crash: no close events from it
            samples = until(lambda: scrape(server), lambda s: s[open_] == held - lost)
            assert samples[open_] == held - lost  # its live gauge is gone with it
            assert samples[("websocket_handshakes_total", accepted)] == held  # counts stay
