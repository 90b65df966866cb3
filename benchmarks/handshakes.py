"""End to end: handshakes per second through a real uvicorn on 127.0.0.1, with and without
the middleware.

Four uvicorn processes run side by side: ``benchmarks.apps:bare``, the same app again (the
control), ``:guarded`` and ``:channels`` (behind Django Channels' ``OriginValidator``, when
installed); this process is the client. Each round runs one batch against
each server, rotating the order; a batch is ``--count`` handshakes spread over ``--threads``
client threads, each opening a socket, completing the handshake with a fresh key and closing.
Every ``--sessions`` starts fresh processes (see ``servers.sessions``) for ``--rounds``
rounds. With two CPUs or more the servers share one CPU and the client gets the others.

Reported: handshakes/s (median over all rounds), the server's own CPU microseconds per
handshake, and ratios to the bare app paired per round (median): guarded / bare (target:
>= 0.98), Channels / bare for reference, and control / bare, which is the same app twice, so
its distance from 1.000 is the run's resolution.

    python -m benchmarks.handshakes [--quick] [--sessions N] [--rounds N] [--count N]
        [--threads N] [--json PATH]
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.common import emit, parser, table
from benchmarks.servers import (
    WS,
    Server,
    comparison_rows,
    handshake,
    in_threads,
    new_key,
    sessions,
    summarise,
    upgrade_request,
)

APPS = {
    "bare": "benchmarks.apps:bare",
    "control": "benchmarks.apps:bare",
    "guarded": "benchmarks.apps:guarded",
}
if importlib.util.find_spec("channels") is not None:
    APPS["channels"] = "benchmarks.apps:channels"


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


def run(sessions_: int, rounds: int, count: int, threads: int, ws: str = WS) -> dict[str, Any]:
    raw = sessions(
        APPS,
        lambda running: {name: batch(server, count, threads) for name, server in running.items()},
        sessions=sessions_,
        rounds=rounds,
        ws=ws,
        warm=lambda server: batch(server, threads * 10, threads)(),
    )
    return {
        "benchmark": "handshakes",
        "server": f"uvicorn --ws {ws}",
        "sessions": sessions_,
        "rounds": rounds,
        "count": count,
        "threads": threads,
        **summarise(raw),
    }


def render(result: dict[str, Any]) -> str:
    rows = comparison_rows(result, 0.98, 0)
    head = (
        f"End to end through {result['server']} on 127.0.0.1: median of {result['sessions']} "
        f"sessions x {result['rounds']} rounds x {result['count']} handshakes, "
        f"{result['threads']} client threads"
    )
    return head + "\n" + table(["variant", "handshakes/s", "server CPU µs/handshake"], rows)


#: (sessions, rounds, count, threads)
FULL = (12, 3, 300, 3)
QUICK = (1, 2, 30, 3)


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--sessions", type=int, default=FULL[0])
    p.add_argument("--rounds", type=int, default=FULL[1])
    p.add_argument("--count", type=int, default=FULL[2])
    p.add_argument("--threads", type=int, default=FULL[3])
    p.add_argument("--ws", default=WS, help="uvicorn --ws implementation")
    args = p.parse_args(argv)
    if args.quick:
        sessions_, rounds, count, threads = QUICK
    else:
        sessions_, rounds, count, threads = args.sessions, args.rounds, args.count, args.threads
    result = run(sessions_, rounds, count, threads, args.ws)
    emit(result, render(result), args.json)


if __name__ == "__main__":
    main()
