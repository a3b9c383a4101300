"""`app.auth`: KeyRing (static keys, the key file, revocation, constant-time lookup) and key_from_headers."""

from __future__ import annotations

import hmac
import json
import os
import stat
from pathlib import Path

import pytest

from app import auth
from app.auth import KEY_PREFIX, MAX_KEY_LENGTH, KeyRing, Principal, key_from_headers
from app.errors import AuthenticationFailed


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "data" / "keys.json"


def test_static_keys_resolve_to_their_org(key_file: Path) -> None:
    ring = KeyRing(key_file, {"k-one": "org1", "k-two": "org2"})
    assert ring.resolve("k-one") == Principal(org_id="org1", key_id="env:0")
    assert ring.resolve("k-two") == Principal(org_id="org2", key_id="env:1")
    assert not ring.empty and not key_file.exists()


@pytest.mark.parametrize("key", ["k-one ", "K-ONE", "k-on", "k-one\x00", "mc_unknown"])
def test_near_misses_are_invalid(key_file: Path, key: str) -> None:
    with pytest.raises(AuthenticationFailed, match="Invalid API key"):
        KeyRing(key_file, {"k-one": "org1"}).resolve(key)


@pytest.mark.parametrize("key", [None, ""])
def test_a_missing_key_says_how_to_send_one(key_file: Path, key: str | None) -> None:
    with pytest.raises(AuthenticationFailed, match="Missing API key") as info:
        KeyRing(key_file, {"k": "org1"}).resolve(key)
    assert info.value.status_code == 401


def test_an_overlong_key_is_refused_before_hashing(key_file: Path) -> None:
    long_key = "x" * (MAX_KEY_LENGTH + 1)
    ring = KeyRing(key_file, {long_key: "org1", "x" * MAX_KEY_LENGTH: "org2"})
    with pytest.raises(AuthenticationFailed, match="Invalid API key"):
        ring.resolve(long_key)
    assert ring.resolve("x" * MAX_KEY_LENGTH).org_id == "org2"


def test_an_empty_ring(key_file: Path) -> None:
    ring = KeyRing(key_file, {})
    assert ring.empty and ring.list() == []
    with pytest.raises(AuthenticationFailed):
        ring.resolve("anything")


def test_created_keys_are_stored_as_digests_only(key_file: Path) -> None:
    ring = KeyRing(key_file, {})
    key, record = ring.create("acme")
    assert key.startswith(KEY_PREFIX) and len(key) > 40
    assert ring.resolve(key) == Principal(org_id="acme", key_id=record.key_id)
    text = key_file.read_text()
    assert key not in text and key[len(KEY_PREFIX):] not in text
    stored = json.loads(text)["keys"]
    assert [(k["key_id"], k["org_id"], k["revoked"]) for k in stored] == [(record.key_id, "acme", False)]
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert [k.key_id for k in ring.list()] == [record.key_id] and not ring.empty
    assert not list(key_file.parent.glob(".keys.*"))   # no temp file left behind


def test_keys_created_elsewhere_are_picked_up(key_file: Path) -> None:
    server = KeyRing(key_file, {"static": "org0"})
    cli = KeyRing(key_file, {})
    key, record = cli.create("org1")
    assert server.resolve(key).key_id == record.key_id
    second, _ = cli.create("org2")
    assert server.resolve(second).org_id == "org2" and server.resolve(key).org_id == "org1"
    assert server.resolve("static").org_id == "org0"
    assert {k.org_id for k in server.list()} == {"org1", "org2"}


def test_revocation_applies_at_once_in_every_ring(key_file: Path) -> None:
    server, cli = KeyRing(key_file, {}), KeyRing(key_file, {})
    keep, kept = cli.create("org1")
    drop, dropped = cli.create("org1")
    assert server.resolve(drop).key_id == dropped.key_id
    assert cli.revoke(dropped.key_id) is True
    for ring in (server, cli):
        with pytest.raises(AuthenticationFailed):
            ring.resolve(drop)
        assert ring.resolve(keep).key_id == kept.key_id
    assert cli.revoke(dropped.key_id) is False        # already revoked
    assert cli.revoke("no-such-id") is False
    assert [(k.key_id, k.revoked) for k in server.list()] == [(kept.key_id, False), (dropped.key_id, True)]


def test_revoking_the_last_key_empties_the_ring(key_file: Path) -> None:
    ring = KeyRing(key_file, {})
    _, record = ring.create("org1")
    ring.revoke(record.key_id)
    assert ring.empty


def test_a_revocation_in_the_same_timestamp_tick_is_still_seen(key_file: Path) -> None:
    server, cli = KeyRing(key_file, {}), KeyRing(key_file, {})
    key, record = cli.create("org1")
    assert server.resolve(key).org_id == "org1"
    before = key_file.stat()
    cli.revoke(record.key_id)
    os.utime(key_file, ns=(before.st_atime_ns, before.st_mtime_ns))   # the same tick as the create
    with pytest.raises(AuthenticationFailed):
        server.resolve(key)


@pytest.mark.parametrize("org", ["", "x" * 201, "a\nb", "tab\there", "nul\x00"])
def test_create_refuses_bad_organisation_names(key_file: Path, org: str) -> None:
    with pytest.raises(ValueError, match="organisation name"):
        KeyRing(key_file, {}).create(org)
    assert not key_file.exists()


def test_every_candidate_is_compared_even_after_a_match(key_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ring = KeyRing(key_file, {"first": "org1", "second": "org2"})
    ring.create("org3")
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    assert ring.resolve("first").org_id == "org1"   # matches the very first candidate ...
    assert len(calls) == 3                          # ... yet all three were compared
    calls.clear()
    with pytest.raises(AuthenticationFailed):
        ring.resolve("nobody")
    assert len(calls) == 3 and all(isinstance(a, bytes) and len(a) == 32 for a, _ in calls)


@pytest.mark.parametrize(("headers", "cookies", "key"), [
    ({"authorization": "Bearer mc_abc"}, {}, "mc_abc"),
    ({"authorization": "bearer   mc_abc  "}, {}, "mc_abc"),
    ({"authorization": "BEARER mc_abc"}, {}, "mc_abc"),
    ({"authorization": "Bearer "}, {}, None),
    ({"authorization": "mc_raw"}, {}, "mc_raw"),
    ({"authorization": "  mc_raw  "}, {}, "mc_raw"),
    ({"x-api-key": " mc_x "}, {}, "mc_x"),
    ({"x-api-key": "   "}, {}, None),
    ({}, {"vai_token": " mc_cookie "}, "mc_cookie"),
    ({}, {"vai_token": ""}, None),
    ({}, {"other": "mc_cookie"}, None),
    ({}, {}, None),
    ({"authorization": "Bearer a", "x-api-key": "b"}, {"vai_token": "c"}, "a"),   # Authorization wins
    ({"x-api-key": "b"}, {"vai_token": "c"}, "b"),                               # then X-API-Key
    ({"authorization": "", "x-api-key": "b"}, {}, "b"),                          # an empty header is absent
])
def test_key_from_headers(headers: dict[str, str], cookies: dict[str, str], key: str | None) -> None:
    assert key_from_headers(headers, cookies) == key


def test_headers_and_ring_together(key_file: Path) -> None:
    ring = KeyRing(key_file, {"k-1": "org1"})
    for headers, cookies in (({"authorization": "Bearer k-1"}, {}), ({"x-api-key": "k-1"}, {}),
                             ({}, {"vai_token": "k-1"}), ({"authorization": "k-1"}, {})):
        assert ring.resolve(key_from_headers(headers, cookies)).org_id == "org1"
