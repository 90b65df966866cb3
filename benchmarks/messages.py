"""Message path: echo messages per second after accept, with and without the middleware.

Two uvicorn processes run side by side (``benchmarks.apps:bare`` and ``:guarded``); this
process is the client. In each round, against each server (alternating the order), every
client thread opens one socket, then sends masked text frames in windows of ``--window`` and
reads the echoes, until the batch's messages are done. Only the message exchange is timed.
Reported: messages/s (median over rounds), the server's CPU microseconds per message, and
guarded/bare ratios paired per round (target: rate ratio >= 0.99).

    python -m benchmarks.messages [--quick] [--rounds N] [--count N] [--threads N] [--json PATH]
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.common import alternate, emit, median, parser, spread, table, verdict
from benchmarks.servers import WS, Server, handshake, in_threads, new_key, servers, upgrade_request

APPS = {"bare": "benchmarks.apps:bare", "guarded": "benchmarks.apps:guarded"}
PAYLOAD = b"ping 0123456789abcdef0123456789"  # 32 bytes: one short text frame


def client_frame(payload: bytes) -> bytes:
    """A masked text frame (RFC 6455 5.2, 5.3), payload under 126 bytes."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


ECHO = bytes([0x81, len(PAYLOAD)]) + PAYLOAD  # what the server sends back, unmasked


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("server closed the socket mid-benchmark")
        data += chunk
    return bytes(data)


def batch(
    server: Server, count: int, threads: int, window: int
) -> Callable[[], tuple[float, float]]:
    frame = client_frame(PAYLOAD)

    def measure() -> tuple[float, float]:
        windows = max(1, count // threads // window)
        socks = [
            handshake(server.port, upgrade_request(server.port, new_key())) for _ in range(threads)
        ]
        burst, expected = frame * window, ECHO * window

        def worker(index: int) -> None:
            sock = socks[index]
            for _ in range(windows):
                sock.sendall(burst)
                if recv_exactly(sock, len(expected)) != expected:
                    raise RuntimeError("echo mismatch")

        try:
            cpu_before = server.cpu()
            elapsed = in_threads(worker, threads)
            cpu = server.cpu() - cpu_before
        finally:
            for sock in socks:
                sock.close()
        done = windows * window * threads
        time.sleep(0.02)
        return done / elapsed, cpu / done * 1e6

    return measure


def run(rounds: int, count: int, threads: int, window: int, ws: str = WS) -> dict[str, Any]:
    with servers(list(APPS.values()), ws) as running:
        for app in APPS.values():  # warm up
            batch(running[app], threads * window * 4, threads, window)()
        measures = {name: batch(running[app], count, threads, window) for name, app in APPS.items()}
        raw = alternate(measures, rounds)
    rate = {name: [r for r, _ in values] for name, values in raw.items()}
    cpu = {name: [c for _, c in values] for name, values in raw.items()}
    return {
        "benchmark": "messages",
        "server": f"uvicorn --ws {ws}",
        "rounds": rounds,
        "count": count,
        "threads": threads,
        "window": window,
        "per_second": {name: median(values) for name, values in rate.items()},
        "server_cpu_us": {name: median(values) for name, values in cpu.items()},
        "spread": {name: spread(values) for name, values in rate.items()},
        "rate_ratio": median([g / b for g, b in zip(rate["guarded"], rate["bare"], strict=True)]),
        "cpu_ratio": median([g / b for g, b in zip(cpu["guarded"], cpu["bare"], strict=True)]),
    }


def render(result: dict[str, Any]) -> str:
    rate, cpu = result["per_second"], result["server_cpu_us"]
    rows = [
        ["bare app", f"{rate['bare']:.0f}", f"{cpu['bare']:.1f}"],
        ["with asgi-ws-handshake (full policy)", f"{rate['guarded']:.0f}", f"{cpu['guarded']:.1f}"],
        [
            "ratio guarded / bare (target >= 0.99)",
            f"{result['rate_ratio']:.3f} {verdict(result['rate_ratio'] >= 0.99)}",
            f"{result['cpu_ratio']:.3f}",
        ],
    ]
    head = (
        f"Echo messages through {result['server']} on 127.0.0.1: median of {result['rounds']} "
        f"rounds x {result['count']} messages, {result['threads']} sockets, "
        f"window {result['window']}"
    )
    return head + "\n" + table(["variant", "messages/s", "server CPU µs/message"], rows)


#: (rounds, count, threads, window)
FULL = (9, 12000, 2, 8)
QUICK = (2, 64, 2, 8)


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--rounds", type=int, default=FULL[0])
    p.add_argument("--count", type=int, default=FULL[1])
    p.add_argument("--threads", type=int, default=FULL[2])
    p.add_argument("--window", type=int, default=FULL[3])
    p.add_argument("--ws", default=WS, help="uvicorn --ws implementation")
    args = p.parse_args(argv)
    rounds, count = QUICK[:2] if args.quick else (args.rounds, args.count)
    result = run(rounds, count, args.threads, args.window, args.ws)
    emit(result, render(result), args.json)


if __name__ == "__main__":
    main()
