"""Route policies through the middleware: the route matches the path the router sees, under
a ``root_path`` or a mount (review item 1 of issue #13; under uvicorn:
tests/servers/test_routes.py), the first matching route wins, a route's own selector.
"""

from __future__ import annotations

from asgi_ws_handshake import HandshakePolicy, HandshakeRequest, Outcome
from tests.asgi import run, ws_scope


async def test_a_route_policy_holds_under_a_root_path_and_a_mount_in_process() -> None:
    routes = {"/admin/*": HandshakePolicy(allow_origins=["https://admin.test"])}
    for root in ("", "/api", "/api/v1"):
        scope = ws_scope(origin="https://evil.test", path=f"{root}/admin/ws", root_path=root)
        result = await run(
            None, scope, policy=HandshakePolicy(allow_any_origin=True), routes=routes
        )
        assert result.script.sent[0]["status"] == 403, root
        assert result.sink.events[0].route == "/admin/*"


async def test_routes_first_match_wins() -> None:
    admin = HandshakePolicy(allow_origins=["https://admin.test"])
    anyone = HandshakePolicy(allow_any_origin=True)
    routes = {"/admin/*": admin, "/admin/open": anyone, "/public/*": anyone}
    for path, origin, allowed, route in [
        ("/admin/x", "https://admin.test", True, "/admin/*"),
        ("/admin/open", "https://evil.test", False, "/admin/*"),  # first match wins
        ("/public/feed", "https://evil.test", True, "/public/*"),
        ("/other", "https://evil.test", False, "default"),
    ]:
        result = await run(None, ws_scope(path=path, origin=origin), routes=routes)
        (event,) = result.sink.events
        assert (event.outcome is Outcome.ACCEPTED) is allowed, path
        assert event.route == route


async def test_routes_select_policies_and_a_raising_selector_is_an_internal_error() -> None:
    def selector(request: HandshakeRequest, offered: tuple[str, ...]) -> str | None:
        raise RuntimeError("selector bug")

    routes = {"/admin/*": HandshakePolicy(allow_any_origin=True, select_subprotocol=selector)}
    result = await run(None, ws_scope(path="/admin/x", protocols="chat"), routes=routes)
    assert result.app_scopes == []
    assert result.script.sent[0]["status"] == 500
    (event,) = result.sink.events
    assert (event.route, event.reason) == ("/admin/*", "internal_error")
