"""Policy files: a TOML (or already-parsed) mapping turned into policies, sinks and a store.

Owns the file format, its validation and error messages, and building the middleware from
it. What each option means is ``HandshakePolicy``'s business; this module only reads values,
checks their types and names the key that is wrong. Nothing is opened or imported until
``PolicyFile.middleware()`` builds the pieces, except what validation needs (``module:attr``
callables and the store's module, so that a typo is caught by ``check-policy``).

Layout (every key optional)::

    allow_origins = ["https://app.example.com"]   # top level: the default HandshakePolicy
    key_reuse = "reject"
    store = { type = "memory", max_keys = 100000 } # or { type = "redis", url = "redis://..." }

    [routes."/admin/*"]                            # a complete policy of its own per glob
    allow_origins = ["https://admin.example.com"]

    [[audit]]                                      # sinks; absent means one logging sink
    type = "jsonl"
    path = "audit.jsonl"                           # relative to the policy file

    [middleware]
    audit_fail_closed = false
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .audit import DEFAULT_REDACT, AuditSink
from .config_values import (
    PolicyFileError,
    check_value,
    describe_value,
    unknown_key,
)
from .middleware import ASGIApp, HandshakeMiddleware
from .options import MIDDLEWARE, POLICY
from .policy import HandshakePolicy
from .proxies import Deployment
from .sinks import JSONLinesSink, LoggingSink, MemorySink, ThreadedSink
from .stores import HandshakeStore, MemoryStore
from .stores.redis_connect import parse_store_url

__all__ = [
    "POLICY_OPTIONS",
    "PolicyFile",
    "PolicyFileError",
    "SinkSpec",
    "StoreSpec",
    "load_policy_file",
    "parse_policy",
    "parse_policy_file",
]


# option -> (kind, allows None), from the one description of every option (``options``).
POLICY_OPTIONS: dict[str, tuple[str, bool]] = {o.name: (o.kind, o.nullable) for o in POLICY}
# Options whose checks in HandshakePolicy do not depend on other options: tried one at a time
# so that an error names the key that caused it.
_ALONE = (
    "allow_origins",
    "allow_origin_regex",
    "allow_hosts",
    "subprotocols",
    "subprotocol_preference",
    "key_reuse",
    "key_reuse_ttl",
    "rate_limit",
    "rate_limit_total",
    "max_connections",
    "max_connections_per_client",
    "connections_retry_after",
    "on_store_error",
)
_FILE_TABLES = ("routes", "audit", "store", "middleware")
_MIDDLEWARE_OPTIONS: dict[str, tuple[str, bool]] = {
    o.name: (o.kind, o.nullable) for o in MIDDLEWARE if o.kind != "python"
}
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_SINK_OPTIONS: dict[str, dict[str, tuple[str, bool]]] = {
    "logging": {
        "logger": ("str", False),
        "level": ("choice:" + "|".join(_LEVELS), False),
        "rejected_level": ("choice:" + "|".join(_LEVELS), False),
    },
    "jsonl": {"path": ("str", False)},
    "memory": {"maxlen": ("int", False)},
    "callable": {"target": ("callable", False), "kwargs": ("table", False)},
}
_SINK_REQUIRED = {"jsonl": ("path",), "callable": ("target",)}
_REDIS_MODULE = "asgi_ws_handshake.stores.redis"
#: What the ``redis`` extra installs; the store module itself imports them only when built.
_REDIS_DEPENDENCIES = ("redis", "limits")


def _policy_kwargs(source: str, prefix: str, data: Mapping[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in POLICY_OPTIONS:
            raise unknown_key(source, prefix, key, POLICY_OPTIONS)
        kind, nullable = POLICY_OPTIONS[key]
        kwargs[key] = check_value(source, prefix + key, kind, nullable, value)
    return kwargs


def parse_policy(
    data: Mapping[str, Any], *, source: str = "<mapping>", prefix: str = ""
) -> HandshakePolicy:
    """Build a ``HandshakePolicy`` from a mapping of its options (no file-level tables).

    Raises:
        PolicyFileError: an unknown key, a wrong type or a value the policy refuses.
    """
    if not isinstance(data, Mapping):
        raise PolicyFileError(source, prefix.rstrip(".") or None, "expected a table")
    kwargs = _policy_kwargs(source, prefix, data)
    for key in _ALONE:
        if key in kwargs:
            try:
                HandshakePolicy(**{key: kwargs[key]})
            except (TypeError, ValueError, ImportError) as exc:
                # ImportError: an option that needs an extra (rate_limit: limits).
                raise PolicyFileError(source, prefix + key, _toml_spelling(exc)) from None
    try:
        return HandshakePolicy(**kwargs)
    except (TypeError, ValueError) as exc:  # a combination, e.g. allow_any_origin + origins
        where = prefix.rstrip(".") or "(top level)"
        raise PolicyFileError(source, where, _toml_spelling(exc)) from None


_PYTHON_BOOL = re.compile(r"\b(\w+)=(True|False)\b")


def _toml_spelling(exc: Exception) -> str:
    """A policy's error message as a policy file spells it (``name = true``, not ``=True``)."""
    return _PYTHON_BOOL.sub(lambda m: f"{m.group(1)} = {m.group(2).lower()}", str(exc))


