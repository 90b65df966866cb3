"""Test helpers: open guarded handshakes through Starlette's ``TestClient``, assert refusals.

``TestClient.websocket_connect`` sends a key the guard refuses (``testserver==`` is not
base64 of 16 bytes) and no Origin; ``HandshakeTestClient`` sends a fresh valid key, the Origin
you choose and credentials where handshakes carry them (query, cookie, subprotocol token,
``Authorization``), and ``refused`` asserts on the denial (``WebSocketDenialResponse``).
Needs Starlette and httpx (the test dependencies of any Starlette app).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator, Mapping, Sequence
from types import EllipsisType
from typing import Any
from urllib.parse import urlencode

import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse, WebSocketTestSession

__all__ = ["HandshakeTestClient", "handshake_client"]


def _key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


class HandshakeTestClient:
    """Starlette's ``TestClient`` with valid handshakes.

    Args:
        app: the ASGI app (guarded by the middleware, or using ``HandshakeGuard``).
        origin: the default Origin (None: send none); ``http://testserver`` is same-origin
            with TestClient's Host.
        **client_options: for ``TestClient``.
    """

    def __init__(
        self, app: Any, *, origin: str | None = "http://testserver", **client_options: Any
    ) -> None:
        self.client = TestClient(app, **client_options)
        self.origin = origin

    def __enter__(self) -> HandshakeTestClient:
        self.client.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.__exit__(*exc)

    def connect(
        self,
        path: str = "/ws",
        *,
        origin: str | EllipsisType | None = ...,
        subprotocols: Sequence[str] | None = None,
        query: Mapping[str, str] | None = None,
        cookies: Mapping[str, str] | None = None,
        bearer: str | None = None,
        token_subprotocol: tuple[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> WebSocketTestSession:
        """A handshake (use it as ``with client.connect(...) as ws``).

        Args:
            origin: this handshake's Origin (default the client's; None: none).
            subprotocols: offered subprotocols.
            query: query parameters (``{"ticket": ...}``).
            cookies: sent as one ``Cookie`` header.
            bearer: sent as ``Authorization: Bearer``.
            token_subprotocol: ``(marker, token)``, offered after ``subprotocols``.
            headers: any other headers.
        """
        sent = {"sec-websocket-key": _key(), **(headers or {})}
        chosen = self.origin if isinstance(origin, EllipsisType) else origin
        if chosen is not None:
            sent["origin"] = chosen
        if cookies:
            sent["cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items())
        if bearer is not None:
            sent["authorization"] = f"Bearer {bearer}"
        offered = list(subprotocols or ())
        if token_subprotocol is not None:
            offered.extend(token_subprotocol)
        url = f"{path}?{urlencode(query)}" if query else path
        return self.client.websocket_connect(url, offered or None, headers=sent)

    def refused(
        self,
        path: str = "/ws",
        *,
        status: int | None = None,
        reason: str | None = None,
        **handshake: Any,
    ) -> WebSocketDenialResponse:
        """Assert that the handshake is refused with a denial response; return it.

        Args:
            status: the expected HTTP status.
            reason: the expected reason code (the body of the guard's refusal).
            **handshake: as for ``connect``.
        """
        with pytest.raises(WebSocketDenialResponse) as caught, self.connect(path, **handshake):
            pass
        denial = caught.value
        if status is not None:
            assert denial.status_code == status, (denial.status_code, denial.text)
        if reason is not None:
            assert reason in denial.text, (reason, denial.text)
        return denial


@pytest.fixture
def handshake_client(app: Any) -> Iterator[HandshakeTestClient]:
    """A ``HandshakeTestClient`` for your ``app`` fixture (enable it with
    ``pytest_plugins = ["asgi_ws_handshake.testing"]`` in a ``conftest.py``)."""
    with HandshakeTestClient(app) as client:
        yield client
