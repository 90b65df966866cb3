"""End to end: handshakes per second through a real uvicorn on 127.0.0.1, with and without
the middleware.

Two uvicorn processes run side by side (``benchmarks.apps:bare`` and ``:guarded``); this
process is the client. Each round runs one batch against each server, alternating the order;
a batch is ``--count`` handshakes spread over ``--threads`` client threads, each opening a
socket, completing the handshake with a fresh key and closing. Reported: handshakes/s (wall
clock, median over rounds), the server's own CPU microseconds per handshake, and the
guarded/bare ratios (target: rate ratio >= 0.98).

    python -m benchmarks.handshakes [--quick] [--rounds N] [--count N] [--threads N] [--json PATH]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.common import alternate, emit, median, parser, spread, table, verdict
from benchmarks.servers import WS, Server, handshake, in_threads, new_key, servers, upgrade_request

APPS = {"bare": "benchmarks.apps:bare", "guarded": "benchmarks.apps:guarded"}


def batch(server: Server, count: int, threads: int) -> Callable[[], tuple[float, float]]:
    def measure() -> tuple[float, float]:
        per_thread = count // threads
        requests = [
            [upgrade_request(server.port, new_key()) for _ in range(per_thread)]
            for _ in range(threads)
        ]

        def worker(index: int) -> None:
            for request in requests[index]:
                handshake(server.port, request).close()

        cpu_before = server.cpu()
        elapsed = in_threads(worker, threads)
        time.sleep(0.02)  # let the server finish tearing the last sockets down
        cpu = server.cpu() - cpu_before
        done = per_thread * threads
        return done / elapsed, cpu / done * 1e6

    return measure


def run(rounds: int, count: int, threads: int, ws: str = WS) -> dict[str, Any]:
    with servers(list(APPS.values()), ws) as running:
        for app in APPS.values():  # warm both servers up
            batch(running[app], threads * 5, threads)()
        measures = {name: batch(running[app], count, threads) for name, app in APPS.items()}
        raw = alternate(measures, rounds)
    rate = {name: [r for r, _ in values] for name, values in raw.items()}
    cpu = {name: [c for _, c in values] for name, values in raw.items()}
    result: dict[str, Any] = {
        "benchmark": "handshakes",
        "server": f"uvicorn --ws {ws}",
        "rounds": rounds,
        "count": count,
        "threads": threads,
        "per_second": {name: median(values) for name, values in rate.items()},
        "server_cpu_us": {name: median(values) for name, values in cpu.items()},
        "spread": {name: spread(values) for name, values in rate.items()},
        # Paired per round: guarded / bare in the same round, then the median.
        "rate_ratio": median([g / b for g, b in zip(rate["guarded"], rate["bare"], strict=True)]),
        "cpu_ratio": median([g / b for g, b in zip(cpu["guarded"], cpu["bare"], strict=True)]),
    }
    return result


def render(result: dict[str, Any]) -> str:
    rate, cpu = result["per_second"], result["server_cpu_us"]
    rows = [
        ["bare app", f"{rate['bare']:.0f}", f"{cpu['bare']:.0f}"],
        ["with asgi-ws-handshake (full policy)", f"{rate['guarded']:.0f}", f"{cpu['guarded']:.0f}"],
        [
            "ratio guarded / bare (target >= 0.98)",
            f"{result['rate_ratio']:.3f} {verdict(result['rate_ratio'] >= 0.98)}",
            f"{result['cpu_ratio']:.3f}",
        ],
    ]
    head = (
        f"End to end through {result['server']} on 127.0.0.1: median of {result['rounds']} "
        f"rounds x {result['count']} handshakes, {result['threads']} client threads"
    )
    return head + "\n" + table(["variant", "handshakes/s", "server CPU µs/handshake"], rows)


#: (rounds, count, threads)
FULL = (9, 600, 3)
QUICK = (2, 30, 3)


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--rounds", type=int, default=FULL[0])
    p.add_argument("--count", type=int, default=FULL[1])
    p.add_argument("--threads", type=int, default=FULL[2])
    p.add_argument("--ws", default=WS, help="uvicorn --ws implementation")
    args = p.parse_args(argv)
    rounds, count = QUICK[:2] if args.quick else (args.rounds, args.count)
    result = run(rounds, count, args.threads, args.ws)
    emit(result, render(result), args.json)


if __name__ == "__main__":
    main()
