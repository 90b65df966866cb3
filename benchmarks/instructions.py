"""CPU instructions per handshake, counted by valgrind: deterministic where wall clocks wobble.

Each variant runs in its own process under ``valgrind --tool=cachegrind --cache-sim=no``
twice, with the same process layout: the same imports, the same scopes built, the same
``--warm`` handshakes, then either ``--count`` more handshakes or none. The difference of the
two totals over the count is the instructions one call costs, start-up and warm-up cancelled
out. Keys come from a seeded generator and ``PYTHONHASHSEED`` is fixed, so a rerun counts the
same (to a few instructions per call). Runs go two at a time (a count does not depend on load).

What a server would not pay per handshake is kept out: the warm-up (default 1,200) fills the
``MemorySink`` (1,000 events) and every cache, so the measured calls find them in their steady
state; after it, the collector is told to ignore everything built so far (``gc.freeze``), so
collections traverse what the calls create and keep, not the benchmark's thousands of
prepared scopes (whose size would decide when a full collection falls); and the process ends
with ``os._exit`` after the calls, skipping the interpreter's teardown. What remains is
CPython's granularity: the young collections fall every few hundred handshakes, so N=1,000
and N=3,000 agree to about 2%.

Variants (``VARIANTS``; ``benchmarks.inprocess`` builds the apps and scopes), each with the
variant its "added" is measured against:

- ``bare``, ``ours``, ``channels``, ``ours_refused``, ``floor``: the scopes the issue
  measured (header names and values literal ``bytes`` constants, shared by every scope, so
  their hashes are cached after the first handshake): the bare app; the full policy with
  the key store and the event in a ``MemorySink``; Django Channels' ``OriginValidator``
  (origin only); a cross-site handshake refused with a 403; ``benchmarks.floor``, the
  mandatory steps with no safety (a lower bound, not a middleware).
- ``fresh_bare``, ``fresh_ours``, ``fresh_channels``: the same with every header name and
  value a new ``bytes`` per request, as servers build them (nothing hashed yet).
- ``http_bare``, ``http_ours``, ``http_class``: an ``http`` scope through the bare app, the
  middleware, and a do-nothing middleware class (the yardstick: one extra call).
- ``ours_prometheus``, ``ours_otel_noop``, ``ours_otel_sdk``, ``ours_otel_metrics``: the
  integrations, each beside ``ours``'s sink and measured over ``ours``: a ``PrometheusSink``;
  an ``OpenTelemetrySink`` with no SDK configured (the API's no-op); the SDK recording spans
  and metrics, exporting nothing (the cost paid in the handshake's task; exporters work in
  their own threads); the same with ``spans=False``.
- ``step_scope``, ``step_evaluate``, ``step_store``, ``step_event``: the bare app with the
  middleware's steps done before it, one more each (``benchmarks.steps``), each measured
  against the one before; ``ours`` minus the last is the middleware's own work.

Adding a variant: one function decorated with ``@variant(name, label, baseline=...,
answer=...)`` returning the app and the scope factory (of a key); nothing else changes.
``--smoke`` drives every variant without valgrind and checks its first answer.

    python -m benchmarks.instructions [--quick] [--count N] [--warm N] [--variants a,b]
        [--callgrind DIR] [--json PATH]

One variant by hand (what the benchmark runs; the difference of the two over 3000 is the
count; ``--callgrind DIR`` keeps profiles of both to compare with ``callgrind_annotate``)::

    PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1 valgrind --tool=cachegrind --cache-sim=no \\
        python -m benchmarks.instructions --driver ours --warm 1200 --count 3000 --measured 3000
    ... the same with --measured 0
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import gc
import os
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import valgrind
from benchmarks.common import emit, parser, table, verdict

#: (warm, count)
FULL = (1200, 3000)
QUICK = (10, 30)
#: What ``--quick`` counts (a smoke run: two valgrind processes per variant; every variant
#: is also driven without valgrind by the tests).
QUICK_VARIANTS = ("bare", "ours", "channels")

Build = Callable[[], tuple[Callable[..., Any], Callable[[str], Any]]]


@dataclass(frozen=True)
class Variant:
    label: str
    build: Build  # () -> (the ASGI app, the scope factory of a key)
    baseline: str | None  # the variant whose count "added" is measured against
    answer: str  # the first message each call sends (checked by ``smoke``)


VARIANTS: dict[str, Variant] = {}


def variant(
    name: str, label: str, baseline: str | None = None, answer: str = "websocket.accept"
) -> Callable[[Build], Build]:
    """Register a variant (see the module docstring)."""

    def register(build: Build) -> Build:
        VARIANTS[name] = Variant(label, build, baseline, answer)
        return build

    return register


def _channels() -> Any:
    from benchmarks import inprocess

    validator = inprocess.channels_validator()
    if validator is None:
        raise SystemExit("channels is not installed")
    return validator


# -- the scopes the issue measured: literal header constants


@variant("bare", "bare app, accepted handshake")
def _bare() -> Any:
    from benchmarks import inprocess

    return inprocess.minimal_app, inprocess.websocket_scope


@variant("ours", "asgi-ws-handshake full policy, accepted", baseline="bare")
def _ours() -> Any:
    from benchmarks import inprocess

    return inprocess.guarded(), inprocess.websocket_scope


@variant("channels", "Channels OriginValidator (origin only), accepted", baseline="bare")
def _channels_variant() -> Any:
    from benchmarks import inprocess

    return _channels(), inprocess.websocket_scope


@variant(
    "ours_refused",
    "asgi-ws-handshake, refused (403, app not called)",
    baseline="bare",
    answer="websocket.http.response.start 403",
)
def _ours_refused() -> Any:
    from benchmarks import inprocess

    return inprocess.guarded(), lambda key: inprocess.websocket_scope(
        key, origin="https://evil.example.net"
    )


@variant("floor", "floor: mandatory steps inlined, no safety (not usable)", baseline="bare")
def _floor() -> Any:
    from benchmarks import inprocess
    from benchmarks.floor import Floor

    return Floor(inprocess.minimal_app, inprocess.full_policy()), inprocess.websocket_scope


# -- fresh header objects, as servers build them


@variant("fresh_bare", "fresh header objects: bare app")
def _fresh_bare() -> Any:
    from benchmarks import inprocess

    return inprocess.minimal_app, inprocess.fresh_websocket_scope


@variant("fresh_ours", "fresh header objects: asgi-ws-handshake", baseline="fresh_bare")
def _fresh_ours() -> Any:
    from benchmarks import inprocess

    return inprocess.guarded(), inprocess.fresh_websocket_scope


@variant("fresh_channels", "fresh header objects: Channels", baseline="fresh_bare")
def _fresh_channels() -> Any:
    from benchmarks import inprocess

    return _channels(), inprocess.fresh_websocket_scope


# -- http scopes passing through

_HTTP = "http.response.start 204"


@variant("http_bare", "bare app, http request", answer=_HTTP)
def _http_bare() -> Any:
    from benchmarks import inprocess

    return inprocess.minimal_app, lambda key: inprocess.http_scope()


@variant("http_ours", "asgi-ws-handshake, http request", baseline="http_bare", answer=_HTTP)
def _http_ours() -> Any:
    from benchmarks import inprocess

    return inprocess.guarded(), lambda key: inprocess.http_scope()


@variant(
    "http_class",
    "one do-nothing middleware class, http request",
    baseline="http_bare",
    answer=_HTTP,
)
def _http_class() -> Any:
    from benchmarks import inprocess

    return inprocess.Passthrough(inprocess.minimal_app), lambda key: inprocess.http_scope()


# -- the integrations, each beside ``ours``'s sink, measured over ``ours``


def _integrated(sink: Any) -> Any:
    """``ours`` with one more sink."""
    from asgi_ws_handshake import HandshakeMiddleware, MemorySink, MemoryStore
    from benchmarks import inprocess

    app = HandshakeMiddleware(
        inprocess.minimal_app,
        policy=inprocess.full_policy(),
        audit=[MemorySink(), sink],
        store=MemoryStore(),
    )
    return app, inprocess.websocket_scope


@variant("ours_prometheus", "ours + PrometheusSink (added over ours)", baseline="ours")
def _ours_prometheus() -> Any:
    from prometheus_client import CollectorRegistry

    from asgi_ws_handshake.metrics import PrometheusSink

    return _integrated(PrometheusSink(CollectorRegistry()))


@variant("ours_otel_noop", "ours + OpenTelemetrySink, no SDK (added over ours)", baseline="ours")
def _ours_otel_noop() -> Any:
    from asgi_ws_handshake.otel import OpenTelemetrySink

    return _integrated(OpenTelemetrySink())


def _otel_sdk(spans: bool) -> Any:
    """The SDK recording spans (or not) and metrics, exporting nothing: the cost paid in the
    handshake's task (exporters work in their own threads)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    from asgi_ws_handshake.otel import OpenTelemetrySink

    return _integrated(
        OpenTelemetrySink(
            tracer_provider=TracerProvider(),
            meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
            spans=spans,
        )
    )


