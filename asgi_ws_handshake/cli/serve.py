"""``serve``: any ASGI app under uvicorn, behind the middleware a policy file describes.

Owns checking the app before uvicorn starts (importable, not already guarded), uvicorn's
options, and the logging ``serve`` sets up: audit lines in uvicorn's console format at
``--log-level``, and uvicorn's ERROR after each of the guard's refusals dropped (``logs``).
Imports uvicorn when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..config import PolicyFile, PolicyFileError, load_policy_file
from ..logs import uvicorn_log_config
from ..middleware import HandshakeMiddleware

__all__ = ["add_parser", "find_guard", "serve", "served_app"]

# What ``serve`` hands to ``served_app`` (in this process or in uvicorn's worker processes).
ENV_APP = "ASGI_WS_HANDSHAKE_APP"
ENV_POLICY = "ASGI_WS_HANDSHAKE_POLICY"
ENV_FACTORY = "ASGI_WS_HANDSHAKE_APP_FACTORY"
ENV_APP_DIR = "ASGI_WS_HANDSHAKE_APP_DIR"
#: How deep ``find_guard`` follows ``.app`` attributes through middleware.
_MAX_DEPTH = 32


def add_parser(sub: Any) -> None:
    """The ``serve`` subcommand's arguments."""
    serve = sub.add_parser(
        "serve",
        help="run any ASGI app under uvicorn behind the middleware, configured by a file",
        description="Wrap module:app with HandshakeMiddleware as the policy file says and "
        "run it under uvicorn. The app must not be guarded already (serve adds the guard).",
    )
    serve.add_argument("app", help="the ASGI app as module:attribute (without the middleware)")
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
        help="uvicorn's own X-Forwarded-* handling (its default: on; off when the policy file "
        "sets trusted_proxies, as the guard then reads them itself)",
    )
    serve.add_argument("--forwarded-allow-ips", help="IPs uvicorn trusts for proxy headers")
    serve.add_argument("--root-path", default="", help="ASGI root_path behind a proxy")
    serve.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        default="info",
        help="uvicorn's and the audit lines' level (info: accepted handshakes too)",
    )
    serve.add_argument("--no-access-log", action="store_true", help="disable the access log")
    serve.add_argument(
        "--keep-uvicorn-denial-errors",
        action="store_true",
        help="keep uvicorn's 'ASGI callable returned without completing handshake.' ERROR "
        "after the guard's own refusals (dropped by default)",
    )
    serve.add_argument("--ws", default="auto", help="uvicorn WebSocket implementation (auto)")
    serve.add_argument("--lifespan", choices=["auto", "on", "off"], default="auto")
    serve.add_argument("--ssl-keyfile", help="TLS key file")
    serve.add_argument("--ssl-certfile", help="TLS certificate file")
    serve.add_argument("--timeout-keep-alive", type=int, default=None, metavar="S")


def find_guard(app: object) -> str | None:
    """Where ``app`` already has a ``HandshakeMiddleware``, or None.

    Follows the app itself, ``.app`` attributes (how ASGI middleware hold what they wrap) and
    Starlette's or FastAPI's ``user_middleware`` list (``add_middleware``, ``middleware=``).
    """
    seen: set[int] = set()
    current: object = app
    for _ in range(_MAX_DEPTH):
        if current is None or id(current) in seen:
            return None
        seen.add(id(current))
        if isinstance(current, HandshakeMiddleware):
            which = "the app itself" if current is app else "an app it wraps"
            return f"{which} is a HandshakeMiddleware"
        for entry in getattr(current, "user_middleware", None) or ():
            if getattr(entry, "cls", None) is HandshakeMiddleware:
                return f"its {type(current).__name__} middleware list holds a HandshakeMiddleware"
        current = getattr(current, "app", None)
    return None


def _guard_message(app: str, where: str) -> str:
    return (
        f"the app {app!r} is already guarded ({where}); serve "
        "adds its own, which would judge every handshake twice: serve an app without the "
        "middleware (e.g. examples.unguarded_app:app), or run this one with uvicorn"
    )


