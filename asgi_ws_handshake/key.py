"""Sec-WebSocket-Key validation and the Sec-WebSocket-Accept computation.

Owns RFC 6455 4.1 (the client's nonce) and 4.2.2 (the server's proof). Knows nothing
about headers or scopes: callers hand it the single key value.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
from collections.abc import Callable
from typing import Any

__all__ = ["GUID", "accept_key", "is_valid_key"]

#: RFC 6455 1.3 / 4.2.2 item 5.4: the globally unique identifier appended to the key.
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_GUID_BYTES = GUID.encode("ascii")
_a2b = binascii.a2b_base64


def _sha1_factory() -> Callable[[bytes], Any]:
    """``hashlib.sha1``, told it is not for security only where that is needed (FIPS mode)."""
    try:
        hashlib.sha1(b"")
    except ValueError:  # pragma: no cover - FIPS-enforcing OpenSSL builds only
        return functools.partial(hashlib.sha1, usedforsecurity=False)
    return hashlib.sha1


_sha1 = _sha1_factory()


def is_valid_key(key: str) -> bool:
    """Tell whether ``key`` is a well-formed ``Sec-WebSocket-Key``.

    RFC 6455 4.1 item 7 / 4.2.1 item 5: "a base64-encoded value that, when decoded, is 16 bytes
    in length". 16 bytes encode to 22 characters and "==" (RFC 4648 4); the 22nd character
    holds 2 data bits and 4 zero pad bits, so only A, Q, g or w are canonical there. The
    standard alphabet only: no URL-safe characters, no whitespace, no missing padding.

    Args:
        key: the header value, surrounding whitespace already removed.

    Returns:
        True when ``key`` is the canonical base64 encoding of exactly 16 bytes.
    """
    if len(key) != 24 or key[21] not in "AQgw":
        return False
    try:
        return len(_a2b(key, strict_mode=True)) == 16
    except (binascii.Error, ValueError):  # not strict base64, or not ASCII
        return False


def accept_key(key: str) -> str:
    """Compute ``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 4.2.2 item 5.4).

    Args:
        key: the client's key as sent (latin-1 text, as header values are decoded here).

    Returns:
        base64(SHA-1(key + GUID)).

    Raises:
        UnicodeEncodeError: if ``key`` holds a character outside latin-1.
    """
    digest = _sha1(key.encode("latin-1") + _GUID_BYTES).digest()
    return binascii.b2a_base64(digest, newline=False).decode("ascii")