@variant(
    "ours_otel_sdk", "ours + OpenTelemetrySink, SDK recording (added over ours)", baseline="ours"
)
def _ours_otel_sdk() -> Any:
    return _otel_sdk(spans=True)


@variant(
    "ours_otel_metrics",
    "ours + OpenTelemetrySink(spans=False), SDK (added over ours)",
    baseline="ours",
)
def _ours_otel_metrics() -> Any:
    return _otel_sdk(spans=False)


# -- where the instructions go: the middleware's steps added one at a time (benchmarks.steps)


def _step(upto: int) -> Build:
    def build() -> Any:
        from benchmarks import inprocess, steps

        return steps.pipeline(upto), inprocess.websocket_scope

    return build


_previous = "bare"
for _upto, _name in enumerate(("scope", "evaluate", "store", "event"), start=1):
    variant(f"step_{_name}", f"bare app + steps to {_name!r}", baseline=_previous)(_step(_upto))
    _previous = f"step_{_name}"


#: Ratios of added instructions reported: name -> (numerator, denominator, target or None).
RATIOS: dict[str, tuple[str, str, float | None]] = {
    "ratio_to_channels": ("ours", "channels", 0.5),
    "fresh_ratio_to_channels": ("fresh_ours", "fresh_channels", 0.5),
    "floor_ratio_to_channels": ("floor", "channels", None),
    "http_ratio_to_class": ("http_ours", "http_class", 1.0),
}
RATIO_LABELS = {
    "ratio_to_channels": "ours / Channels added",
    "fresh_ratio_to_channels": "fresh header objects: ours / Channels added",
    "floor_ratio_to_channels": "floor / Channels added",
    "http_ratio_to_class": "http: ours / one middleware class added",
}