@dataclass(frozen=True, slots=True)
class SinkSpec:
    """An audit sink as configured; ``build()`` creates it."""

    type: str
    options: Mapping[str, Any]
    threaded: bool = False

    def build(self) -> AuditSink:
        sink: Callable[[Any], Any]
        opts = self.options
        if self.type == "logging":
            sink = LoggingSink(
                opts["logger"],
                level=_level(opts["level"]),
                rejected_level=_level(opts["rejected_level"]),
            )
        elif self.type == "jsonl":
            sink = JSONLinesSink(opts["path"])
        elif self.type == "memory":
            sink = MemorySink(opts.get("maxlen", 1000))
        else:
            target = opts["target"]
            kwargs = opts.get("kwargs")
            sink = target(**kwargs) if kwargs is not None else target
        return ThreadedSink(sink) if self.threaded else sink

    def describe(self) -> dict[str, Any]:
        """JSON-safe form (callables as their import string)."""
        out: dict[str, Any] = {"type": self.type}
        out.update({k: _plain(v) for k, v in self.options.items()})
        if self.threaded:
            out["threaded"] = True
        return out


def _level(name: str) -> int:
    return {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}[name]


def _plain(value: Any) -> Any:
    if callable(value):
        module = getattr(value, "__module__", "?")
        return f"{module}:{getattr(value, '__qualname__', repr(value))}"
    if isinstance(value, tuple):
        return list(value)
    return value


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """The store as configured; ``build()`` creates it."""

    type: str = "memory"
    options: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> HandshakeStore:
        if self.type == "memory":
            return MemoryStore(**self.options)
        module = importlib.import_module(_REDIS_MODULE)
        store: HandshakeStore = module.RedisStore(**self.options)
        return store

    def describe(self) -> dict[str, Any]:
        return {"type": self.type, **self.options}


@dataclass(frozen=True, slots=True)
class PolicyFile:
    """Everything a policy file says: the default policy, routes, sinks, store, options."""

    source: str
    policy: HandshakePolicy
    routes: Mapping[str, HandshakePolicy] = field(default_factory=dict)
    #: None: the middleware's default (one ``LoggingSink``); ``()``: no sinks.
    audit: tuple[SinkSpec, ...] | None = None
    store: StoreSpec = field(default_factory=StoreSpec)
    middleware_options: Mapping[str, Any] = field(default_factory=dict)

    def middleware(self, app: ASGIApp) -> HandshakeMiddleware:
        """Wrap ``app`` with the configured middleware (opens files, connects stores)."""
        sinks = None if self.audit is None else [spec.build() for spec in self.audit]
        return HandshakeMiddleware(
            app,
            policy=self.policy,
            routes=dict(self.routes),
            audit=sinks,
            store=self.store.build(),
            **self.middleware_options,
        )

    def describe(self) -> dict[str, Any]:
        """The effective configuration, every option explicit, JSON-safe."""
        return {
            "source": self.source,
            "policy": describe_policy(self.policy),
            "routes": {glob: describe_policy(p) for glob, p in self.routes.items()},
            "audit": (
                [_sink_spec(self.source, "audit[0]", {"type": "logging"}).describe()]
                if self.audit is None
                else [spec.describe() for spec in self.audit]
            ),
            "store": self.store.describe(),
            "middleware": {
                "audit_fail_closed": False,
                "audit_timeout": 2.0,
                "redact_subprotocols": _default_redact(),
                "trusted_proxies": [],
                "public_origins": [],
                "proxy_headers": "x-forwarded",
                **{k: _plain(v) for k, v in self.middleware_options.items()},
            },
        }


