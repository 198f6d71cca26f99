"""Key rings of the token vault (property tests): how keys are written, what seals and opens,
what is refused; never a key's text in a message."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aios_mesh.errors import ConfigError, IntegrityError
from aios_mesh.redaction.vault import KeyRing, VaultKeyError, generate_key, load_keys

keys = st.binary(min_size=32, max_size=32)
spellings = st.sampled_from(["hex", "HEX", "b64", "b64-nopad"])


def _write(key: bytes, how: str) -> str:
    if how == "hex":
        return key.hex()
    if how == "HEX":
        return key.hex().upper()
    text = base64.urlsafe_b64encode(key).decode()
    return text.rstrip("=") if how == "b64-nopad" else text


@given(st.lists(st.tuples(keys, spellings), min_size=1, max_size=5),
       st.sampled_from(["\n", ", ", "\n\n  ", " # old\n"]))
def test_any_spelling_and_separator_reads_the_same_ring(written: list[tuple[bytes, str]],
                                                        sep: str) -> None:
    text = "# vault keys, newest first\n" + sep.join(_write(k, how) for k, how in written)
    ring = KeyRing.parse(text, source="test")
    assert ring.ids == KeyRing([k for k, _ in written]).ids
    assert ring.ids[0] == KeyRing([written[0][0]]).ids[0]  # the first is the newest


@given(keys, keys, st.text(max_size=20), st.text(max_size=30), st.text(max_size=200))
def test_seal_opens_only_for_its_tenant_token_and_key(k1: bytes, k2: bytes, tenant: str,
                                                      token: str, value: str) -> None:
    ring = KeyRing([k1])
    blob = ring.seal(tenant, token, value)
    assert ring.open(tenant, token, blob) == value
    assert KeyRing([k2, k1]).open(tenant, token, blob) == value  # an older key still opens
    if value:
        assert value.encode() not in blob or len(value.encode()) < 4
    with pytest.raises(IntegrityError):
        ring.open(tenant + "x", token, blob)
    with pytest.raises(IntegrityError):
        ring.open(tenant, token + "x", blob)
    if k2 != k1:
        with pytest.raises(VaultKeyError):
            KeyRing([k2]).open(tenant, token, blob)


@given(st.text(max_size=80))
def test_anything_that_is_not_a_key_is_refused_without_echoing_it(text: str) -> None:
    error: VaultKeyError | None = None
    try:
        ring = KeyRing.parse(text, source="the test file")
    except VaultKeyError as exc:
        error = exc
    if error is None:
        assert ring.ids  # parsed: the text held real 32-byte keys
        return
    assert isinstance(error, ConfigError) and error.hint and error.code == "vault_key_error"
    words = [w for w in text.replace(",", " ").split() if len(w) > 3]
    assert not any(w in error.message for w in words if w not in "the test file")


def test_the_key_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_VAULT_KEYS", raising=False)
    assert load_keys(None, "MY_VAULT_KEYS") is None
    monkeypatch.setenv("MY_VAULT_KEYS", generate_key())
    assert load_keys(None, "MY_VAULT_KEYS") is not None
    path = tmp_path / "vault.keys"
    with pytest.raises(VaultKeyError, match="cannot be read"):
        load_keys(path, "MY_VAULT_KEYS")  # a named file wins, and must exist
    path.write_text("")
    with pytest.raises(VaultKeyError, match="holds no vault key"):
        load_keys(path, "MY_VAULT_KEYS")
    path.write_text(base64.urlsafe_b64encode(b"short").decode())
    with pytest.raises(VaultKeyError, match="5 bytes, not 32"):
        load_keys(path)
