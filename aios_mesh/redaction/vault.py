"""The token vault: reversible tokens → original values, sealed at rest, scoped by tenant.

:class:`TokenVault` seals each value with AES-GCM (:mod:`cryptography`) under the newest key
of a :class:`KeyRing` before a :class:`~aios_mesh.ports.vault.VaultStore` sees it, with the
tenant and the token as associated data: an entry copied to another tenant, or under
another token, does not decrypt (an :class:`~aios_mesh.errors.IntegrityError`, never the
value). An entry names the key that sealed it by a key id (a hash of the key, not the key),
so the ring opens entries of older keys and :meth:`TokenVault.rotate` re-seals them under
the newest one.

Keys come from a key file or an environment variable, never from the config text: one key
per line (or separated by commas), 32 random bytes written as 64 hex digits or URL-safe
base64, the **first is the newest** (it seals new entries), ``#`` starts a comment.
``aios-mesh vault keygen`` prints a fresh key. A missing or unreadable key, or an entry
sealed by a key the ring lacks, is a :class:`VaultKeyError`: nothing is decrypted and
nothing is written.

Where entries live (``[redaction] vault``, opened by :func:`aios_mesh.vault_setup.open_vault`):
``memory`` (default; this process only), ``state`` (the mesh's shared state: the state
folder's sqlite, or the PostgreSQL database of ``[backends] state``), a ``postgresql://`` or
``sqlite://`` URL of a state of its own, or ``redis://`` / ``rediss://``
(``aios_mesh_redis.vault.RedisVaultStore``). See docs/governance/vault.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from aios_mesh.errors import ConfigError, IntegrityError

if TYPE_CHECKING:
    from aios_mesh.ports.vault import VaultStore

__all__ = ["DEFAULT_KEY_ENV", "KEYGEN_HINT", "STATE_SCHEMES", "VAULT_STORES", "KeyRing",
           "Rotation", "TokenVault", "VaultKeyError", "check_vault_url", "generate_key",
           "load_keys"]

#: The environment variable a key ring is read from when no key file is configured.
DEFAULT_KEY_ENV: Final = "AIOS_MESH_VAULT_KEYS"
#: Vault stores by URL scheme that live in an adapter package ("module:Class" with
#: ``from_url``; imported on first use so the core never imports an adapter package).
VAULT_STORES: Final[Mapping[str, tuple[str, str]]] = {
    "redis": ("aios_mesh_redis.vault:RedisVaultStore", "redis"),
    "rediss": ("aios_mesh_redis.vault:RedisVaultStore", "redis"),
}
#: Vault URL schemes that name a shared state of the vault's own (sqlite, PostgreSQL).
STATE_SCHEMES: Final = frozenset({"sqlite", "postgresql", "postgres"})
_VERSION: Final = b"\x01"
_ID_LEN: Final = 8
_NONCE_LEN: Final = 12
_SPLIT: Final = re.compile(r"[\s,]+")
#: How to make and configure a key (the hint of a missing key).
KEYGEN_HINT: Final = ("create a key with `aios-mesh vault keygen > vault.keys` (chmod 600) and "
                       "set [redaction] vault_key_file = \"vault.keys\", or put it in "
                       f"${DEFAULT_KEY_ENV}")


class VaultKeyError(ConfigError):
    """The vault's key is missing, unreadable, or not the one an entry was sealed with."""

    code = "vault_key_error"


