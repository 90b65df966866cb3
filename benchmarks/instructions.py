"""CPU instructions per handshake, counted by valgrind: deterministic where wall clocks wobble.

Each variant runs in its own process under ``valgrind --tool=cachegrind --cache-sim=no``
twice, with the same process layout: the same imports, the same scopes built, the same warm-up
handshakes, then either ``N`` more handshakes or none. The difference of the two totals over
``N`` is the instructions one handshake costs, start-up and warm-up cancelled out. Keys are
drawn from a seeded generator and ``PYTHONHASHSEED`` is fixed, so a rerun counts the same.

Variants (``benchmarks.inprocess`` builds the apps and scopes; all see identical scopes):
``bare`` (the app alone), ``ours`` (the full policy, key store, event in a ``MemorySink``),
``channels`` (Django Channels' ``OriginValidator``, origin only), ``ours_refused`` (a
cross-site handshake, 403), and ``http_bare`` / ``http_ours`` (an ``http`` scope).
The integrations, each beside ``ours``'s sink: ``ours_prometheus`` (a ``PrometheusSink``),
``ours_otel_noop`` (an ``OpenTelemetrySink`` with no SDK configured: the API's no-op),
``ours_otel_sdk`` (the SDK recording spans and metrics, exporting nothing: the cost paid in
the handshake's task; exporters work in their own threads), ``ours_otel_metrics`` (the same
with ``spans=False``).
Reported: instructions added over the bare app (the integrations: over ``ours``), and
ours / Channels (target <= 0.5).

    python -m benchmarks.instructions [--quick] [--count N] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.common import ROOT, emit, parser, table, verdict

WARM = 300  # handshakes before the measured ones: caches and stores in their steady state
FULL_COUNT = 3000
QUICK_COUNT = 200
_IREFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def _keys(count: int) -> list[str]:
    rng = random.Random(1234)
    return [base64.b64encode(rng.randbytes(16)).decode() for _ in range(count)]


def _variant(name: str) -> tuple[Callable[..., Any], Callable[[str], Any]]:
    """The ASGI app and the scope factory (of a key) for one variant."""
    from benchmarks import inprocess

    if name == "bare":
        return inprocess.minimal_app, inprocess.websocket_scope
    if name == "ours":
        return inprocess.guarded(), inprocess.websocket_scope
    if name == "ours_refused":
        return inprocess.guarded(), lambda key: inprocess.websocket_scope(
            key, origin="https://evil.example.net"
        )
    if name == "channels":
        validator = inprocess.channels_validator()
        if validator is None:
            raise SystemExit("channels is not installed")
        return validator, inprocess.websocket_scope
    if name in INTEGRATIONS:
        return _integrated(name), inprocess.websocket_scope
    if name == "http_bare":
        return inprocess.minimal_app, lambda key: inprocess.http_scope()
    if name == "http_ours":
        return inprocess.guarded(), lambda key: inprocess.http_scope()
    raise SystemExit(f"unknown variant {name!r}")


VARIANTS = ("bare", "ours", "channels", "ours_refused", "http_bare", "http_ours")
INTEGRATIONS = ("ours_prometheus", "ours_otel_noop", "ours_otel_sdk", "ours_otel_metrics")


def _integrated(name: str) -> Callable[..., Any]:
    """``ours`` with one more sink: the integration ``name``."""
    from asgi_ws_handshake import HandshakeMiddleware, MemorySink, MemoryStore
    from benchmarks import inprocess

    sink: Any
    if name == "ours_prometheus":
        from prometheus_client import CollectorRegistry

        from asgi_ws_handshake.metrics import PrometheusSink

        sink = PrometheusSink(CollectorRegistry())
    elif name == "ours_otel_noop":
        from asgi_ws_handshake.otel import OpenTelemetrySink

        sink = OpenTelemetrySink()
    else:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider

        from asgi_ws_handshake.otel import OpenTelemetrySink

        sink = OpenTelemetrySink(
            tracer_provider=TracerProvider(),
            meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
            spans=name == "ours_otel_sdk",
        )
    return HandshakeMiddleware(
        inprocess.minimal_app,
        policy=inprocess.full_policy(),
        audit=[MemorySink(), sink],
        store=MemoryStore(),
    )


def driver(name: str, count: int, measured: int) -> None:
    """Build ``WARM + count`` scopes, run the warm-up, then ``measured`` (count or 0) more."""
    from benchmarks import inprocess

    app, make_scope = _variant(name)
    scopes = [make_scope(key) for key in _keys(WARM + count)]

    async def calls() -> None:
        receive, send = inprocess.receive, inprocess.send
        for scope in scopes[: WARM + measured]:
            await app(scope, receive, send)

    asyncio.new_event_loop().run_until_complete(calls())


def count_instructions(name: str, count: int, measured: int) -> int:
    """Total instructions of one driver process under cachegrind."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    argv = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "benchmarks.instructions",
        "--driver",
        name,
        "--count",
        str(count),
        "--measured",
        str(measured),
    ]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    found = _IREFS.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"valgrind run of {name!r} failed:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_handshake(name: str, count: int) -> float:
    """Instructions one handshake of ``name`` costs: (N handshakes - 0 handshakes) / N."""
    return (count_instructions(name, count, count) - count_instructions(name, count, 0)) / count


