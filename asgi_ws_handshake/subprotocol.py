"""Sec-WebSocket-Protocol token lists (RFC 6455 4.1 item 10, RFC 9110 5.6) and negotiation.

Owns the syntax of offered subprotocols and the choice among them. Which subprotocols a
route supports, and whether one is required, is configured in the policy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["find_malformed", "is_token", "select_subprotocol"]

# RFC 9110 5.6.2: token = 1*tchar.
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def is_token(value: str) -> bool:
    """Tell whether ``value`` is an RFC 9110 5.6.2 token."""
    return _TOKEN_RE.fullmatch(value) is not None


def find_malformed(offered: Sequence[str]) -> str | None:
    """Say what is wrong with an offered list, or None when every item is a distinct token.

    Empty items must already be dropped (RFC 9110 5.6.1.2). RFC 6455 4.1 item 10: each
    element is a token and "MUST all be unique strings".
    """
    for item in offered:
        if _TOKEN_RE.fullmatch(item) is None:
            return "an offered subprotocol is not a token"
    if len(offered) > 1 and len(set(offered)) != len(offered):
        return "an offered subprotocol is repeated"
    return None


def select_subprotocol(
    offered: Sequence[str], supported: Sequence[str], *, prefer: str = "server"
) -> str | None:
    """Pick a subprotocol both sides support (RFC 6455 4.2.2 item 5.4 /subprotocol/).

    Args:
        offered: the client's list, in its order of preference.
        supported: the server's list, in its order of preference.
        prefer: "server" picks the first supported one the client offered;
            "client" picks the first offered one the server supports.

    Returns:
        The chosen subprotocol, or None when there is no overlap.
    """
    if not offered or not supported:
        return None
    if prefer == "server":
        for name in supported:
            if name in offered:
                return name
    else:
        for name in offered:
            if name in supported:
                return name
    return None
