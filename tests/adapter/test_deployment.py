"""Sec-Fetch-Site and report-only (``enforce=False``) through the middleware (the scripted
harness): what the audit and the metrics say. The proxy rules alone: tests/core/test_proxies.py.
"""

from __future__ import annotations

import logging

import pytest

from asgi_ws_handshake import HandshakePolicy, LoggingSink
from tests.asgi import run, ws_scope

# -- Sec-Fetch-Site


async def test_sec_fetch_site_is_read_in_the_single_pass_and_audited() -> None:
    scope = ws_scope(origin=None, extra=[(b"Sec-Fetch-Site", b"cross-site")])
    result = await run(None, scope)
    assert result.app_scopes == []
    (event,) = result.sink.events
    assert (event.reason, event.status, event.fetch_site) == (
        "fetch_site_cross_site",
        403,
        "cross-site",
    )
    assert result.script.sent[0]["status"] == 403


# -- report-only


async def test_report_only_lets_the_handshake_through_and_audits_would_reject(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = HandshakePolicy(subprotocols=["chat.v1"], enforce=False)
    scope = ws_scope(origin="https://evil.example", protocols="chat.v1")
    with caplog.at_level(logging.INFO, "asgi_ws_handshake.audit"):
        result = await run(None, scope, policy=policy, audit=[LoggingSink()])
    assert result.script.types() == ["websocket.accept"]
    assert result.script.sent[0]["subprotocol"] == "chat.v1"  # negotiated all the same
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    assert "accepted" in record.getMessage()
    assert record.getMessage().endswith("would_reject=origin_not_allowed")
    data = record.ws_handshake  # type: ignore[attr-defined]
    assert (data["outcome"], data["reason"], data["status"]) == ("accepted", None, 101)
    assert data["would_reject"] == "origin_not_allowed"


async def test_report_only_skips_no_check_and_enforcing_routes_still_refuse() -> None:
    report = HandshakePolicy(enforce=False, key_reuse="reject")
    result = await run(None, ws_scope(version="8"), policy=report)
    (event,) = result.sink.events
    assert (event.outcome, event.would_reject) == ("accepted", "version_unsupported")
    # A store check's refusal is reported the same way: the second use of a key.
    first = await run(None, ws_scope(key="AAAAAAAAAAAAAAAAAAAAAA=="), policy=report)
    second = await run(
        None,
        ws_scope(key="AAAAAAAAAAAAAAAAAAAAAA=="),
        policy=report,
        store=first.middleware.store,
    )
    assert [e.would_reject for e in second.sink.events] == ["key_reused"]
    assert second.script.types() == ["websocket.accept"]
    enforced = await run(None, ws_scope(origin="https://evil.example"))
    assert enforced.script.sent[0]["status"] == 403
    assert enforced.sink.events[0].would_reject is None


async def test_report_only_with_a_malformed_offer_selects_nothing() -> None:
    policy = HandshakePolicy(subprotocols=["chat.v1"], enforce=False)
    result = await run(None, ws_scope(protocols="chat.v1, bad token"), policy=policy)
    assert "subprotocol" not in result.script.sent[0]
    assert result.sink.events[0].would_reject == "subprotocol_malformed"


async def test_prometheus_counts_report_only_passes_apart() -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from asgi_ws_handshake.metrics import PrometheusSink

    registry = prometheus_client.CollectorRegistry()
    sink = PrometheusSink(registry)
    policy = HandshakePolicy(enforce=False)
    await run(None, ws_scope(origin="https://evil.example"), policy=policy, audit=sink)
    labels = {"reason": "origin_not_allowed", "route": "default"}
    assert registry.get_sample_value("websocket_handshakes_would_reject_total", labels) == 1.0
    accepted = {"outcome": "accepted", "reason": "", "route": "default", "status": "101"}
    assert registry.get_sample_value("websocket_handshakes_total", accepted) == 1.0
