"""The scope reader: ``HandshakeRequest.from_scope`` (the one reader of ``scope["headers"]``)
and ``route_path``, on scopes as servers build them, down to the sparest."""

from __future__ import annotations

import pytest

from asgi_ws_handshake import HandshakeRequest
from asgi_ws_handshake.request import route_path
from tests.asgi import ws_scope
from tests.support import GOOD_KEY

# -- the headers ----------------------------------------------------------------------------


def test_from_scope_keeps_duplicates_and_decodes_latin1() -> None:
    request = HandshakeRequest.from_scope(
        ws_scope(
            bare=True,
            headers=[
                (b"host", b"a.test"),
                (b"origin", b"https://a.test"),
                (b"origin", b"https://b.test"),
                (b"sec-websocket-key", b"  " + GOOD_KEY.encode() + b"\t"),
                (b"sec-websocket-version", b"13"),
                (b"sec-websocket-protocol", b"chat, , \xff"),
                (b"cookie", b"secret=1"),
            ],
        )
    )
    assert request.origins == ("https://a.test", "https://b.test")
    assert request.keys == (GOOD_KEY,)  # RFC 9110 5.5: surrounding whitespace is not the value
    assert request.subprotocols == ("chat", "\xff")  # empty item dropped, latin-1 kept
    assert request.hosts == ("a.test",)


def test_from_scope_daphne_joined_lines_equal_separate_lines() -> None:
    joined = HandshakeRequest.from_scope(
        ws_scope(
            bare=True,
            headers=[
                (b"origin", b"https://a.test, https://b.test"),
                (b"sec-websocket-key", b"k1, k2"),
            ],
        )
    )
    separate = HandshakeRequest.from_scope(
        ws_scope(
            bare=True,
            headers=[
                (b"origin", b"https://a.test"),
                (b"origin", b"https://b.test"),
                (b"sec-websocket-key", b"k1"),
                (b"sec-websocket-key", b"k2"),
            ],
        )
    )
    assert joined.origins == separate.origins == ("https://a.test", "https://b.test")
    assert joined.keys == separate.keys == ("k1", "k2")


def test_from_scope_falls_back_to_scope_subprotocols() -> None:
    # uvicorn's wsproto backend removes the header and keeps scope["subprotocols"].
    request = HandshakeRequest.from_scope(
        ws_scope(bare=True, headers=[], subprotocols=["a", "b", ""])
    )
    assert request.subprotocols == ("a", "b")
    # The header wins when present (hypercorn's list keeps only the last line).
    request = HandshakeRequest.from_scope(
        ws_scope(
            bare=True,
            headers=[(b"sec-websocket-protocol", b"x"), (b"sec-websocket-protocol", b"y")],
            subprotocols=["y"],
        )
    )
    assert request.subprotocols == ("x", "y")


def test_from_scope_optional_keys_and_odd_shapes() -> None:
    request = HandshakeRequest.from_scope(ws_scope(bare=True, headers=[(b"ORIGIN", b"x")]))
    assert request.origins == ("x",)  # a server that forgot to lowercase is still read
    assert request.path == "/"
    assert request.http_version == "1.1"
    assert request.client is None
    assert request.denial_response is False
    request = HandshakeRequest.from_scope(
        ws_scope(
            bare=True,
            headers=[],
            client=["127.0.0.1", "5000"],  # granian: port as a string
            extensions={"websocket.http.response": {}},
            http_version="2",
        )
    )
    assert request.client == ("127.0.0.1", 5000)
    assert request.denial_response is True
    assert request.http_version == "2"
    assert (
        HandshakeRequest.from_scope(ws_scope(bare=True, headers=[], client=object())).client is None
    )


def test_from_scope_missing_version_is_empty() -> None:
    assert HandshakeRequest.from_scope(ws_scope(bare=True, headers=[])).versions == ()


# -- the path routes match ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "root", "expected"),
    [
        ("/api/admin/ws", "/api", "/admin/ws"),  # uvicorn: path = root_path + path
        ("/api", "/api", ""),
        ("/apiadmin/ws", "/api", "/apiadmin/ws"),  # not on a segment boundary: as it is
        ("/admin/ws", "/api", "/admin/ws"),  # a server that does not prefix
        ("/admin/ws", "", "/admin/ws"),
    ],
)
def test_route_path_is_the_path_starlette_routes_on(path: str, root: str, expected: str) -> None:
    # Review item 1 (issue #13): route policies match the path the router sees.
    assert route_path(ws_scope(path=path, root_path=root)) == expected
