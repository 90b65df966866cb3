"""The ``asgi-ws-handshake`` command: ``demo``, ``probe``, ``serve``, ``check-policy`` and
``suggest-policy``.

Owns argument parsing, exit statuses and printing. The work is done elsewhere: ``probe`` (stdlib
only), ``config`` (policy files), ``demo`` (needs starlette and uvicorn, imported only there);
``serve`` imports uvicorn when it runs.

Exit statuses: 0 success; 1 a probe found what a protected server must refuse accepted (or,
with ``--fail-on warn``, a warning), or a bad policy file or app; 2 usage errors and targets
that could not be judged (unreachable, not a WebSocket endpoint, the valid handshake refused).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from .. import __version__
from ..config import PolicyFileError, load_policy_file
from . import serve as serve_cli
from . import suggest as suggest_cli
from .probe import ProbeError, ProbeOptions, error_document, format_report, run_probe
from .render import render_policy_file

__all__ = ["main"]

_SIGPIPE_STATUS = 128 + 13
_DEMO_MISSING = "the demo needs starlette and uvicorn: pip install 'asgi-ws-handshake[demo]'"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asgi-ws-handshake",
        description="Guard, test and demo WebSocket handshakes of ASGI apps.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run a protected chat and a foreign site, with a live audit table",
        description="Start a small chat app behind the middleware and a second server that "
        "serves the same page from a foreign origin; runs until interrupted.",
    )
    demo.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    demo.add_argument("--port", type=int, default=8000, help="protected app's port (8000; 0: any)")
    demo.add_argument(
        "--foreign-port", type=int, default=None, help="foreign site's port (port+1; 0: any)"
    )
    demo.add_argument(
        "--probe", action="store_true", help="probe the protected endpoint, print, exit"
    )

    probe = sub.add_parser(
        "probe",
        help="test any WebSocket endpoint's handshake hygiene",
        description="Send a battery of raw handshakes to URL (the valid one, foreign and "
        "lookalike origins, bad versions, keys and subprotocols) and judge the answers. Exit "
        "status 0: nothing at or above --fail-on; 1: the target accepts what a protected "
        "server must refuse (a lookalike origin, a malformed key, a version that does not "
        "exist) or answers with a wrong Accept, or (--fail-on warn) a warning; 2: it cannot "
        "be judged (unreachable, not a WebSocket endpoint, the valid handshake refused).",
    )
    probe.add_argument("url", help="ws://host[:port]/path or wss://...")
    probe.add_argument(
        "--origin",
        help="the Origin the server should accept, scheme://host[:port] or null (default: the "
        "URL's own origin); the lookalike origins are derived from it",
    )
    probe.add_argument(
        "--subprotocol",
        action="append",
        default=[],
        metavar="P",
        help="offer this subprotocol (repeatable)",
    )
    probe.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="K:V",
        help="send this header in every case, e.g. 'Cookie: session=...' (repeatable)",
    )
    probe.add_argument(
        "--json", action="store_true", help="print JSON (schema asgi-ws-handshake/probe/2)"
    )
    probe.add_argument(
        "--fail-on",
        choices=["warn", "fail"],
        default="fail",
        help="exit 1 on a failure (fail, the default) or on a warning too (warn)",
    )
    probe.add_argument(
        "--timeout", type=float, default=5.0, metavar="S", help="seconds per connection (5)"
    )
    probe.add_argument("--insecure", action="store_true", help="skip TLS certificate checks")
    probe.add_argument("--cafile", help="trust these CA certificates (PEM) for wss://")

    serve_cli.add_parser(sub)

    check = sub.add_parser(
        "check-policy",
        help="validate a policy file and print the effective policy",
        description="Validate a TOML policy file; print every option with its effective "
        "value (itself a valid policy file), or the error naming the file and the key.",
    )
    check.add_argument("policy", help="the TOML policy file")
    check.add_argument("--json", action="store_true", help="print JSON")

    suggest = sub.add_parser(
        "suggest-policy",
        help="write a policy file that would have accepted the traffic of an audit log",
        description="Read JSON Lines audit events (JSONLinesSink), e.g. from a report-only "
        "rollout, and write a policy file accepting their legitimate traffic: the origins "
        "(grouped into wildcard patterns), subprotocols and rates seen. A summary of what "
        "it would refuse goes to stderr.",
    )
    suggest.add_argument("audit", nargs="+", help="JSON Lines audit files")
    suggest.add_argument("-o", "--output", help="write the policy here (default: stdout)")
    suggest.add_argument(
        "--headroom", type=float, default=2.0, help="rates: the peak seen times this (2)"
    )
    suggest.add_argument(
        "--min-rate", type=int, default=10, help="rates: at least this many a minute (10)"
    )
    suggest.add_argument("--no-rates", action="store_true", help="suggest no rate limits")
    suggest.add_argument(
        "--min-handshakes",
        type=int,
        default=1,
        metavar="N",
        help="allow an origin seen in at least N handshakes (1)",
    )
    suggest.add_argument(
        "--min-clients",
        type=int,
        default=1,
        metavar="N",
        help="... from at least N client addresses (1)",
    )
    suggest.add_argument(
        "--wildcard-min",
        type=int,
        default=3,
        metavar="N",
        help="group N or more subdomains of one parent into https://*.parent (3)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    Output piped into a reader that stops early (``| head``) ends the command quietly with
    status 141, as a process ended by SIGPIPE, instead of a ``BrokenPipeError`` traceback.
    """
    args = _parser().parse_args(argv)
    command: str = args.command
    try:
        if command == "probe":
            status = _probe(args, sys.stdout)
        elif command == "check-policy":
            status = _check_policy(args, sys.stdout)
        elif command == "suggest-policy":
            status = _suggest_policy(args, sys.stdout)
        elif command == "serve":
            status = serve_cli.serve(args)
        else:
            status = _demo(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python's advice (signal docs, "Note on SIGPIPE"): point stdout at devnull so that
        # the interpreter's own flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return _SIGPIPE_STATUS
    return status


def _error(message: str) -> None:
    print(f"asgi-ws-handshake: error: {message}", file=sys.stderr)


def _probe_options(args: argparse.Namespace) -> ProbeOptions:
    headers: list[tuple[str, str]] = []
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise ProbeError("usage", f"--header expects 'Name: value', got {item!r}")
        headers.append((name.strip(), value.strip()))
    if not args.timeout > 0:
        raise ProbeError("usage", f"--timeout must be > 0, got {args.timeout}")
    return ProbeOptions(
        origin=args.origin,
        subprotocols=tuple(args.subprotocol),
        headers=tuple(headers),
        timeout=args.timeout,
        insecure=args.insecure,
        cafile=args.cafile,
    )


def _probe(args: argparse.Namespace, out: TextIO) -> int:
    fail_on = args.fail_on
    try:
        try:
            report = run_probe(args.url, _probe_options(args))
        except OSError as exc:  # e.g. an unreadable --cafile
            why = f"{exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}".rstrip(": ")
            raise ProbeError("usage", why) from None
    except ProbeError as exc:
        _error(str(exc))
        if args.json:
            print(json.dumps(error_document(args.url, exc, fail_on), indent=2), file=out)
        return 2
    print(report.to_json(fail_on) if args.json else format_report(report, fail_on), file=out)
    if report.error is not None:
        _error(report.error.message)
    return report.exit_status(fail_on)


def _check_policy(args: argparse.Namespace, out: TextIO) -> int:
    try:
        config = load_policy_file(args.policy)
    except PolicyFileError as exc:
        _error(str(exc))
        return 1
    if args.json:
        print(json.dumps(config.describe(), indent=2), file=out)
    else:
        print(render_policy_file(config), file=out)
    return 0


def _suggest_policy(args: argparse.Namespace, out: TextIO) -> int:
    for name, value in (("--headroom", args.headroom), ("--min-rate", args.min_rate)):
        if not value > 0:
            _error(f"{name} must be > 0, got {value}")
            return 2
    rates = not args.no_rates
    if rates and importlib.util.find_spec("limits") is None:
        print(
            "asgi-ws-handshake: note: rates left out: rate_limit needs the limits extra "
            "(pip install 'asgi-ws-handshake[limits]')",
            file=sys.stderr,
        )
        rates = False
    options = suggest_cli.Options(
        headroom=args.headroom,
        min_handshakes=args.min_handshakes,
        min_clients=args.min_clients,
        wildcard_min=max(2, args.wildcard_min),
        min_rate=args.min_rate,
        rates=rates,
    )
    try:
        events, skipped = suggest_cli.read_events(suggest_cli.lines_of(args.audit))
    except OSError as exc:
        _error(f"cannot read {exc.filename}: {exc.strerror or exc}")
        return 1
    if not events:
        _error(f"no audit events in {', '.join(args.audit)}")
        return 1
    suggestion = suggest_cli.suggest(events, skipped, options)
    text = suggest_cli.render(suggestion, ", ".join(args.audit))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as file:
            file.write(text)
    else:
        out.write(text)
    suggest_cli.summary(suggestion, sys.stderr)
    return 0


def _demo(args: argparse.Namespace) -> int:
    try:
        from . import demo
    except ImportError as exc:
        _error(f"{_DEMO_MISSING} ({exc})")
        return 1
    port: int = args.port
    foreign_port: int = (
        args.foreign_port if args.foreign_port is not None else (0 if port == 0 else port + 1)
    )
    if not args.probe:
        demo.configure_logging()
    try:
        return asyncio.run(demo.run_demo(args.host, port, foreign_port, probe=args.probe))
    except OSError as exc:
        _error(str(exc.strerror or exc))
        return 1
    except ProbeError as exc:
        _error(str(exc))
        return 2


if __name__ == "__main__":
    sys.exit(main())
