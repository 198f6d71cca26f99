"""Reversible tokenisation: PII is replaced by tokens before an external backend sees it, and
the tokens in the answer are mapped back — for the same tenant only.

A token is ``<EMAIL_3f9a2c71d0e4b85a>``: the kind plus an HMAC of (tenant, value) under the
token key, so the same value gets the same token within a tenant (a model sees consistent
references) and different tokens across tenants. :meth:`TokenizingRedactor.tokenize` keeps
each token's value in a :class:`~aios_mesh.redaction.vault.TokenVault` (sealed, by tenant:
in memory by default, or in Redis/PostgreSQL shared by replicas and kept across restarts);
:meth:`TokenizingRedactor.restore` maps this tenant's tokens back and leaves any other text
alone, so a token minted for one tenant is never restored in another tenant's answer.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from aios_mesh.redaction.redactor import Redaction, RuleRedactor, walk_strings
from aios_mesh.redaction.rules import Rule
from aios_mesh.redaction.vault import KeyRing, TokenVault

__all__ = ["Reversible", "TokenVault", "TokenizingRedactor", "load_or_create_key"]

# kind (upper case, may hold '_') + 16 hex digits: 64 bits, so values of one tenant do not
# collide even after millions of them accumulate in a durable vault.
_TOKEN = re.compile(r"<([A-Z][A-Z_]*)_([0-9a-f]{16})>")


def load_or_create_key(path: Path) -> bytes:
    """The mesh's tokenisation secret, created once (mode 0600) next to its state."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        path.touch(mode=0o600)
        path.write_text(key.hex())
        return key


@runtime_checkable
class Reversible(Protocol):
    """A redactor whose replacements map back: ``tokenize`` keeps what it replaced,
    ``restore`` puts it back into an answer (the redact step awaits both)."""

    async def tokenize(self, payload: Mapping[str, Any], *, tenant: str,
                       kinds: Iterable[str] | None = None) -> Redaction: ...

    async def restore(self, value: Any, *, tenant: str) -> Any: ...


class TokenizingRedactor(RuleRedactor):
    """:class:`RuleRedactor` that writes reversible tokens instead of ``[EMAIL]`` masks.

    Args:
        key: the HMAC key that mints tokens; default: the vault key ring's token key.
        rules: the detectors.
        vault: where tokens map back; default: in memory, with an ephemeral key.
    """

    def __init__(self, key: bytes | None = None, rules: Iterable[Rule] | None = None,
                 vault: TokenVault | None = None) -> None:
        super().__init__(rules)
        if vault is None:
            from aios_mesh.embedded.vault import MemoryVaultStore

            vault = TokenVault(MemoryVaultStore(), KeyRing.random())
        self.vault = vault
        self._key = key if key is not None else vault.keys.token_key

    def token(self, tenant: str, kind: str, value: str) -> str:
        mac = hmac.new(self._key, f"{tenant}\0{value}".encode(), hashlib.sha256).hexdigest()
        return f"<{kind.upper()}_{mac[:16]}>"

    def redact(self, payload: Mapping[str, Any], *, tenant: str,
               kinds: Iterable[str] | None = None) -> Redaction:
        """Tokens in place of PII, *not* kept in the vault (they do not map back); the
        redact step calls :meth:`tokenize`."""
        return self._mint(payload, tenant, kinds)[0]

    async def tokenize(self, payload: Mapping[str, Any], *, tenant: str,
                       kinds: Iterable[str] | None = None) -> Redaction:
        """Tokens in place of PII, each kept in the vault for ``tenant`` before this
        returns (so a restore on any replica sharing the vault finds it)."""
        redaction, minted = self._mint(payload, tenant, kinds)
        await self.vault.put(tenant, minted)
        return redaction

    def _mint(self, payload: Mapping[str, Any], tenant: str,
              kinds: Iterable[str] | None) -> tuple[Redaction, dict[str, str]]:
        wanted = set(kinds) if kinds is not None else None
        rules = [r for r in self.rules if wanted is None or r.kind in wanted]
        counts: Counter[str] = Counter()
        minted: dict[str, str] = {}

        def mint(rule: Rule, found: str) -> str:
            token = self.token(tenant, rule.kind, found)
            minted[token] = found
            return token

        # The same matching as masking (keys included, validators, secrets); only what a
        # found value becomes differs.
        redacted = walk_strings(payload, lambda s: self.redact_text(s, rules, counts, mint))
        return Redaction(redacted, dict(counts)), minted

    async def restore(self, value: Any, *, tenant: str) -> Any:
        """Map this tenant's tokens in ``value`` back to the original text (one vault read
        for all of them); tokens the tenant does not have stay as they are."""
        found: set[str] = set()

        def collect(text: str) -> str:
            if "<" in text:
                found.update(m.group(0) for m in _TOKEN.finditer(text))
            return text

        walk_strings(value, collect)
        if not found:
            return value
        values = await self.vault.get(tenant, found)

        def back(text: str) -> str:
            if "<" not in text:
                return text
            return _TOKEN.sub(lambda m: values.get(m.group(0), m.group(0)), text)

        return walk_strings(value, back)

    async def aclose(self) -> None:
        """Release the vault's connections."""
        await self.vault.aclose()