def _keys(count: int) -> list[str]:
    rng = random.Random(1234)
    return [base64.b64encode(rng.randbytes(16)).decode() for _ in range(count)]


def driver(name: str, warm: int, count: int, measured: int) -> None:
    """Build ``warm + count`` scopes, run ``warm`` calls, then ``measured`` (count or 0) more."""
    app, make_scope = VARIANTS[name].build()
    scopes = [make_scope(key) for key in _keys(warm + count)]

    async def calls(todo: list[Any]) -> None:
        from benchmarks.inprocess import receive, send

        for scope in todo:
            await app(scope, receive, send)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(calls(scopes[:warm]))
    # Everything built so far (the scopes above all) leaves the collector's view: collections
    # during the measured calls traverse what those calls create and keep, not the
    # benchmark's own heap, whose size would decide when a full collection falls.
    gc.collect()
    gc.freeze()
    loop.run_until_complete(calls(scopes[warm : warm + measured]))
    # No teardown: the interpreter's final collections would traverse whatever the measured
    # calls left alive (a full sink's events), a cost no server pays per handshake.
    sys.stdout.flush()
    os._exit(0)


def smoke(calls: int = 3) -> dict[str, list[str]]:
    """Drive every variant a few times without valgrind: what each call answered first."""
    from benchmarks.inprocess import receive

    loop = asyncio.new_event_loop()
    answers: dict[str, list[str]] = {}
    for name, spec in VARIANTS.items():
        app, make_scope = spec.build()
        answers[name] = []
        for key in _keys(calls):
            sent: list[dict[str, Any]] = []

            async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
                sent.append(message)

            loop.run_until_complete(app(make_scope(key), receive, send))
            first = sent[0] if sent else {}
            status = first.get("status")
            answers[name].append(f"{first.get('type')}{'' if status is None else f' {status}'}")
    loop.close()
    return answers


