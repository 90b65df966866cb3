"""Sec-WebSocket-Key validation and the Sec-WebSocket-Accept computation.

Owns RFC 6455 4.1 (the client's nonce) and 4.2.2 (the server's proof). Knows nothing
about headers or scopes: callers hand it the single key value.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import re
from collections.abc import Callable
from typing import Any

__all__ = ["GUID", "accept_key", "is_valid_key"]

#: RFC 6455 1.3 / 4.2.2 item 5.4: the globally unique identifier appended to the key.
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_GUID_BYTES = GUID.encode("ascii")

# RFC 6455 4.1 item 7 / 4.2.1 item 5: "a base64-encoded value that, when decoded, is 16 bytes
# in length". 16 bytes encode to 22 characters and "==" (RFC 4648 4); the 22nd character holds
# 2 data bits and 4 zero pad bits, so only A, Q, g or w are canonical there. The standard
# alphabet only: no URL-safe characters, no whitespace, no missing padding.
_KEY_RE = re.compile(r"[A-Za-z0-9+/]{21}[AQgw]==")
_a2b = binascii.a2b_base64


def _sha1_factory() -> Callable[[bytes], Any]:
    """``hashlib.sha1``, told it is not for security only where that is needed (FIPS mode).

    The keyword costs a fifth of the hash on a 60-byte input, so it is passed only when a
    plain call is refused.
    """
    try:
        hashlib.sha1(b"")
    except ValueError:  # pragma: no cover - FIPS-enforcing OpenSSL builds only
        return functools.partial(hashlib.sha1, usedforsecurity=False)
    return hashlib.sha1


_sha1 = _sha1_factory()


def is_valid_key(key: str) -> bool:
    """Tell whether ``key`` is a well-formed ``Sec-WebSocket-Key``.

    Args:
        key: the header value, surrounding whitespace already removed.

    Returns:
        True when ``key`` is the canonical base64 encoding of exactly 16 bytes.
    """
    return _KEY_RE.fullmatch(key) is not None


def accept_key(key: str) -> str:
    """Compute ``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 4.2.2 item 5.4).

    Args:
        key: the client's key as sent (latin-1 text, as header values are decoded here).

    Returns:
        base64(SHA-1(key + GUID)).

    Raises:
        UnicodeEncodeError: if ``key`` holds a character outside latin-1.
    """
    return _accept(key.encode("latin-1"))


def _accept(key: bytes) -> str:
    # RFC 6455 4.2.2 item 5.4: SHA-1 of the key and GUID, base64-encoded.
    return binascii.b2a_base64(_sha1(key + _GUID_BYTES).digest(), newline=False).decode("ascii")


def accept_key_bytes(key: Any) -> str | None:
    """``accept_key`` for a raw header value: None unless it is a canonical key (as above).

    The plain lane's form, on the bytes as the server gave them. The same rule as
    ``is_valid_key``, checked by decoding: 24 characters, strict base64 (standard alphabet,
    correct padding) of 16 bytes, the 22nd character one of A, Q, g or w.
    """
    if type(key) is not bytes or len(key) != 24 or key[21] not in b"AQgw":
        return None  # (from_scope, too, ignores values that are not bytes)
    try:
        if len(_a2b(key, strict_mode=True)) != 16:
            return None
    except binascii.Error:  # not strict base64
        return None
    return _accept(key)
