"""Memory: bytes per remembered key in ``MemoryStore``, and the peak after a burst.

Measured with ``tracemalloc``: ``bytes per key`` is the traced growth while a store fills with
``--keys`` distinct 24-character keys (the key strings included: the store keeps them alive
after the handshake is gone), median over rounds. The burst feeds 100,000 distinct keys (and
then as many again, to show the bound holds) into a store with the default ``max_keys``.

    python -m benchmarks.memory [--quick] [--rounds N] [--keys N] [--burst N] [--json PATH]
"""

from __future__ import annotations

import base64
import gc
import os
import sys
import tracemalloc
from collections.abc import Sequence
from typing import Any

from asgi_ws_handshake import MemoryStore
from benchmarks.common import emit, median, parser, table

TTL = 600.0


def _remember(store: MemoryStore, key: str) -> bool:
    return store.remember_key(key, TTL)  # the in-process store answers at once


def keys(count: int) -> list[str]:
    return [base64.b64encode(os.urandom(16)).decode() for _ in range(count)]


def per_key(count: int) -> tuple[float, float]:
    """Traced bytes per remembered key: the store's entry plus the key string it keeps."""
    store = MemoryStore(max_keys=max(count, 1))
    gc.collect()
    tracemalloc.start()
    try:
        fresh = keys(count)  # traced: once the handshake is gone, the store keeps the strings
        listed = tracemalloc.get_traced_memory()[0]
        list_bytes = sys.getsizeof(fresh)
        for key in fresh:
            _remember(store, key)
        del fresh
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del store
    # The list is gone; the strings (``listed`` minus the list) and the store's entries stay.
    return grown / count, (listed - list_bytes) / count


def burst(count: int) -> dict[str, Any]:
    """Peak and retained traced memory while ``count`` distinct keys (then as many again)
    arrive at a store with the default bound."""
    store = MemoryStore()
    batches = [keys(count), keys(count)]
    gc.collect()
    tracemalloc.start()
    try:
        for key in batches[0]:
            _remember(store, key)
        after_first, peak_first = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for key in batches[1]:
            _remember(store, key)
        after_second, peak_second = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {
        "max_keys": store.max_keys,
        "keys_sent": 2 * count,
        "held": len(store),
        "peak_bytes": peak_first,
        "retained_bytes": after_first,
        "peak_bytes_second_burst": peak_second,
        "retained_bytes_second_burst": after_second,
    }


def run(rounds: int, count: int, burst_size: int) -> dict[str, Any]:
    samples = [per_key(count) for _ in range(rounds)]
    return {
        "benchmark": "memory",
        "rounds": rounds,
        "keys": count,
        "bytes_per_key": median([total for total, _ in samples]),
        "key_string_bytes": median([string for _, string in samples]),
        "burst": burst(burst_size),
    }


def render(result: dict[str, Any]) -> str:
    b = result["burst"]
    mib = 1024 * 1024
    rows = [
        [
            f"bytes per remembered key (median of {result['rounds']} x {result['keys']} keys)",
            f"{result['bytes_per_key']:.0f} B "
            f"({result['key_string_bytes']:.0f} B of it the key string)",
        ],
        [
            f"burst of {b['keys_sent'] // 2} distinct keys, max_keys={b['max_keys']}: peak",
            f"{b['peak_bytes'] / mib:.1f} MiB",
        ],
        ["  retained after the burst", f"{b['retained_bytes'] / mib:.1f} MiB"],
        [
            f"  then {b['keys_sent'] // 2} more: peak / retained / keys held",
            f"{b['peak_bytes_second_burst'] / mib:.1f} MiB / "
            f"{b['retained_bytes_second_burst'] / mib:.1f} MiB / {b['held']}",
        ],
    ]
    return "MemoryStore memory (tracemalloc; key strings included)\n" + table(
        ["measure", "value"], rows
    )


#: (rounds, keys, burst)
FULL = (5, 20000, 100_000)
QUICK = (2, 500, 2000)


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--rounds", type=int, default=FULL[0])
    p.add_argument("--keys", type=int, default=FULL[1])
    p.add_argument("--burst", type=int, default=FULL[2])
    args = p.parse_args(argv)
    rounds, count, size = QUICK if args.quick else (args.rounds, args.keys, args.burst)
    result = run(rounds, count, size)
    emit(result, render(result), args.json)


if __name__ == "__main__":
    main()