def count_instructions(name: str, warm: int, count: int, measured: int) -> int:
    """Total instructions of one driver process under cachegrind."""
    arguments = [name, "--warm", str(warm), "--count", str(count), "--measured", str(measured)]
    return valgrind.count_driver(f"{name}.{measured}", "benchmarks.instructions", arguments)


def run(warm: int, count: int, variants: Sequence[str] = tuple(VARIANTS)) -> dict[str, Any]:
    valgrind.require()
    valgrind.precompile()
    unknown = [name for name in variants if name not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    jobs: dict[tuple[str, int], Callable[[], int]] = {
        (name, measured): functools.partial(count_instructions, name, warm, count, measured)
        for name in variants
        for measured in (count, 0)
    }
    totals = valgrind.side_by_side(jobs)
    per = {name: (totals[name, count] - totals[name, 0]) / count for name in variants}
    added = {
        name: per[name] - per[base]
        for name in per
        if (base := VARIANTS[name].baseline) is not None and base in per
    }
    result: dict[str, Any] = {
        "benchmark": "instructions",
        "warm": warm,
        "count": count,
        "per_call": per,
        "added": added,
    }
    for key, (top, bottom, _) in RATIOS.items():
        if top in added and bottom in added:
            result[key] = added[top] / added[bottom]
    if "ours" in per and "step_event" in per:
        result["middleware_own"] = per["ours"] - per["step_event"]
    return result


def render(result: dict[str, Any]) -> str:
    per, added = result["per_call"], result["added"]
    rows: list[list[object]] = []
    for name, value in per.items():
        extra = added.get(name)
        rows.append(
            [VARIANTS[name].label, f"{value:,.0f}", "" if extra is None else f"{extra:,.0f}"]
        )
    if "middleware_own" in result:
        own = f"{result['middleware_own']:,.0f}"
        rows.append(["the middleware's own (ours - steps to 'event')", "", own])
    for key, (_, _, target) in RATIOS.items():
        if key in result:
            ratio = result[key]
            mark = "" if target is None else f" (target <= {target}: {verdict(ratio <= target)})"
            rows.append([RATIO_LABELS[key], "", f"{ratio:.2f}{mark}"])
    head = (
        "CPU instructions per call under valgrind (cachegrind --cache-sim=no), "
        f"{result['count']} calls after {result['warm']} warm-up, difference of N and 0 "
        "in one layout"
    )
    return head + "\n" + table(["variant", "instructions/call", "added"], rows)


def main(argv: Sequence[str] | None = None) -> None:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if "--driver" in args_list:
        driven = argparse.ArgumentParser()
        driven.add_argument("--driver", required=True, choices=list(VARIANTS))
        driven.add_argument("--warm", type=int, default=FULL[0])
        driven.add_argument("--count", type=int, required=True)
        driven.add_argument("--measured", type=int, required=True)
        got = driven.parse_args(args_list)
        driver(got.driver, got.warm, got.count, got.measured)
        return
    if args_list == ["--smoke"]:  # every variant driven without valgrind (the tests' check)
        wrong = 0
        for name, answers in smoke().items():
            ok = set(answers) == {VARIANTS[name].answer}
            wrong += not ok
            print(f"{name}: {', '.join(answers)} {'ok' if ok else 'UNEXPECTED'}")
        raise SystemExit(1 if wrong else 0)
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--warm", type=int, default=FULL[0])
    p.add_argument("--count", type=int, default=FULL[1])
    p.add_argument("--variants", help=f"default: all ({', '.join(VARIANTS)})")
    p.add_argument("--callgrind", metavar="DIR", help="keep callgrind profiles in DIR")
    args = p.parse_args(args_list)
    if args.callgrind:
        valgrind.PROFILES = Path(args.callgrind)
    warm, count = QUICK if args.quick else (args.warm, args.count)
    chosen = QUICK_VARIANTS if args.quick else tuple(VARIANTS)
    if args.variants:
        chosen = tuple(v for v in args.variants.split(",") if v)
    result = run(warm, count, chosen)
    emit(result, render(result), args.json)


if __name__ == "__main__":
    main()