def generate_key() -> str:
    """A fresh vault key (32 random bytes, URL-safe base64) for a key file."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def _derive(master: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"aios-mesh/vault/" + purpose).derive(master)


@dataclass(frozen=True, slots=True)
class _Key:
    id: bytes
    aead: AESGCM
    mac: bytes


class KeyRing:
    """The vault's keys, newest first: the newest seals, any opens what it sealed.

    Each key is expanded with HKDF into a sealing key and a token key (the HMAC that mints
    tokens), so replicas with the same ring mint the same token for the same value.
    """

    def __init__(self, keys: Sequence[bytes], *, source: str = "the key ring",
                 ephemeral: bool = False) -> None:
        if not keys:
            raise VaultKeyError(f"{source} holds no vault key", hint=KEYGEN_HINT)
        ring: dict[bytes, _Key] = {}
        for n, master in enumerate(keys, 1):
            if len(master) != 32:
                raise VaultKeyError(f"vault key #{n} of {source} is {len(master)} bytes, "
                                    "not 32", hint=KEYGEN_HINT)
            kid = hashlib.sha256(b"aios-mesh/vault/id\0" + master).digest()[:_ID_LEN]
            ring.setdefault(kid, _Key(kid, AESGCM(_derive(master, b"seal")),
                                      _derive(master, b"token")))
        self._keys = ring
        self._newest = next(iter(ring.values()))
        self.source = source
        #: made up for this process (no key was configured)
        self.ephemeral = ephemeral

    @classmethod
    def parse(cls, text: str, *, source: str) -> KeyRing:
        """Keys from text: one per line or comma-separated, hex or URL-safe base64, ``#``
        comments. Messages name a key by its place, never by its text."""
        words = [w for line in text.splitlines()
                 for w in _SPLIT.split(line.split("#", 1)[0]) if w]
        keys: list[bytes] = []
        for n, word in enumerate(words, 1):
            try:
                keys.append(bytes.fromhex(word) if len(word) == 64 else
                            base64.urlsafe_b64decode(word + "=" * (-len(word) % 4)))
            except (ValueError, binascii.Error):
                raise VaultKeyError(f"vault key #{n} of {source} is neither hex nor base64",
                                    hint=KEYGEN_HINT) from None
        return cls(keys, source=source)

    @classmethod
    def from_file(cls, path: Path) -> KeyRing:
        """The ring in a key file (a :class:`VaultKeyError` when it cannot be read)."""
        try:
            text = path.read_text()
        except OSError as exc:
            raise VaultKeyError(f"the vault key file {path} cannot be read "
                                f"({type(exc).__name__})", hint=KEYGEN_HINT) from None
        return cls.parse(text, source=f"the vault key file {path}")

    @classmethod
    def random(cls) -> KeyRing:
        """A random ring that lives as long as this process (for the in-memory vault)."""
        return cls([secrets.token_bytes(32)], source="the process's ephemeral key",
                   ephemeral=True)

    @property
    def ids(self) -> list[str]:
        """The key ids (hex), newest first: what an entry names, never the key."""
        return [kid.hex() for kid in self._keys]

    @property
    def token_key(self) -> bytes:
        """The HMAC key that mints tokens (derived from the newest key)."""
        return self._newest.mac

    def seal(self, tenant: str, token: str, value: str) -> bytes:
        """``value`` sealed under the newest key, bound to ``tenant`` and ``token``."""
        nonce = secrets.token_bytes(_NONCE_LEN)
        key = self._newest
        return (_VERSION + key.id + nonce
                + key.aead.encrypt(nonce, value.encode(), _aad(tenant, token)))

    def open(self, tenant: str, token: str, blob: bytes) -> str:
        """The value sealed in ``blob`` for ``tenant`` and ``token``."""
        if len(blob) < 1 + _ID_LEN + _NONCE_LEN + 16 or blob[:1] != _VERSION:
            raise IntegrityError(f"the vault entry {token} of tenant {tenant!r} is not a "
                                 "sealed entry", hint="it was written by something else than "
                                 "aios-mesh; delete it")
        kid = blob[1:1 + _ID_LEN]
        key = self._keys.get(kid)
        if key is None:
            raise VaultKeyError(
                f"the vault entry {token} of tenant {tenant!r} was sealed with key "
                f"{kid.hex()}, which {self.source} lacks (it has {', '.join(self.ids)})",
                hint="add the key that sealed it to the key ring (older keys stay, after the "
                     "newest) and restart; never run replicas with different rings")
        nonce = blob[1 + _ID_LEN:1 + _ID_LEN + _NONCE_LEN]
        try:
            plain = key.aead.decrypt(nonce, blob[1 + _ID_LEN + _NONCE_LEN:],
                                     _aad(tenant, token))
        except InvalidTag:
            raise IntegrityError(
                f"the vault entry {token} of tenant {tenant!r} does not authenticate: it was "
                "altered, or copied from another tenant or token",
                hint="restore the vault from a backup, or delete the entry") from None
        return plain.decode()

    def is_newest(self, blob: bytes) -> bool:
        """Whether ``blob`` was sealed by the newest key."""
        return blob[1:1 + _ID_LEN] == self._newest.id


def _aad(tenant: str, token: str) -> bytes:
    t = tenant.encode()
    return b"aios-mesh/vault/1\0" + len(t).to_bytes(4, "big") + t + token.encode()


@dataclass(frozen=True, slots=True)
class Rotation:
    """What :meth:`TokenVault.rotate` did: ``resealed`` entries moved to the newest key,
    ``current`` ones already under it, ``skipped`` ones changed or deleted meanwhile."""

    resealed: int = 0
    current: int = 0
    skipped: int = 0


class TokenVault:
    """Tokens → values for the redactor, sealed before they reach ``store``."""

    def __init__(self, store: VaultStore, keys: KeyRing) -> None:
        self.store = store
        self.keys = keys

    async def put(self, tenant: str, values: Mapping[str, str]) -> None:
        """Keep ``{token: value}`` for ``tenant`` (sealed)."""
        if values:
            await self.store.put(tenant, {token: self.keys.seal(tenant, token, value)
                                          for token, value in values.items()})

    async def get(self, tenant: str, tokens: Collection[str]) -> dict[str, str]:
        """The values of those of ``tokens`` that ``tenant`` has (unknown ones left out)."""
        if not tokens:
            return {}
        blobs = await self.store.get(tenant, tokens)
        return {token: self.keys.open(tenant, token, blob) for token, blob in blobs.items()}

    async def delete(self, tenant: str, tokens: Collection[str]) -> int:
        """Forget ``tokens`` of ``tenant`` (their tokens no longer map back)."""
        return await self.store.delete(tenant, tokens)

    async def rotate(self, *, batch: int = 500) -> Rotation:
        """Re-seal every entry not under the newest key. Safe while meshes write: each entry
        is replaced only if it still holds what was read. An entry of a key the ring lacks
        raises :class:`VaultKeyError` before anything of its batch is written."""
        resealed = current = skipped = 0
        async for page in self.store.entries(batch=batch):
            changes: dict[str, dict[str, tuple[bytes, bytes]]] = {}
            for entry in page:
                if self.keys.is_newest(entry.blob):
                    current += 1
                    continue
                value = self.keys.open(entry.tenant, entry.token, entry.blob)
                changes.setdefault(entry.tenant, {})[entry.token] = (
                    entry.blob, self.keys.seal(entry.tenant, entry.token, value))
            for tenant, pairs in changes.items():
                written = await self.store.replace(tenant, pairs)
                resealed += written
                skipped += len(pairs) - written
        return Rotation(resealed, current, skipped)

    async def aclose(self) -> None:
        await self.store.aclose()


def check_vault_url(url: str) -> str:
    """``url`` if it names a vault store (``memory``, ``state``, or a URL whose scheme is a
    shared state or a vault adapter), else a :class:`ConfigError` (nothing is imported)."""
    if url in ("memory", "state"):
        return url
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in STATE_SCHEMES and scheme not in VAULT_STORES:
        known = ["memory", "state", *sorted(STATE_SCHEMES | set(VAULT_STORES))]
        raise ConfigError(f"[redaction] vault: no vault store for {scheme or url!r}",
                          hint="write one of: memory, state, postgresql://..., "
                               f"redis://... (known: {', '.join(known)})")
    return url


def load_keys(key_file: Path | None, key_env: str = DEFAULT_KEY_ENV) -> KeyRing | None:
    """The configured key ring: the key file when one is named (it must exist), else the
    environment variable ``key_env`` when it is set, else ``None``."""
    if key_file is not None:
        return KeyRing.from_file(key_file)
    text = os.environ.get(key_env)
    if text is None:
        return None
    return KeyRing.parse(text, source=f"${key_env}")