def run(count: int, variants: Sequence[str] = (*VARIANTS, *INTEGRATIONS)) -> dict[str, Any]:
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    per = {name: per_handshake(name, count) for name in variants}
    result: dict[str, Any] = {"benchmark": "instructions", "count": count, "per_call": per}
    if "bare" in per:
        result["added"] = added = {
            name: per[name] - per["bare"]
            for name in per
            if name in ("ours", "channels", "ours_refused")
        }
        if "ours" in added and "channels" in added:
            result["ratio_to_channels"] = added["ours"] / added["channels"]
    if "ours" in per:
        integrations = {name: per[name] - per["ours"] for name in per if name in INTEGRATIONS}
        if integrations:
            result["integration_added"] = integrations
    if "http_bare" in per and "http_ours" in per:
        result["http_added"] = per["http_ours"] - per["http_bare"]
    return result


def render(result: dict[str, Any]) -> str:
    per, added = result["per_call"], result.get("added", {})
    labels = {
        "bare": "bare app, accepted handshake",
        "ours": "asgi-ws-handshake full policy, accepted",
        "channels": "Channels OriginValidator (origin only), accepted",
        "ours_refused": "asgi-ws-handshake, refused (403, app not called)",
        "http_bare": "bare app, http request",
        "http_ours": "asgi-ws-handshake, http request",
        "ours_prometheus": "ours + PrometheusSink (added over ours)",
        "ours_otel_noop": "ours + OpenTelemetrySink, no SDK (added over ours)",
        "ours_otel_sdk": "ours + OpenTelemetrySink, SDK recording (added over ours)",
        "ours_otel_metrics": "ours + OpenTelemetrySink(spans=False), SDK (added over ours)",
    }
    added = {**added, **result.get("integration_added", {})}
    rows: list[list[object]] = []
    for name, value in per.items():
        extra = added.get(name)
        if name == "http_ours" and "http_added" in result:
            extra = result["http_added"]
        rows.append([labels[name], f"{value:,.0f}", "" if extra is None else f"{extra:,.0f}"])
    if "ratio_to_channels" in result:
        ratio = result["ratio_to_channels"]
        rows.append(
            ["ours / Channels added (target <= 0.5)", "", f"{ratio:.2f} {verdict(ratio <= 0.5)}"]
        )
    head = (
        f"CPU instructions per call under valgrind (cachegrind --cache-sim=no), "
        f"{result['count']} calls after {WARM} warm-up, difference of N and 0 in one layout"
    )
    return head + "\n" + table(["variant", "instructions/call", "added"], rows)


def main(argv: Sequence[str] | None = None) -> None:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if "--driver" in args_list:
        driven = argparse.ArgumentParser()
        driven.add_argument("--driver", required=True)
        driven.add_argument("--count", type=int, required=True)
        driven.add_argument("--measured", type=int, required=True)
        got = driven.parse_args(args_list)
        driver(got.driver, got.count, got.measured)
        return
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--count", type=int, default=FULL_COUNT)
    p.add_argument("--variants", default=",".join((*VARIANTS, *INTEGRATIONS)))
    args = p.parse_args(args_list)
    count = QUICK_COUNT if args.quick else args.count
    result = run(count, [v for v in args.variants.split(",") if v])
    emit(result, render(result), args.json)


if __name__ == "__main__":
    main()
