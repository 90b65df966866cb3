"""The probe's wire: parse a ``ws://`` / ``wss://`` target, send one raw HTTP/1.1 request over
a fresh socket (plain or TLS) and read one response head, bounded in time and bytes.

Knows nothing about which handshakes to send or how to judge the answers (``probe_cases``)
nor about reports (``probe``). Standard library only.
"""

from __future__ import annotations

import base64
import os
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "MAX_BODY",
    "MAX_HEAD",
    "Answer",
    "ProbeError",
    "ProbeOptions",
    "Target",
    "exchange",
    "new_key",
    "parse_target",
    "ssl_context",
]

MAX_HEAD = 16 * 1024  # bytes of response head read at most
MAX_BODY = 2 * 1024  # bytes of response body kept at most


class ProbeError(Exception):
    """The probe could not get an HTTP answer: ``kind`` is one of ``unreachable``, ``tls``,
    ``timeout``, ``closed``, ``not_http``, ``too_large`` or ``usage``."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Target:
    """Where to probe, parsed from a ``ws://`` or ``wss://`` URL."""

    url: str
    secure: bool
    host: str
    port: int
    #: Path and query, as sent in the request line.
    resource: str
    #: The Host header value (default port omitted).
    host_header: str
    #: The same-origin Origin a browser page on this host would send.
    origin: str


def parse_target(url: str) -> Target:
    """Parse a ``ws://`` / ``wss://`` URL.

    Raises:
        ProbeError: ``usage`` when the URL is not a WebSocket URL with a host.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ProbeError("usage", f"expected a ws:// or wss:// URL, got {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ProbeError("usage", f"bad port in {url!r}") from None
    host = parts.hostname
    if not host:
        raise ProbeError("usage", f"no host in {url!r}")
    secure = parts.scheme == "wss"
    default = 443 if secure else 80
    port = port or default
    shown = f"[{host}]" if ":" in host else host
    authority = shown if port == default else f"{shown}:{port}"
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    origin = f"{'https' if secure else 'http'}://{authority}"
    return Target(url, secure, host, port, resource, authority, origin)


@dataclass(frozen=True, slots=True)
class ProbeOptions:
    """How to probe.

    Args:
        origin: the Origin the server should accept (default: the target's own origin); the
            lookalike origins are derived from it.
        subprotocols: subprotocols to offer in every case not about subprotocols.
        headers: extra request headers (cookies, tokens) sent in every case.
        timeout: seconds each connection may take, connect to last byte.
        insecure: skip TLS certificate verification.
        cafile: trust these CA certificates instead of the system store.
    """

    origin: str | None = None
    subprotocols: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 5.0
    insecure: bool = False
    cafile: str | None = None


@dataclass(slots=True)
class Answer:
    """One response head (and at most ``MAX_BODY`` bytes of its body)."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name]


def new_key() -> str:
    """A fresh ``Sec-WebSocket-Key``: 16 random bytes, base64 (RFC 6455 4.1 item 7)."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def ssl_context(options: ProbeOptions) -> ssl.SSLContext:
    """The client TLS context: the system trust store unless ``cafile`` or ``insecure``."""
    context = ssl.create_default_context(cafile=options.cafile)
    if options.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])  # RFC 6455 is HTTP/1.1 only
    return context


def _close_frame() -> bytes:
    # RFC 6455 5.5.1: a masked close frame, status 1000, so the server is not left hanging.
    mask = os.urandom(4)
    payload = (1000).to_bytes(2, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return b"\x88\x82" + mask + masked


def exchange(
    target: Target, request: bytes, options: ProbeOptions, context: ssl.SSLContext | None
) -> Answer:
    """Send one raw request and read one response head (and a bounded body).

    Raises:
        ProbeError: unreachable, TLS failure, timeout, closed, not HTTP, head too large.
    """
    timeout = options.timeout
    deadline = time.monotonic() + timeout
    where = f"{target.host}:{target.port}"
    try:
        raw = socket.create_connection((target.host, target.port), timeout=timeout)
    except TimeoutError:
        raise ProbeError("timeout", f"no connection to {where} within {timeout:g}s") from None
    except socket.gaierror as exc:
        raise ProbeError("unreachable", f"cannot resolve {target.host!r}: {exc.strerror}") from None
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise ProbeError("unreachable", f"cannot connect to {where}: {why}") from None
    sock: socket.socket = raw
    try:

        def left() -> float:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            return remaining

        try:
            if context is not None:
                raw.settimeout(left())
                sock = context.wrap_socket(raw, server_hostname=target.host)
            sock.settimeout(left())
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                sock.settimeout(left())
                chunk = sock.recv(4096)
                if not chunk:
                    if not data:
                        raise ProbeError("closed", f"{where} closed the connection unanswered")
                    break
                data += chunk
                if len(data) >= 8 and not data.startswith(b"HTTP/1."):
                    break
                if len(data) > MAX_HEAD:
                    raise ProbeError("too_large", f"{where} sent a head over {MAX_HEAD} bytes")
            answer = _parse_head(where, data)
            if answer.status == 101:
                try:
                    sock.settimeout(min(left(), 1.0))
                    sock.sendall(_close_frame())
                except OSError:
                    pass
                return answer
            rest = data.partition(b"\r\n\r\n")[2]
            length = answer.all("content-length")
            if len(length) == 1 and length[0].isdigit():
                wanted = min(int(length[0]), MAX_BODY)
                try:
                    while len(rest) < wanted:
                        sock.settimeout(left())
                        chunk = sock.recv(4096)
                        if not chunk:
                            break
                        rest += chunk
                except (TimeoutError, OSError):
                    pass  # the head is what matters; a short body is kept as it is
                rest = rest[:wanted]
            answer.body = rest[:MAX_BODY]
            return answer
        except ssl.SSLCertVerificationError as exc:
            raise ProbeError(
                "tls",
                f"TLS certificate of {where} not trusted: {exc.verify_message}"
                " (use --cafile, or --insecure to skip verification)",
            ) from None
        except ssl.SSLError as exc:
            hint = " (not a TLS port? try ws://)" if exc.reason == "WRONG_VERSION_NUMBER" else ""
            raise ProbeError(
                "tls", f"TLS handshake with {where} failed: {exc.reason}{hint}"
            ) from None
        except TimeoutError:
            raise ProbeError("timeout", f"no answer from {where} within {timeout:g}s") from None
        except ConnectionError as exc:
            raise ProbeError("closed", f"{where} reset the connection: {exc}") from None
    finally:
        sock.close()


def _parse_head(where: str, data: bytes) -> Answer:
    head = data.partition(b"\r\n\r\n")[0]
    status_line, *lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProbeError("not_http", f"{where} did not answer in HTTP/1.1: {data[:60]!r}")
    if b"\r\n\r\n" not in data:
        raise ProbeError("closed", f"{where} closed the connection mid-answer: {data[:60]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers.append((name.strip(), value.strip()))
    return Answer(int(parts[1]), parts[2] if len(parts) > 2 else "", headers)