def _default_redact() -> list[str]:
    return list(DEFAULT_REDACT)


def describe_policy(policy: HandshakePolicy) -> dict[str, Any]:
    """Every public option of ``policy`` as JSON-safe values."""
    out: dict[str, Any] = {}
    for f in fields(policy):
        if not f.init:  # (derived state, not an option)
            continue
        value = getattr(policy, f.name)
        if isinstance(value, re.Pattern):
            value = value.pattern
        out[f.name] = _plain(value)
    return out


def _sink_spec(source: str, key: str, data: object) -> SinkSpec:
    if not isinstance(data, dict):
        raise PolicyFileError(source, key, f"expected a table, got {describe_value(data)} {data!r}")
    kind = data.get("type")
    if kind not in _SINK_OPTIONS:
        listed = ", ".join(repr(t) for t in _SINK_OPTIONS)
        raise PolicyFileError(source, f"{key}.type", f"expected one of {listed}, got {kind!r}")
    known = _SINK_OPTIONS[kind]
    options: dict[str, Any] = {}
    threaded = False
    for name, value in data.items():
        if name == "type":
            continue
        if name == "threaded":
            threaded = check_value(source, f"{key}.threaded", "bool", False, value)
            continue
        if name not in known:
            raise unknown_key(source, f"{key}.", name, [*known, "type", "threaded"])
        kind_, nullable = known[name]
        options[name] = check_value(source, f"{key}.{name}", kind_, nullable, value)
    for name in _SINK_REQUIRED.get(kind, ()):
        if name not in options:
            raise PolicyFileError(source, f"{key}.{name}", f"required for a {kind!r} sink")
    if kind == "logging":
        options = {
            "logger": "asgi_ws_handshake.audit",
            "level": "INFO",
            "rejected_level": "WARNING",
            **options,
        }
    if kind == "jsonl":
        path = Path(options["path"])
        if not path.is_absolute() and source != "<mapping>":
            path = Path(source).resolve().parent / path
        options["path"] = str(path)
    if kind == "memory" and options.get("maxlen", 1) < 1:
        raise PolicyFileError(source, f"{key}.maxlen", f"must be >= 1, got {options['maxlen']}")
    return SinkSpec(kind, options, threaded)


def _store_spec(source: str, data: object) -> StoreSpec:
    if not isinstance(data, dict):
        raise PolicyFileError(source, "store", f"expected a table, got {describe_value(data)}")
    kind = data.get("type", "memory")
    options = {k: v for k, v in data.items() if k != "type"}
    if kind == "memory":
        for name, value in options.items():
            if name != "max_keys":
                raise unknown_key(source, "store.", name, ["type", "max_keys"])
            check_value(source, "store.max_keys", "int", False, value)
            if value < 1:
                raise PolicyFileError(source, "store.max_keys", f"must be >= 1, got {value}")
        return StoreSpec("memory", options)
    if kind == "redis":
        url = options.get("url")
        if not isinstance(url, str):
            raise PolicyFileError(
                source,
                "store.url",
                "a redis store needs url = 'redis://...', 'redis+cluster://host:port,...'"
                " or 'redis+sentinel://host:port,.../service'",
            )
        try:
            parse_store_url(url)
        except ValueError as exc:
            raise PolicyFileError(source, "store.url", str(exc)) from None
        missing = [name for name in _REDIS_DEPENDENCIES if importlib.util.find_spec(name) is None]
        if missing:
            raise PolicyFileError(
                source,
                "store.type",
                f"the redis store needs {', '.join(missing)}: install 'asgi-ws-handshake[redis]'",
            )
        return StoreSpec("redis", options)
    raise PolicyFileError(source, "store.type", f"expected 'memory' or 'redis', got {kind!r}")


