"""Conformance suite for vault stores (:class:`aios_mesh.ports.vault.VaultStore`).

Mixins: :class:`VaultBasic` (batched put/get/delete, compare-and-set, every entry listed),
:class:`VaultTenancy` (tenant A never reads or changes tenant B's entries),
:class:`VaultSealing` (what is stored is ciphertext bound to its tenant and token; a missing
or wrong key decrypts nothing), :class:`VaultRotation` (re-sealing under the newest key).
Each test runs the store behind :class:`~aios_mesh.redaction.vault.TokenVault`, the way the
mesh uses it. The ``adapter`` fixture yields an *empty* store (rotation walks every entry).
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import pytest

from aios_mesh.errors import IntegrityError
from aios_mesh.ports.vault import VaultEntry, VaultStore
from aios_mesh.redaction.vault import KeyRing, TokenVault, VaultKeyError

__all__ = ["VaultBasic", "VaultRotation", "VaultSealing", "VaultTenancy"]

_VALUES = ("bob@example.com", "DE89 3704 0044 0532 0130 00", "+49 30 1234 5678",
           "4111 1111 1111 1111", "Zoë Ångström <zoe@example.org>", "")


def _ring() -> KeyRing:
    return KeyRing([secrets.token_bytes(32)], source="a test key")


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


async def _all(store: VaultStore, batch: int = 500) -> list[VaultEntry]:
    return [entry async for page in store.entries(batch=batch) for entry in page]


class VaultBasic:
    """Batched reads and writes, deletes, compare-and-set, the full listing."""

    async def test_values_come_back_in_one_batch(self, adapter: Any) -> None:
        vault, tenant = TokenVault(adapter, _ring()), _tenant()
        values = {f"<EMAIL_{i:016x}>": v for i, v in enumerate(_VALUES)}
        await vault.put(tenant, values)
        got = await vault.get(tenant, [*values, "<EMAIL_ffffffffffffffff>"])
        assert got == values  # the unknown token is left out, not an error
        assert await vault.get(tenant, []) == {}

    async def test_a_large_batch(self, adapter: Any) -> None:
        vault, tenant = TokenVault(adapter, _ring()), _tenant()
        values = {f"<PHONE_{i:016x}>": f"+49 30 {i:07d}" for i in range(1203)}
        await vault.put(tenant, values)
        assert await vault.get(tenant, list(values)) == values
        assert len(await _all(adapter, batch=100)) == 1203

    async def test_put_replaces_and_delete_forgets(self, adapter: Any) -> None:
        vault, tenant = TokenVault(adapter, _ring()), _tenant()
        await vault.put(tenant, {"<A_0000000000000001>": "old", "<A_0000000000000002>": "b"})
        await vault.put(tenant, {"<A_0000000000000001>": "new"})
        assert await vault.get(tenant, ["<A_0000000000000001>"]) == {
            "<A_0000000000000001>": "new"}
        assert await vault.delete(tenant, ["<A_0000000000000001>", "<A_000000000000000f>"]) == 1
        assert await vault.get(tenant, ["<A_0000000000000001>", "<A_0000000000000002>"]) == {
            "<A_0000000000000002>": "b"}
        assert await vault.delete(tenant, []) == 0

    async def test_replace_is_compare_and_set(self, adapter: Any) -> None:
        tenant, token = _tenant(), "<A_0000000000000001>"
        await adapter.put(tenant, {token: b"one"})
        assert await adapter.replace(tenant, {token: (b"other", b"two")}) == 0
        assert await adapter.get(tenant, [token]) == {token: b"one"}
        assert await adapter.replace(tenant, {token: (b"one", b"two"),
                                              "<A_0000000000000009>": (b"x", b"y")}) == 1
        assert await adapter.get(tenant, [token]) == {token: b"two"}
        assert await adapter.get(tenant, ["<A_0000000000000009>"]) == {}  # never created

    async def test_entries_list_every_tenant(self, adapter: Any) -> None:
        a, b = _tenant(), _tenant()
        await adapter.put(a, {"<A_0000000000000001>": b"1", "<A_0000000000000002>": b"2"})
        await adapter.put(b, {"<A_0000000000000001>": b"3"})
        got = {(e.tenant, e.token, e.blob) for e in await _all(adapter, batch=1)}
        assert got == {(a, "<A_0000000000000001>", b"1"), (a, "<A_0000000000000002>", b"2"),
                       (b, "<A_0000000000000001>", b"3")}


class VaultTenancy:
    """A tenant's reads, deletes and compare-and-sets never touch another tenant."""

    @pytest.mark.parametrize("other", ["acme:x", "ac{me}", "a*", "a b", "ümlaut", "a\\[b]"])
    async def test_tenants_never_see_each_other(self, adapter: Any, other: str) -> None:
        vault = TokenVault(adapter, _ring())
        token = "<EMAIL_0123456789abcdef>"
        await vault.put("acme", {token: "ann@acme.example"})
        await vault.put(other, {token: "bob@other.example"})
        assert await vault.get("acme", [token]) == {token: "ann@acme.example"}
        assert await vault.get(other, [token]) == {token: "bob@other.example"}
        assert await vault.get("nobody", [token]) == {}
        assert await vault.delete("nobody", [token]) == 0
        assert await adapter.replace("nobody", {token: (b"x", b"y")}) == 0
        assert await vault.delete(other, [token]) == 1
        assert await vault.get("acme", [token]) == {token: "ann@acme.example"}
        assert {e.tenant for e in await _all(adapter)} == {"acme"}


