"""What a handshake's instructions buy: CPython's price for the operations one is made of.

The instruction target of issue #12 is at most half of what Channels' ``OriginValidator``
adds per handshake. This benchmark prices, in the same unit and the same way (valgrind
``cachegrind --cache-sim=no``, the difference of N operations and none in one process
layout), the operations an accepted handshake cannot avoid in pure Python: calls, objects,
coroutines, reading the header list, checking the key, reading the clock. Each row is one
operation in a loop, minus the empty loop. With ``--budget`` (the default outside
``--quick``) it also counts Channels' added instructions and the floor sketch
(``benchmarks/floor.py``) in the same run, and prints what half of Channels' leaves once the
floor's mandatory work is paid.

    python -m benchmarks.costs [--quick] [--count N] [--no-budget] [--json PATH]
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import contextlib
import functools
import gc
import operator
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from benchmarks import valgrind
from benchmarks.common import emit, parser, table

FULL_COUNT, QUICK_COUNT = 3000, 30
WARM = 200

_NAME = operator.itemgetter(0)
_FIELDS = {b"origin": 0, b"host": 1, b"sec-websocket-version": 2, b"sec-websocket-key": 3}


def _function(a: object, b: object, c: object) -> None:
    return None


async def _returns() -> None:
    return None


class _Slotted:
    __slots__ = ("a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k")

    def __init__(self, a: int, b: int, c: int, d: int, e: int, f: int, g: int, h: int,
                 i: int, j: int, k: int) -> None:  # fmt: skip
        self.a, self.b, self.c, self.d, self.e, self.f = a, b, c, d, e, f
        self.g, self.h, self.i, self.j, self.k = g, h, i, j, k


class _Tuple(NamedTuple):
    a: int
    b: int
    c: int
    d: int
    e: int
    f: int
    g: int
    h: int
    i: int
    j: int
    k: int


class Data(NamedTuple):
    """What the operations work on: a browser's header list and distinct keys."""

    headers: list[tuple[bytes, bytes]]
    keys: list[bytes]


# -- the operations: each a loop of ``n`` (the loop's own cost is the ``loop`` row)


def _loop(data: Data, n: int) -> None:
    for _ in range(n):
        pass


def _call(data: Data, n: int) -> None:
    f = _function
    for _ in range(n):
        f(1, 2, 3)


def _c_method(data: Data, n: int) -> None:
    fields = _FIELDS
    for _ in range(n):
        fields.get(b"origin")


def _object(data: Data, n: int) -> None:
    for _ in range(n):
        _Slotted(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)


def _named_tuple(data: Data, n: int) -> None:
    for _ in range(n):
        _Tuple(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)


def _coroutine(data: Data, n: int) -> None:
    async def awaits() -> None:
        for _ in range(n):
            await _returns()

    with contextlib.suppress(StopIteration):
        awaits().send(None)


def _header_loop(data: Data, n: int) -> None:
    headers, get = data.headers, _FIELDS.get
    for _ in range(n):
        found = [None, None, None, None]
        for name, value in headers:
            index = get(name)
            if index is not None:
                found[index] = value  # type: ignore[call-overload]


def _header_join(data: Data, n: int) -> None:
    headers, layouts = data.headers, {b"": None}
    for _ in range(n):
        layouts.get(b"\n".join(map(_NAME, headers)))


def _key_text(data: Data, n: int) -> None:
    keys = data.keys
    for i in range(n):
        keys[i].decode("latin-1").strip(" \t")


def _key_check(data: Data, n: int) -> None:
    keys, decode = data.keys, binascii.a2b_base64
    for i in range(n):
        len(decode(keys[i], strict_mode=True)) == 16  # noqa: B015 (the work measured)


def _clock(data: Data, n: int) -> None:
    clock = time.time
    for _ in range(n):
        clock()


def _event_tuple(data: Data, n: int) -> None:
    ring: collections.deque[tuple[object, ...]] = collections.deque(maxlen=1000)
    keys = data.keys
    for i in range(n):
        ring.append((i, 0.0, ("203.0.113.7", 51234), "/graphql", keys[i], False, None))