def parse_policy_file(data: Mapping[str, Any], *, source: str = "<mapping>") -> PolicyFile:
    """Validate a whole policy-file mapping (as ``tomllib`` returns it).

    Raises:
        PolicyFileError: naming the source, the key and what is wrong.
    """
    if not isinstance(data, Mapping):
        raise PolicyFileError(source, None, "expected a table")
    top = {k: v for k, v in data.items() if k not in _FILE_TABLES}
    for key in top:
        if key not in POLICY_OPTIONS:
            raise unknown_key(source, "", key, [*POLICY_OPTIONS, *_FILE_TABLES])
    policy = parse_policy(top, source=source)

    routes: dict[str, HandshakePolicy] = {}
    raw_routes = data.get("routes", {})
    if not isinstance(raw_routes, dict):
        raise PolicyFileError(source, "routes", 'expected a table of [routes."/glob"] tables')
    for glob, table in raw_routes.items():
        prefix = f'routes."{glob}".'
        if not glob.startswith("/") and not glob.startswith("*"):
            raise PolicyFileError(source, prefix[:-1], "a route glob must start with '/' or '*'")
        if not isinstance(table, dict):
            raise PolicyFileError(
                source, prefix[:-1], f"expected a table, got {describe_value(table)}"
            )
        routes[glob] = parse_policy(table, source=source, prefix=prefix)

    audit: tuple[SinkSpec, ...] | None = None
    if "audit" in data:
        raw_audit = data["audit"]
        if isinstance(raw_audit, dict):  # a single [audit] table
            raw_audit = [raw_audit]
        if not isinstance(raw_audit, list):
            raise PolicyFileError(source, "audit", "expected [[audit]] tables or an array")
        audit = tuple(_sink_spec(source, f"audit[{i}]", s) for i, s in enumerate(raw_audit))

    store = _store_spec(source, data["store"]) if "store" in data else StoreSpec()

    middleware_options: dict[str, Any] = {}
    raw_mw = data.get("middleware", {})
    if not isinstance(raw_mw, dict):
        raise PolicyFileError(source, "middleware", "expected a table")
    for name, value in raw_mw.items():
        if name not in _MIDDLEWARE_OPTIONS:
            raise unknown_key(source, "middleware.", name, _MIDDLEWARE_OPTIONS)
        kind, nullable = _MIDDLEWARE_OPTIONS[name]
        middleware_options[name] = check_value(source, f"middleware.{name}", kind, nullable, value)
    timeout = middleware_options.get("audit_timeout")
    if timeout is not None and timeout <= 0:
        raise PolicyFileError(source, "middleware.audit_timeout", f"must be > 0, got {timeout}")
    for name in ("trusted_proxies", "public_origins", "proxy_headers"):
        if name in middleware_options:
            try:
                Deployment(**{name: middleware_options[name]})
            except ValueError as exc:
                raise PolicyFileError(source, f"middleware.{name}", str(exc)) from None
    return PolicyFile(source, policy, routes, audit, store, middleware_options)


def load_policy_file(path: str | Path) -> PolicyFile:
    """Read and validate a TOML policy file.

    Raises:
        PolicyFileError: unreadable, not TOML, or a wrong key, type or value.
    """
    source = str(path)
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise PolicyFileError(source, None, f"cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyFileError(source, None, f"not valid TOML: {exc}") from None
    return parse_policy_file(data, source=source)