class VaultSealing:
    """Stored bytes are ciphertext, bound to tenant and token; the wrong key opens nothing."""

    async def test_nothing_is_stored_in_clear(self, adapter: Any) -> None:
        vault, tenant = TokenVault(adapter, _ring()), _tenant()
        values = {f"<X_{i:016x}>": v for i, v in enumerate(_VALUES) if v}
        await vault.put(tenant, values)
        entries = await _all(adapter)
        assert len(entries) == len(values)
        for entry in entries:
            plain = values[entry.token]
            assert plain.encode() not in entry.blob
            assert plain.encode("utf-16-le") not in entry.blob
            assert plain.encode().hex().encode() not in entry.blob

    async def test_an_entry_moved_to_another_tenant_does_not_decrypt(self,
                                                                     adapter: Any) -> None:
        vault, a, b = TokenVault(adapter, _ring()), _tenant(), _tenant()
        token = "<EMAIL_0123456789abcdef>"
        await vault.put(a, {token: "ann@acme.example"})
        blob = (await adapter.get(a, [token]))[token]
        await adapter.put(b, {token: blob})  # an attacker with write access copies the row
        with pytest.raises(IntegrityError, match="does not authenticate") as info:
            await vault.get(b, [token])
        assert "ann@acme.example" not in str(info.value)
        await adapter.put(a, {"<EMAIL_fedcba9876543210>": blob})  # or renames its token
        with pytest.raises(IntegrityError):
            await vault.get(a, ["<EMAIL_fedcba9876543210>"])

    async def test_a_tampered_entry_does_not_decrypt(self, adapter: Any) -> None:
        vault, tenant, token = TokenVault(adapter, _ring()), _tenant(), "<A_0000000000000001>"
        await vault.put(tenant, {token: "secret value"})
        blob = bytearray((await adapter.get(tenant, [token]))[token])
        blob[-1] ^= 1
        await adapter.put(tenant, {token: bytes(blob)})
        with pytest.raises(IntegrityError):
            await vault.get(tenant, [token])
        await adapter.put(tenant, {token: b"secret value"})  # written around the vault
        with pytest.raises(IntegrityError, match="not a sealed entry"):
            await vault.get(tenant, [token])

    async def test_the_wrong_key_decrypts_nothing(self, adapter: Any) -> None:
        tenant, token = _tenant(), "<A_0000000000000001>"
        await TokenVault(adapter, _ring()).put(tenant, {token: "ann@acme.example"})
        wrong = TokenVault(adapter, _ring())
        with pytest.raises(VaultKeyError, match="lacks") as info:
            await wrong.get(tenant, [token])
        assert "ann@acme.example" not in str(info.value)
        assert info.value.hint


class VaultRotation:
    """A new key seals new entries; ``rotate`` re-seals the old ones; old keys can go."""

    async def test_rotate_reseals_under_the_newest_key(self, adapter: Any) -> None:
        k1, k2 = secrets.token_bytes(32), secrets.token_bytes(32)
        tenant = _tenant()
        old = {f"<A_{i:016x}>": f"value {i}" for i in range(7)}
        await TokenVault(adapter, KeyRing([k1])).put(tenant, old)
        both = TokenVault(adapter, KeyRing([k2, k1]))
        await both.put(tenant, {"<B_0000000000000001>": "new"})
        assert await both.get(tenant, list(old)) == old  # the old key still opens
        report = await both.rotate(batch=3)
        assert (report.resealed, report.current, report.skipped) == (7, 1, 0)
        assert (await both.rotate()).resealed == 0
        only_new = TokenVault(adapter, KeyRing([k2]))
        assert await only_new.get(tenant, [*old, "<B_0000000000000001>"]) == {
            **old, "<B_0000000000000001>": "new"}
        with pytest.raises(VaultKeyError):
            await TokenVault(adapter, KeyRing([k1])).get(tenant, list(old)[:1])

    async def test_rotate_without_the_old_key_writes_nothing(self, adapter: Any) -> None:
        tenant = _tenant()
        await TokenVault(adapter, _ring()).put(tenant, {"<A_0000000000000001>": "v"})
        before = await _all(adapter)
        with pytest.raises(VaultKeyError):
            await TokenVault(adapter, _ring()).rotate()
        assert await _all(adapter) == before