def served_app() -> Any:
    """The ASGI app ``serve`` runs: the user's app behind the middleware, from the environment.

    A factory named by import string, so that uvicorn's worker processes can build it too.

    Raises:
        RuntimeError: when the app (a factory's result) is already guarded.
    """
    from uvicorn.importer import import_from_string

    app_dir = os.environ.get(ENV_APP_DIR)
    if app_dir and app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    app = import_from_string(os.environ[ENV_APP])
    if os.environ.get(ENV_FACTORY) == "1":
        app = app()
        where = find_guard(app)
        if where is not None:
            raise RuntimeError(_guard_message(os.environ[ENV_APP], where))
    return load_policy_file(os.environ[ENV_POLICY]).middleware(app)


def _error(message: str) -> None:
    print(f"asgi-ws-handshake: error: {message}", file=sys.stderr)


def _note(message: str) -> None:
    print(f"asgi-ws-handshake: note: {message}", file=sys.stderr)


def serve(args: argparse.Namespace) -> int:
    """Check the policy file and the app, then run uvicorn; the exit status."""
    try:
        config = load_policy_file(args.policy)
    except PolicyFileError as exc:
        _error(str(exc))
        return 1
    try:
        import uvicorn
        from uvicorn.importer import ImportFromStringError, import_from_string
    except ImportError:
        _error("serve needs uvicorn: pip install 'asgi-ws-handshake[demo]'")
        return 1
    app_dir = os.path.abspath(args.app_dir)
    sys.path.insert(0, app_dir)
    try:
        app = import_from_string(args.app)
    except ImportFromStringError as exc:
        _error(f"cannot load the app {args.app!r}: {exc}")
        return 1
    where = None if args.factory else find_guard(app)
    if where is not None:
        _error(_guard_message(args.app, where))
        return 1
    if (args.workers or 1) > 1 and config.store.type == "memory":
        _note(
            "each worker has its own memory store; reused keys are only caught within one "
            "worker (use store = { type = 'redis', ... })"
        )
    os.environ[ENV_APP] = args.app
    os.environ[ENV_POLICY] = os.path.abspath(args.policy)
    os.environ[ENV_FACTORY] = "1" if args.factory else ""
    os.environ[ENV_APP_DIR] = app_dir
    level = "debug" if args.log_level == "trace" else args.log_level
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "uds": args.uds,
        "workers": args.workers,
        "root_path": args.root_path,
        "log_level": args.log_level,
        "log_config": uvicorn_log_config(level, quiet_denials=not args.keep_uvicorn_denial_errors),
        "access_log": not args.no_access_log,
        "ws": args.ws,
        "lifespan": args.lifespan,
        "ssl_keyfile": args.ssl_keyfile,
        "ssl_certfile": args.ssl_certfile,
    }
    options.update(_proxy_options(args, config))
    if args.timeout_keep_alive is not None:
        options["timeout_keep_alive"] = args.timeout_keep_alive
    uvicorn.run("asgi_ws_handshake.cli.serve:served_app", factory=True, **options)
    return 0


def _proxy_options(args: argparse.Namespace, config: PolicyFile) -> dict[str, Any]:
    """uvicorn's proxy-header options: off when the guard reads the headers itself."""
    options: dict[str, Any] = {}
    guard_reads = bool(config.middleware_options.get("trusted_proxies"))
    if args.proxy_headers is not None:
        options["proxy_headers"] = args.proxy_headers
        if args.proxy_headers and guard_reads:
            _note(
                "--proxy-headers makes uvicorn replace scope['client'] with the forwarded "
                "client, so the guard's trusted_proxies no longer sees the proxy"
            )
    elif guard_reads:
        options["proxy_headers"] = False  # scope["client"] stays the peer the guard judges
    if args.forwarded_allow_ips is not None:
        options["forwarded_allow_ips"] = args.forwarded_allow_ips
    return options
