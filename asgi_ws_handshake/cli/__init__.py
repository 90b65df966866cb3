"""The ``asgi-ws-handshake`` command: ``demo``, ``probe``, ``serve`` and ``check-policy``.

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
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from .. import __version__
from ..config import PolicyFile, PolicyFileError, load_policy_file
from .probe import ProbeError, ProbeOptions, error_document, format_report, run_probe

__all__ = ["main"]

# What ``serve`` hands to ``_served_app`` (in this process or in uvicorn's worker processes).
ENV_APP = "ASGI_WS_HANDSHAKE_APP"
ENV_POLICY = "ASGI_WS_HANDSHAKE_POLICY"
ENV_FACTORY = "ASGI_WS_HANDSHAKE_APP_FACTORY"
ENV_APP_DIR = "ASGI_WS_HANDSHAKE_APP_DIR"
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

    serve = sub.add_parser(
        "serve",
        help="run any ASGI app under uvicorn behind the middleware, configured by a file",
        description="Wrap module:app with HandshakeMiddleware as the policy file says and "
        "run it under uvicorn.",
    )
    serve.add_argument("app", help="the ASGI app as module:attribute")
    serve.add_argument("--policy", required=True, help="the TOML policy file")
    serve.add_argument("--factory", action="store_true", help="APP is a factory to call")
    serve.add_argument("--app-dir", default=".", help="directory to import APP from (.)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to bind (8000)")
    serve.add_argument("--uds", help="bind to this Unix domain socket instead")
    serve.add_argument("--workers", type=int, default=None, help="worker processes")
    serve.add_argument(
        "--proxy-headers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="trust X-Forwarded-* from --forwarded-allow-ips (uvicorn's default: on)",
    )
    serve.add_argument("--forwarded-allow-ips", help="IPs trusted for proxy headers")
    serve.add_argument("--root-path", default="", help="ASGI root_path behind a proxy")
    serve.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        default="info",
    )
    serve.add_argument("--no-access-log", action="store_true", help="disable the access log")
    serve.add_argument("--ws", default="auto", help="uvicorn WebSocket implementation (auto)")
    serve.add_argument("--lifespan", choices=["auto", "on", "off"], default="auto")
    serve.add_argument("--ssl-keyfile", help="TLS key file")
    serve.add_argument("--ssl-certfile", help="TLS certificate file")
    serve.add_argument("--timeout-keep-alive", type=int, default=None, metavar="S")

    check = sub.add_parser(
        "check-policy",
        help="validate a policy file and print the effective policy",
        description="Validate a TOML policy file; print every option with its effective "
        "value (itself a valid policy file), or the error naming the file and the key.",
    )
    check.add_argument("policy", help="the TOML policy file")
    check.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    command: str = args.command
    if command == "probe":
        return _probe(args, sys.stdout)
    if command == "check-policy":
        return _check_policy(args, sys.stdout)
    if command == "serve":
        return _serve(args)
    return _demo(args)


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


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def _toml_table(data: dict[str, Any]) -> list[str]:
    return [
        f"# {key}: not set" if value is None else f"{key} = {_toml_value(value)}"
        for key, value in data.items()
    ]


def render_policy_file(config: PolicyFile) -> str:
    """The effective configuration as TOML, every option explicit (a valid policy file)."""
    described = config.describe()
    lines = [f"# effective policy from {described['source']}", "# default policy"]
    lines += _toml_table(described["policy"])
    lines.append(f"store = {_toml_value(described['store'])}")
    if not described["audit"]:
        lines.append("audit = []  # no sinks")
    for glob, policy in described["routes"].items():
        lines += ["", f"[routes.{json.dumps(glob)}]", *_toml_table(policy)]
    for sink in described["audit"]:
        lines += ["", "[[audit]]", *_toml_table(sink)]
    lines += ["", "[middleware]", *_toml_table(described["middleware"])]
    return "\n".join(lines)


def _served_app() -> Any:
    """The ASGI app ``serve`` runs: the user's app behind the middleware, from the environment.

    A factory named by import string, so that uvicorn's worker processes can build it too.
    """
    from uvicorn.importer import import_from_string

    app_dir = os.environ.get(ENV_APP_DIR)
    if app_dir and app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    app = import_from_string(os.environ[ENV_APP])
    if os.environ.get(ENV_FACTORY) == "1":
        app = app()
    return load_policy_file(os.environ[ENV_POLICY]).middleware(app)


def _serve(args: argparse.Namespace) -> int:
    try:
        config = load_policy_file(args.policy)
    except PolicyFileError as exc:
        _error(str(exc))
        return 1
    try:
        import uvicorn
        from uvicorn.importer import ImportFromStringError, import_from_string
    except ImportError:
        _error("serve needs uvicorn: pip install uvicorn")
        return 1
    app_dir = os.path.abspath(args.app_dir)
    sys.path.insert(0, app_dir)
    try:
        import_from_string(args.app)
    except ImportFromStringError as exc:
        _error(f"cannot load the app {args.app!r}: {exc}")
        return 1
    if (args.workers or 1) > 1 and config.store.type == "memory":
        print(
            "asgi-ws-handshake: note: each worker has its own memory store; reused keys are "
            "only caught within one worker (use store = { type = 'redis', ... })",
            file=sys.stderr,
        )
    os.environ[ENV_APP] = args.app
    os.environ[ENV_POLICY] = os.path.abspath(args.policy)
    os.environ[ENV_FACTORY] = "1" if args.factory else ""
    os.environ[ENV_APP_DIR] = app_dir
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "uds": args.uds,
        "workers": args.workers,
        "root_path": args.root_path,
        "log_level": args.log_level,
        "access_log": not args.no_access_log,
        "ws": args.ws,
        "lifespan": args.lifespan,
        "ssl_keyfile": args.ssl_keyfile,
        "ssl_certfile": args.ssl_certfile,
    }
    if args.proxy_headers is not None:
        options["proxy_headers"] = args.proxy_headers
    if args.forwarded_allow_ips is not None:
        options["forwarded_allow_ips"] = args.forwarded_allow_ips
    if args.timeout_keep_alive is not None:
        options["timeout_keep_alive"] = args.timeout_keep_alive
    uvicorn.run("asgi_ws_handshake.cli:_served_app", factory=True, **options)
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
