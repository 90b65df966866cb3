"""Memory: what ``MemoryStore`` holds at its bound, after churn, per key and in all.

Measured with ``tracemalloc``, key strings included (the store keeps them alive after the
handshake is gone). A store with ``max_keys`` is fed three times as many distinct
24-character keys, so both of its generations have filled and rotated: what it holds then
(``retained``, divided by the keys it holds) is what a server holds at the bound, with the
dicts at the sizes churn leaves them. ``--keys`` sets ``max_keys`` for the per-key figure
(median over rounds); the burst uses the default bound (100,000) and also reports the peak
(which includes the batch of keys being fed).

    python -m benchmarks.memory [--quick] [--rounds N] [--keys N] [--burst N] [--json PATH]
"""

from __future__ import annotations

import base64
import gc
import os
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


def at_bound(max_keys: int, churn: int = 3) -> dict[str, Any]:
    """Feed ``churn * max_keys`` distinct keys; what the store holds then, and the peak."""
    gc.collect()
    tracemalloc.start()  # before the keys are made: the strings the store keeps are traced
    try:
        store = MemoryStore(max_keys=max_keys)
        for _ in range(churn):
            batch = keys(max_keys)
            for key in batch:
                _remember(store, key)
            del batch, key  # what is left alive is what the store keeps
        gc.collect()
        retained, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    held = len(store)
    return {
        "max_keys": max_keys,
        "keys_sent": churn * max_keys,
        "held": held,
        "retained_bytes": retained,
        "bytes_per_held_key": retained / max(held, 1),
        "peak_bytes": peak,
    }


def run(rounds: int, count: int, burst_size: int) -> dict[str, Any]:
    samples = [at_bound(count) for _ in range(rounds)]
    return {
        "benchmark": "memory",
        "rounds": rounds,
        "keys": count,
        "bytes_per_key": median([sample["bytes_per_held_key"] for sample in samples]),
        "burst": at_bound(burst_size),
    }


def render(result: dict[str, Any]) -> str:
    b = result["burst"]
    mib = 2**20
    rows = [
        [
            f"bytes per held key at the bound after churn (max_keys={result['keys']:,}, "
            f"median of {result['rounds']})",
            f"{result['bytes_per_key']:.0f} B",
        ],
        [
            f"at the default bound after {b['keys_sent']:,} distinct keys: held / retained",
            f"{b['held']:,} keys / {b['retained_bytes'] / mib:.1f} MiB "
            f"({b['bytes_per_held_key']:.0f} B per key)",
        ],
        ["  peak while churning", f"{b['peak_bytes'] / mib:.1f} MiB"],
    ]
    return "MemoryStore memory (tracemalloc; key strings included)\n" + table(
        ["measure", "value"], rows
    )


#: (rounds, keys, burst)
FULL = (5, 20_000, 100_000)
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
