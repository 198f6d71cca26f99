"""The API key format (property-based) and the API key authenticator over an in-memory
store on the embedded sqlite state, with the in-process quota store counting a key's limits."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from aios_mesh.embedded.quota import InProcessQuota
from aios_mesh.errors import ConfigError, QuotaExceeded
from aios_mesh.gateway import Forbidden, Unauthenticated
from aios_mesh.gateway.auth import (
    ApiKeyAuthenticator,
    GatewayAuthenticator,
    KeyStore,
    credential_of,
    new_key,
    parse_key,
)
from aios_mesh.gateway.auth.keys import digest, key_id_of, same_digest
from aios_mesh.ports.quota import QuotaLimits
from aios_mesh.state import SqliteState

_B64URL = string.ascii_letters + string.digits + "-_"


def request(**headers: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/",
                    "headers": [(k.replace("_", "-").lower().encode(), v.encode())
                                for k, v in headers.items()]})


# -- the key format ----------------------------------------------------------------------

@given(st.data())
def test_new_keys_parse_back_to_themselves(data: st.DataObject) -> None:
    key = new_key()
    parsed = parse_key(key.key)
    assert parsed == key
    assert key.key.startswith("amk_") and len(key.key) == 4 + 12 + 1 + 43
    assert key_id_of(key.key) == key_id_of(f"amk_{key.id}") == key_id_of(key.id) == key.id
    assert key.key.split("_", 2)[2] not in repr(key)


@given(st.text(max_size=80))
def test_anything_else_is_not_a_key(text: str) -> None:
    parsed = parse_key(text)
    if parsed is not None:  # only the exact shape parses
        assert text.startswith("amk_") and len(text) == 60
        assert all(c in "0123456789abcdef" for c in text[4:16]) and text[16] == "_"
        assert all(c in _B64URL for c in text[17:])


@given(st.from_regex(r"amk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", fullmatch=True),
       st.sampled_from(["", " ", "\n", "x", "=", "_"]), st.booleans())
def test_a_key_with_anything_added_does_not_parse(key: str, extra: str, front: bool) -> None:
    assert parse_key(key) is not None
    if extra:
        assert parse_key(extra + key if front else key + extra) is None
    assert parse_key(key[:-1]) is None and parse_key(key.upper()) is None


@given(st.from_regex(r"amk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", fullmatch=True))
def test_the_digest_is_compared_whole(key: str) -> None:
    stored = digest(key)
    assert same_digest(key, stored)
    assert not same_digest(key[:-1] + ("A" if key[-1] != "A" else "B"), stored)


def test_keys_are_random() -> None:
    keys = {new_key().key for _ in range(200)}
    assert len(keys) == 200


# -- where the credential is -------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {}, {"authorization": "Basic dXNlcjpwdw=="}, {"authorization": "Bearer "},
    {"authorization": "Bearer x", "x_api_key": "y"}, {"x_api_key": ""},
])
def test_no_or_two_or_malformed_credentials_are_401(headers: dict[str, str]) -> None:
    with pytest.raises(Unauthenticated) as info:
        credential_of(request(**headers))
    assert info.value.hint


def test_the_credential_is_read_from_either_header() -> None:
    assert credential_of(request(authorization="bearer  abc ")) == "abc"
    assert credential_of(request(x_api_key="abc")) == "abc"


# -- the authenticator -------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Any:
    keys = KeyStore(SqliteState(tmp_path), clock=clock)
    yield keys
    keys.close()


async def test_a_key_proves_its_principal(store: KeyStore, clock: Clock) -> None:
    record, key = store.create("acme", "billing", scopes=["extract"], roles=["reviewer"])
    auth = GatewayAuthenticator(ApiKeyAuthenticator(store, cache_s=0, clock=clock), None)
    for headers in ({"x_api_key": key}, {"authorization": f"Bearer {key}"}):
        principal = await auth.authenticate(request(**headers))
        assert principal.tenant == "acme" and principal.caller == "billing"
        assert principal.credential == record.name and key not in repr(principal)
        principal.require_call("extract")
        principal.require_role("reviewer")
        with pytest.raises(Forbidden):
            principal.require_call("other")
        with pytest.raises(Forbidden):
            principal.require_role("admin")


async def test_unknown_wrong_revoked_expired_keys_are_401(store: KeyStore, clock: Clock
                                                          ) -> None:
    auth = ApiKeyAuthenticator(store, cache_s=0, clock=clock)
    record, key = store.create("acme", "a", expires_at=clock.now + 10)
    other = new_key().key
    wrong = f"amk_{record.id}_{other.split('_', 2)[2]}"  # right id, wrong secret
    messages = set()
    for bad in (other, wrong):
        with pytest.raises(Unauthenticated) as info:
            await auth.verify(bad)
        messages.add(info.value.message)
    assert messages == {"unknown API key"}  # an id that exists is not told apart
    with pytest.raises(Unauthenticated, match="not an API key"):
        await auth.verify("amk_nope")
    assert (await auth.verify(key)).tenant == "acme"
    clock.now += 10
    with pytest.raises(Unauthenticated, match="expired"):
        await auth.verify(key)
    _, key2 = store.create("acme", "b")
    store.revoke(key2)
    with pytest.raises(Unauthenticated, match="revoked") as info:
        await auth.verify(key2)
    assert key2 not in str(info.value)


async def test_the_cache_holds_for_cache_s_then_sees_the_revocation(store: KeyStore,
                                                                   clock: Clock) -> None:
    auth = ApiKeyAuthenticator(store, cache_s=5, clock=clock)
    record, key = store.create("acme", "a")
    await auth.verify(key)
    store.revoke(record.id)  # elsewhere: another replica, the CLI
    await auth.verify(key)  # still cached
    clock.now += 5
    with pytest.raises(Unauthenticated, match="revoked"):
        await auth.verify(key)
    # a wrong secret never rides on a cached row
    _, key3 = store.create("acme", "c")
    await auth.verify(key3)
    with pytest.raises(Unauthenticated):
        await auth.verify(key3[:-1] + ("A" if key3[-1] != "A" else "B"))


async def test_a_keys_limits_are_its_own_quota_subject(store: KeyStore, clock: Clock) -> None:
    quota = InProcessQuota()
    auth = ApiKeyAuthenticator(store, quota=lambda: quota, cache_s=0, clock=clock)
    limited, key = store.create("acme", "a", limits=QuotaLimits(calls_per_minute=2))
    _, free = store.create("acme", "b")
    for _ in range(2):
        await auth.verify(key)
    with pytest.raises(QuotaExceeded) as info:
        await auth.verify(key)
    err = info.value
    assert f"amk_{limited.id}" in err.message and "calls_per_minute" in err.message
    assert err.retry_after_s is not None and 0 < err.retry_after_s <= 60
    assert err.window == "minute" and key not in str(err)
    for _ in range(5):  # a key without limits, and the tenant itself, are not limited
        await auth.verify(free)
    used, _ = await quota.used("acme")
    assert used.calls == 0


def test_an_authenticator_that_accepts_nothing_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no credential"):
        GatewayAuthenticator(None, None)


async def test_switched_off_kinds_are_401(store: KeyStore) -> None:
    _, key = store.create("acme", "a")
    with pytest.raises(Unauthenticated, match="accepts no JWTs"):
        await GatewayAuthenticator(ApiKeyAuthenticator(store), None).authenticate(
            request(authorization="Bearer eyJ.x.y"))
    with pytest.raises(Unauthenticated, match="does not accept API keys"):
        await GatewayAuthenticator(None, object()).authenticate(  # type: ignore[arg-type]
            request(x_api_key=key))
