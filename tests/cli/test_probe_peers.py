"""The probe against other people's servers, started here on 127.0.0.1 (tests/probe_peers.py):
the websockets library with and without ``origins=`` and with weak origin checks, Django
Channels' OriginValidator under daphne, a server that speaks version 8 on purpose, and a
plain HTTP server. Each run is judged by its exit status and by which case failed, why.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_handshake.cli import main
from tests.apps.probe_channels import ALLOWED
from tests.probe_peers import plain_http_server, version_server, websockets_server
from tests.support import Server, daphne_argv, running

#: What a 101 fails on a 127.0.0.1 target (origin_other_scheme, https:// for an http://
#: origin, is a warning; the suffix and subdomain lookalikes are skipped).
LOOKALIKES = {"null_origin", "origin_prefix", "origin_other_port", "origin_userinfo"}


def probe(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, dict[str, Any]]:
    """Run the command in this process with --json; return (exit status, document)."""
    status = main(["probe", url, "--json", *args])
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert document["schema"] == "asgi-ws-handshake/probe/2"
    assert document["exit_status"] == status
    return status, document


def by_verdict(document: dict[str, Any], verdict: str) -> dict[str, str | None]:
    """name -> pattern of the cases with this verdict."""
    return {c["name"]: c["pattern"] for c in document["cases"] if c["verdict"] == verdict}


def why(document: dict[str, Any], name: str) -> str:
    return str(next(c["why"] for c in document["cases"] if c["name"] == name))


@pytest.fixture(scope="module")
def weak() -> Iterator[int]:
    with websockets_server(weak=True) as port:
        yield port


@pytest.fixture(scope="module")
def versions() -> Iterator[int]:
    with version_server() as port:
        yield port


@pytest.fixture(scope="module")
def daphne(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    argv = daphne_argv("tests.apps.probe_channels:app")
    with running("probe-daphne", argv, tmp_path_factory.mktemp("daphne")) as server:
        yield server


def test_websockets_without_origins_is_open(capsys: pytest.CaptureFixture[str]) -> None:
    with websockets_server() as port:
        status, document = probe(capsys, f"ws://127.0.0.1:{port}/")
    assert status == 1
    failed = by_verdict(document, "fail")
    assert failed == {"foreign_origin": "no_origin_check"} | dict.fromkeys(
        LOOKALIKES, "no_origin_check"
    )
    assert by_verdict(document, "warn")["origin_other_scheme"] == "no_origin_check"
    assert "open to cross-site WebSocket hijacking" in why(document, "foreign_origin")
    assert (
        why(document, "origin_prefix") == "accepted, as it accepts any origin (see foreign_origin)"
    )


def test_websockets_with_origins_passes(capsys: pytest.CaptureFixture[str]) -> None:
    with websockets_server(origins=["http://127.0.0.1:{port}"]) as port:
        url = f"ws://127.0.0.1:{port}/"
        status, document = probe(capsys, url)
        strict, _ = probe(capsys, url, "--fail-on", "warn")
    assert status == 0, by_verdict(document, "fail")
    assert document["result"] == "warn"
    assert by_verdict(document, "fail") == {}
    warned = by_verdict(document, "warn")
    # websockets refuses other versions with 400 but does not list the one it speaks.
    assert {"version_99", "version_8", "reused_key"} <= set(warned)
    assert "without the Sec-WebSocket-Version it speaks (RFC 6455 4.4)" in why(
        document, "version_99"
    )
    # An IP address has no subdomain, and no suffix a browser could send.
    skipped = {s["name"]: s["why"] for s in document["skipped"]}
    assert set(skipped) == {"origin_suffix", "origin_sibling", "origin_subdomain"}
    assert "127.0.0.1 is an IP address" in skipped["origin_subdomain"]
    assert strict == 1


@pytest.mark.parametrize(
    ("path", "origin", "failed", "message"),
    [
        # Node ws verifyClient's startsWith("http://127.0.0.1"): a prefix check is port-blind
        # and lets the @ trick through too.
        (
            "/prefix",
            None,
            {
                "origin_prefix": "prefix_check",
                "origin_other_port": "port_blind",
                "origin_userinfo": "raw_prefix_match",
            },
            "prefix check: accepted 'http://127.0.0.1.evil.example:",
        ),
        (
            "/suffix",
            "http://chat.app.test",
            {"origin_suffix": "suffix_without_dot"},
            "suffix check without a dot boundary: accepted 'http://evilchat.app.test'",
        ),
        ("/port", None, {"origin_other_port": "port_blind"}, "port-blind check: accepted"),
        (
            "/scheme",
            "https://127.0.0.1:{port}",
            {"origin_other_scheme": "scheme_blind"},
            "scheme-blind check: accepted 'http://127.0.0.1:",
        ),
    ],
)
def test_weak_origin_checks_are_named(
    weak: int,
    path: str,
    origin: str | None,
    failed: dict[str, str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--origin", origin.replace("{port}", str(weak))] if origin else []
    status, document = probe(capsys, f"ws://127.0.0.1:{weak}{path}", *args)
    assert status == 1
    assert by_verdict(document, "fail") == failed
    first = next(iter(failed))
    assert why(document, first).startswith(message), why(document, first)
    assert document["cases"][1]["name"] == "foreign_origin"
    assert document["cases"][1]["verdict"] == "pass"


def test_scheme_blind_check_of_an_http_site_is_a_warning(
    weak: int, capsys: pytest.CaptureFixture[str]
) -> None:
    # Accepting https:// for an http:// origin opens nothing: only the host serves https://.
    status, document = probe(capsys, f"ws://127.0.0.1:{weak}/scheme")
    assert status == 0
    assert by_verdict(document, "warn")["origin_other_scheme"] == "scheme_blind"
    assert "harmless here" in why(document, "origin_other_scheme")


def test_suffix_check_also_accepts_subdomains_as_a_warning(
    weak: int, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"ws://127.0.0.1:{weak}/suffix"
    _, document = probe(capsys, url, "--origin", "http://chat.app.test")
    assert by_verdict(document, "warn")["origin_subdomain"] == "subdomain_wildcard"
    # The sibling under app.test was refused: the accepted evilchat.app.test is a missing dot.
    sibling = next(c for c in document["cases"] if c["name"] == "origin_sibling")
    assert (sibling["status"], sibling["verdict"]) == (403, "pass")


def test_wildcard_over_the_parent_domain_is_a_warning(
    weak: int, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"ws://127.0.0.1:{weak}/wildcard"
    status, document = probe(capsys, url, "--origin", "http://chat.app.test")
    assert status == 0
    warned = by_verdict(document, "warn")
    assert warned["origin_suffix"] == "parent_wildcard"
    assert warned["origin_sibling"] == "parent_wildcard"
    assert "as is any host under app.test" in why(document, "origin_suffix")
    status, _ = probe(capsys, url, "--origin", "http://chat.app.test", "--fail-on", "warn")
    assert status == 1


def test_daphne_with_origin_validator_speaks_version_8_on_purpose(
    daphne: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    status, document = probe(capsys, daphne.url("/ws"), "--origin", ALLOWED[0])
    assert status == 0, by_verdict(document, "fail")
    assert document["advertised_versions"] == ["13", "8"]
    version_8 = next(c for c in document["cases"] if c["name"] == "version_8")
    assert (version_8["status"], version_8["verdict"]) == (101, "warn")
    assert "which it advertises (13, 8): RFC 6455 4.4" in version_8["why"]
    refused = {c["name"]: c["status"] for c in document["cases"] if c["group"] == "version"}
    assert refused == {
        "version_99": 400,
        "version_8": 101,
        "version_list": 400,
        "version_missing": 400,
    }
    assert {
        c["name"] for c in document["cases"] if c["group"] == "origin" and c["status"] == 101
    } == set()


@pytest.mark.parametrize(
    ("path", "status", "failed", "version_8"),
    [
        ("/v8", 0, {}, "which it advertises (13, 8)"),
        ("/v8-quiet", 0, {}, "though it advertises only 13"),
        ("/sloppy", 1, {"version_list": None}, "though it advertises only 13"),
        (
            "/any",
            1,
            {"version_99": None, "version_list": None, "version_missing": None},
            "advertising nothing",
        ),
    ],
)
def test_versions_accepted_are_judged_against_rfc_6455(
    versions: int,
    path: str,
    status: int,
    failed: dict[str, str | None],
    version_8: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    got, document = probe(capsys, f"ws://127.0.0.1:{versions}{path}")
    assert got == status
    assert by_verdict(document, "fail") == failed
    assert by_verdict(document, "warn")["version_8"] is None
    assert version_8 in why(document, "version_8")
    if "version_99" in failed:
        assert "no WebSocket protocol defines" in why(document, "version_99")
    if "version_list" in failed:
        assert "a client sends exactly one version (RFC 6455 4.3" in why(document, "version_list")


def test_dropped_connections_are_refusals(
    versions: int, capsys: pytest.CaptureFixture[str]
) -> None:
    status, document = probe(capsys, f"ws://127.0.0.1:{versions}/drop")
    assert status == 0
    dropped = next(c for c in document["cases"] if c["name"] == "key_short")
    assert dropped["status"] is None
    assert dropped["verdict"] == "pass"
    assert "closed without an answer, a refusal (RFC 6455 10.7)" in dropped["why"]


def test_careless_answers_are_named(versions: int, capsys: pytest.CaptureFixture[str]) -> None:
    status, document = probe(capsys, f"ws://127.0.0.1:{versions}/broken")
    assert status == 1
    # A 101 that selects what was never offered is a broken answer, like a wrong Accept.
    assert by_verdict(document, "fail") == {"subprotocol_unsupported": None}
    assert why(document, "subprotocol_unsupported") == (
        "selected subprotocol 'chat' was never offered"
    )
    assert why(document, "valid") == "101 without 'Upgrade: websocket'"
    assert why(document, "key_short") == "refused with 403 (bad key); 400 expected"
    assert why(document, "version_99") == ("refused with 426 (version), advertising 8 but not 13")
    assert document["advertised_versions"] == ["8"]


def test_a_server_without_version_13_cannot_be_judged(
    versions: int, capsys: pytest.CaptureFixture[str]
) -> None:
    status, document = probe(capsys, f"ws://127.0.0.1:{versions}/old")
    assert status == 2
    assert document["error"]["kind"] == "refused"
    assert "it speaks version 8, not 13" in document["error"]["message"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/", "with 200 OK, not 101 Switching Protocols: not a WebSocket endpoint"),
        ("/ws", "with 404 File not found, not 101"),
        ("/dir", "it redirects to '/dir/'"),
    ],
)
def test_plain_http_server_cannot_be_judged(
    tmp_path: Path, path: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "dir").mkdir()
    with plain_http_server(tmp_path) as port:
        url = f"ws://127.0.0.1:{port}{path}"
        status, document = probe(capsys, url)
        table_status = main(["probe", url])
        out, err = capsys.readouterr()
    assert (status, table_status) == (2, 2)
    assert document["result"] == "error"
    assert document["error"]["kind"] == "not_websocket"
    assert message in document["error"]["message"]
    assert [c["name"] for c in document["cases"]] == ["valid"]
    assert document["cases"][0]["verdict"] == "error"
    assert out.rstrip().endswith("0 fail: CANNOT JUDGE (not_websocket)")
    assert message in err
