"""Message path: echo messages per second after accept, with and without the middleware.

The same servers as ``benchmarks.handshakes`` (bare, control, guarded, Channels), started
afresh for each of ``--sessions``; this process is the client. In each round, against each
server (rotating the order), every client thread opens one socket, then sends masked text
frames in windows of ``--window`` and reads the echoes, until the batch's messages are done.
Only the message exchange is timed. Reported: messages/s (median over rounds), the server's
CPU microseconds per message, and ratios to the bare app paired per round (target: guarded /
bare >= 0.99; control / bare shows the run's resolution).

    python -m benchmarks.messages [--quick] [--sessions N] [--rounds N] [--count N]
        [--threads N] [--window N] [--json PATH]
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.common import emit, parser, table
from benchmarks.handshakes import APPS
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


def run(
    sessions_: int, rounds: int, count: int, threads: int, window: int, ws: str = WS
) -> dict[str, Any]:
    raw = sessions(
        APPS,
        lambda running: {
            name: batch(server, count, threads, window) for name, server in running.items()
        },
        sessions=sessions_,
        rounds=rounds,
        ws=ws,
        warm=lambda server: batch(server, threads * window * 4, threads, window)(),
    )
    return {
        "benchmark": "messages",
        "server": f"uvicorn --ws {ws}",
        "sessions": sessions_,
        "rounds": rounds,
        "count": count,
        "threads": threads,
        "window": window,
        **summarise(raw),
    }


def render(result: dict[str, Any]) -> str:
    rows = comparison_rows(result, 0.99, 1)
    head = (
        f"Echo messages through {result['server']} on 127.0.0.1: median of {result['sessions']} "
        f"sessions x {result['rounds']} rounds x {result['count']} messages, "
        f"{result['threads']} sockets, window {result['window']}"
    )
    return head + "\n" + table(["variant", "messages/s", "server CPU µs/message"], rows)


#: (sessions, rounds, count, threads, window)
FULL = (16, 3, 4000, 2, 8)
QUICK = (1, 2, 64, 2, 8)


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--sessions", type=int, default=FULL[0])
    p.add_argument("--rounds", type=int, default=FULL[1])
    p.add_argument("--count", type=int, default=FULL[2])
    p.add_argument("--threads", type=int, default=FULL[3])
    p.add_argument("--window", type=int, default=FULL[4])
    p.add_argument("--ws", default=WS, help="uvicorn --ws implementation")
    args = p.parse_args(argv)
    if args.quick:
        sessions_, rounds, count, threads, window = QUICK
    else:
        sessions_, rounds, count = args.sessions, args.rounds, args.count
        threads, window = args.threads, args.window
    result = run(sessions_, rounds, count, threads, window, args.ws)
    emit(result, render(result), args.json)


if __name__ == "__main__":
    main()
