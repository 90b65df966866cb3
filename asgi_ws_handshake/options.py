"""Every option, described once: name, kind, default and meaning.

One source for the policy file's validation (``config`` checks each value against its kind,
and ``check-policy`` prints and suggests from it), the configuration reference of the
documentation (generated from these tables at build time) and the README's tables (a test
compares them). A test checks the tables against ``HandshakePolicy``'s and
``HandshakeMiddleware``'s own fields and defaults. No import of the rest of the package.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["MIDDLEWARE", "POLICY", "Option", "markdown_table"]


class Option(NamedTuple):
    """One option of ``HandshakePolicy`` or ``HandshakeMiddleware``."""

    name: str
    #: How a policy file spells it: "bool", "str", "int", "float", "strs" (array of strings),
    #: "choice:a|b", "callable" ('module:attribute'); "python": not settable from a file.
    kind: str
    #: Whether None (an absent key) is a value of its own.
    nullable: bool
    #: The default, as Python spells it.
    default: str
    #: What it means (Markdown, one paragraph).
    doc: str


POLICY: tuple[Option, ...] = (
    Option(
        "allow_origins",
        "strs",
        False,
        "()",
        "exact origins (`https://app.example.com`) or wildcard subdomains "
        "(`https://*.example.com`: any depth, never `example.com` itself, never "
        "`www.example.com.evil.com`). Same scheme and port required.",
    ),
    Option(
        "allow_origin_regex",
        "str",
        True,
        "None",
        "a regex (str or compiled) that must match the **whole** normalised origin",
    ),
    Option(
        "allow_any_origin",
        "bool",
        False,
        "False",
        "switch origin checks off. Any single well-formed or `null` origin passes; malformed "
        "or repeated `Origin` headers are still refused",
    ),
    Option(
        "allow_missing_origin",
        "bool",
        False,
        "True",
        "accept handshakes without `Origin` (non-browser clients; browsers always send one, "
        "RFC 6455 4.1)",
    ),
    Option(
        "allow_null_origin",
        "bool",
        False,
        "False",
        "accept `Origin: null` (sandboxed iframes, `file://` pages)",
    ),
    Option(
        "allow_hosts",
        "strs",
        True,
        "None",
        "a `Host` allowlist (`example.com`, `*.example.com`; port ignored). Set it with "
        "same-origin to defeat DNS rebinding. Behind a trusted proxy, the host it forwarded",
    ),
    Option(
        "subprotocols",
        "strs",
        False,
        "()",
        "supported subprotocols, in server preference order",
    ),
    Option(
        "require_subprotocol",
        "bool",
        False,
        "False",
        "refuse (400) handshakes that negotiate none",
    ),
    Option(
        "subprotocol_preference",
        "choice:server|client",
        False,
        '"server"',
        '`"server"` or `"client"` order',
    ),
    Option(
        "select_subprotocol",
        "callable",
        True,
        "None",
        "`(request, offered)` returning an offered subprotocol or None, replacing the built-in "
        "negotiation (e.g. when a "
        "token rides in a subprotocol); must return an offered value. In a file: "
        "`'module:attribute'`",
    ),
    Option(
        "key_reuse",
        "choice:ignore|flag|reject",
        False,
        '"flag"',
        '`"ignore"`, `"flag"` (audit only) or `"reject"` (400 `key_reused`)',
    ),
    Option("key_reuse_ttl", "float", False, "600", "seconds a key is remembered"),
    Option(
        "rate_limit",
        "str",
        True,
        "None",
        "handshakes per client address, in the [`limits`](https://limits.readthedocs.io/) "
        'notation (`"30/minute"`), counted by its moving window (needs the `limits` extra); '
        "429 `rate_limited` with `Retry-After`",
    ),
    Option(
        "rate_limit_total",
        "str",
        True,
        "None",
        "handshakes on the route from everyone together",
    ),
    Option(
        "max_connections",
        "int",
        True,
        "None",
        "open connections on the route; 503 `too_many_connections` with `Retry-After`",
    ),
    Option(
        "max_connections_per_client",
        "int",
        True,
        "None",
        "open connections per client address",
    ),
    Option(
        "connections_retry_after",
        "int",
        False,
        "5",
        "the `Retry-After` seconds sent with `too_many_connections`",
    ),
    Option(
        "on_store_error",
        "choice:open|closed",
        False,
        '"closed"',
        'when the store cannot answer: `"closed"` (503 `store_unavailable`) or `"open"` '
        "(proceed, audit marks `store_error`)",
    ),
    Option(
        "authenticate",
        "callable",
        True,
        "None",
        "who is connecting: a callable, sync or async, taking an `AuthRequest` and returning an "
        "`Identity`, `None` (no credentials: 401 `auth_missing`) or a refusal; runs after the "
        "rules above accepted, before the store checks. In a file: `'module:attribute'`",
    ),
    Option(
        "authenticate_timeout",
        "float",
        False,
        "5.0",
        "seconds an async `authenticate` may take (503 `auth_timeout`)",
    ),
    Option(
        "allow_anonymous",
        "bool",
        False,
        "False",
        "let handshakes for which `authenticate` returns `None` through, with no identity",
    ),
    Option(
        "limit_key",
        "choice:client|subject",
        False,
        '"client"',
        'what `rate_limit` and `max_connections_per_client` count under: `"client"` '
        '(address), `"subject"` (identity) or, in code only, a function of the request and '
        "the identity",
    ),
    Option(
        "max_connection_age",
        "float",
        True,
        "None",
        "seconds after which the guard closes an accepted connection",
    ),
    Option(
        "close_on_expiry",
        "bool",
        False,
        "True",
        "close the connection when the identity's `expires_at` passes",
    ),
    Option(
        "expiry_close_code",
        "int",
        False,
        "1008",
        "the close code for both: 1008 (policy violation) or 4000-4999",
    ),
    Option(
        "allow_cross_site",
        "bool",
        False,
        "False",
        "accept handshakes a browser marks `Sec-Fetch-Site: cross-site` although no allowance "
        "vouches for their Origin (none sent, or only the same-origin rule). Leave it off: "
        "that is another site's page whose Origin was stripped on the way (403 "
        "`fetch_site_cross_site`)",
    ),
    Option(
        "enforce",
        "bool",
        False,
        "True",
        "`False`: report-only. A handshake this route would refuse is let through; its audit "
        "event says `outcome: accepted` with `would_reject` naming the reason",
    ),
)

MIDDLEWARE: tuple[Option, ...] = (
    Option("policy", "python", False, "HandshakePolicy()", "the default policy (same-origin)"),
    Option(
        "routes",
        "python",
        True,
        "None",
        "`{glob: policy}` over the path the app's router sees (`path` minus `root_path`, as "
        "Starlette routes), "
        'first match wins (`fnmatch`, case-sensitive). In a file: `[routes."/glob"]` tables',
    ),
    Option(
        "audit",
        "python",
        True,
        "LoggingSink()",
        "a sink or a list of sinks: any callable taking an `AuditEvent`, sync or async. In a "
        "file: `[[audit]]` tables",
    ),
    Option(
        "store",
        "python",
        True,
        "MemoryStore()",
        "reused keys, rates and connection leases; `RedisStore` for several workers or "
        "machines. In a file: `store = { type = ... }`",
    ),
    Option(
        "audit_fail_closed",
        "bool",
        False,
        "False",
        "refuse (503 `audit_unavailable`) when an accepted handshake's event cannot be "
        "delivered to every sink",
    ),
    Option("audit_timeout", "float", False, "2.0", "seconds an async sink may take"),
    Option(
        "redact_subprotocols",
        "strs",
        False,
        "DEFAULT_REDACT",
        "case-insensitive globs of subprotocols to redact in audit events (`*bearer*`, "
        "`*token*`, `*authorization*`, `*secret*`, `*password*`, `eyj*`); values over 64 "
        "characters are always redacted",
    ),
    Option(
        "clock",
        "python",
        False,
        "time.time",
        "wall clock for event times (read once per handshake)",
    ),
    Option(
        "drain_timeout",
        "python",
        False,
        "5.0",
        "seconds the sinks get to finish at lifespan shutdown",
    ),
    Option(
        "trusted_proxies",
        "strs",
        False,
        "()",
        "addresses and networks of your reverse proxies (`10.0.0.0/8`, `::1`, `unix:` for a "
        'Unix socket), as `scope["client"]` names the peer. Only from these are the proxy '
        "headers read (public host, scheme and client address); from anyone else they are "
        "ignored. Run uvicorn with `--no-proxy-headers`: the guard reads them itself",
    ),
    Option(
        "public_origins",
        "strs",
        False,
        "()",
        "the origins the site is served from (`https://app.example.com`). Same-origin "
        "policies then accept exactly these, whatever the `Host`",
    ),
    Option(
        "proxy_headers",
        "choice:x-forwarded|forwarded",
        False,
        '"x-forwarded"',
        'which headers the trusted proxies set: `"x-forwarded"` (`X-Forwarded-For`, '
        '`-Host`, `-Proto`) or `"forwarded"` (RFC 7239 `Forwarded`); the other kind is '
        "ignored",
    ),
)


def markdown_table(options: tuple[Option, ...]) -> str:
    """The options as a Markdown table: option, default, meaning."""
    lines = ["| option | default | meaning |", "|---|---|---|"]
    for option in options:
        doc = option.doc.replace("|", "\\|")
        lines.append(f"| `{option.name}` | `{option.default}` | {doc} |")
    return "\n".join(lines)