#: name -> (what it is, the loop)
OPERATIONS: dict[str, tuple[str, Callable[[Data, int], None]]] = {
    "loop": ("the empty loop (subtracted from every row)", _loop),
    "call": ("a Python function call, three arguments", _call),
    "c_method": ("a C method call: dict.get", _c_method),
    "object": ("an object of 11 fields: a slotted class's __init__", _object),
    "named_tuple": ("an object of 11 fields: a NamedTuple", _named_tuple),
    "coroutine": ("a coroutine created and awaited (returns at once)", _coroutine),
    "header_loop": ("14 header lines read in a Python loop, a dict.get each", _header_loop),
    "header_join": ("14 header names joined at C speed and looked up", _header_join),
    "key_text": ("the key as text: decode latin-1, strip", _key_text),
    "key_check": ("the key checked: strict base64 of 16 bytes", _key_check),
    "clock": ("the clock read: time.time()", _clock),
    "event_tuple": ("a 7-item event tuple kept in a ring (the floor's event)", _event_tuple),
}


def data(count: int) -> Data:
    from benchmarks import inprocess

    rng = random.Random(1234)
    keys = [base64.b64encode(rng.randbytes(16)) for _ in range(count)]
    return Data(list(inprocess.websocket_scope(keys[0].decode())["headers"]), keys)


def driver(name: str, measured: int, count: int) -> None:
    """Prepare ``WARM + count`` inputs, run the warm-up, then ``measured`` operations."""
    loop = OPERATIONS[name][1]
    prepared = data(WARM + count)
    loop(prepared, WARM)
    gc.collect()
    gc.freeze()
    loop(prepared, measured)
    sys.stdout.flush()
    os._exit(0)


def count_instructions(name: str, measured: int, count: int) -> int:
    arguments = [name, "--measured", str(measured), "--count", str(count)]
    return valgrind.count_driver(f"cost_{name}.{measured}", "benchmarks.costs", arguments)


def run(count: int, budget: bool) -> dict[str, Any]:
    valgrind.require()
    valgrind.precompile()
    jobs = {
        (name, measured): functools.partial(count_instructions, name, measured, count)
        for name in OPERATIONS
        for measured in (count, 0)
    }
    totals = valgrind.side_by_side(jobs)
    raw = {name: (totals[name, count] - totals[name, 0]) / count for name in OPERATIONS}
    per_op = {name: raw[name] - raw["loop"] for name in OPERATIONS if name != "loop"}
    result: dict[str, Any] = {"benchmark": "costs", "count": count, "per_op": per_op}
    if budget:
        from benchmarks import instructions

        counted = instructions.run(1200, count, ("bare", "channels", "floor"))
        channels, floor = counted["added"]["channels"], counted["added"]["floor"]
        result["budget"] = {
            "channels_added": channels,
            "target": channels / 2,
            "floor_added": floor,
            "left_after_floor": channels / 2 - floor,
        }
    return result


def render(result: dict[str, Any]) -> str:
    rows = [[OPERATIONS[name][0], f"{value:,.0f}"] for name, value in result["per_op"].items()]
    text = (
        "CPU instructions per operation under valgrind (cachegrind --cache-sim=no), "
        f"{result['count']} operations, the empty loop subtracted\n"
        + table(["operation", "instructions"], rows)
    )
    budget = result.get("budget")
    if budget:
        text += "\n\n" + table(
            ["the target's budget per accepted handshake", "instructions"],
            [
                ["Channels' OriginValidator adds", f"{budget['channels_added']:,.0f}"],
                ["the target: at most half of it", f"{budget['target']:,.0f}"],
                ["the floor sketch adds (no safety)", f"{budget['floor_added']:,.0f}"],
                ["left for everything that makes it safe", f"{budget['left_after_floor']:,.0f}"],
            ],
        )  # fmt: skip
    return text


def main(argv: Sequence[str] | None = None) -> None:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if "--driver" in args_list:
        driven = argparse.ArgumentParser()
        driven.add_argument("--driver", required=True, choices=list(OPERATIONS))
        driven.add_argument("--measured", type=int, required=True)
        driven.add_argument("--count", type=int, required=True)
        got = driven.parse_args(args_list)
        driver(got.driver, got.measured, got.count)
        return
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--count", type=int, default=FULL_COUNT)
    p.add_argument("--no-budget", action="store_true", help="skip the Channels and floor counts")
    args = p.parse_args(args_list)
    count = QUICK_COUNT if args.quick else args.count
    result = run(count, budget=not (args.quick or args.no_budget))
    emit(result, render(result), args.json)


if __name__ == "__main__":
    main()
