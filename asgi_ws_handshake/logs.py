"""Logging that fits the servers: uvicorn's ERROR after the guard's refusals, and audit lines
where uvicorn's own lines go.

uvicorn's ``websockets-sansio`` and ``wsproto`` backends log ``ERROR: ASGI callable returned
without completing handshake.`` after every refusal sent through the ``websocket.http.response``
extension (uvicorn PR #3138), though the client got the intended answer. ``UvicornDenialFilter``
drops exactly that line when it follows the guard's own refusal on the same connection: the
middleware notes the connection's task when it refuses (``note_denial``), and uvicorn logs the
line from that very task once the app returns. Every other ERROR stays, that line included when
the app itself, not the guard, left a handshake unanswered.

``quiet_uvicorn_denials()`` installs the filter (``serve`` and the demo do); ``uvicorn_log_config``
is uvicorn's logging configuration with the filter and the audit logger added, for
``uvicorn.run(log_config=...)`` or, saved as JSON, ``uvicorn --log-config``.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import weakref
from typing import Any

__all__ = [
    "DENIAL_MESSAGE",
    "UvicornDenialFilter",
    "note_denial",
    "quiet_uvicorn_denials",
    "uvicorn_log_config",
]

DENIAL_MESSAGE = "ASGI callable returned without completing handshake."
#: The tasks (one per connection in uvicorn) whose handshake the guard refused, until uvicorn's
#: line is dropped or the task ends.
_DENIED: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()


def note_denial() -> None:
    """Note that the guard refused the handshake of the connection the current task serves."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop (a synchronous caller): nothing to correlate
        return
    if task is not None:
        _DENIED.add(task)


class UvicornDenialFilter(logging.Filter):
    """Drop uvicorn's "returned without completing handshake" ERROR after the guard's refusal."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != DENIAL_MESSAGE or record.levelno != logging.ERROR:
            return True
        try:
            task = asyncio.current_task()
        except RuntimeError:
            return True
        if task is None or task not in _DENIED:
            return True  # not after the guard's own refusal: the app's doing, keep it
        _DENIED.discard(task)
        return False


def quiet_uvicorn_denials(logger: str = "uvicorn.error") -> UvicornDenialFilter:
    """Install the filter on uvicorn's error logger (once; returns the installed filter).

    Call it where the app is built (uvicorn has configured logging by then) or anywhere before
    serving. To keep every line, do not call it (``serve --keep-uvicorn-denial-errors``).
    """
    target = logging.getLogger(logger)
    for existing in target.filters:
        if isinstance(existing, UvicornDenialFilter):
            return existing
    installed = UvicornDenialFilter()
    target.addFilter(installed)
    return installed


def uvicorn_log_config(level: str = "INFO", *, quiet_denials: bool = True) -> dict[str, Any]:
    """uvicorn's default logging configuration, plus the audit logger and the filter.

    Audit lines (``LoggingSink``'s, logger ``asgi_ws_handshake``) go to uvicorn's console
    handler in uvicorn's format, at ``level``: accepted handshakes at INFO, refusals at WARNING.

    Raises:
        ImportError: when uvicorn is not installed.
    """
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["asgi_ws_handshake"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    if quiet_denials:
        config.setdefault("filters", {})["ws_handshake_denials"] = {
            "()": "asgi_ws_handshake.logs.UvicornDenialFilter"
        }
        error = config["loggers"].setdefault("uvicorn.error", {})
        error["filters"] = [*error.get("filters", []), "ws_handshake_denials"]
    return config
