"""Reversible tokenisation: PII is replaced by tokens before an external backend sees it, and
the tokens in the answer are mapped back — for the same tenant only.

A token is ``<EMAIL_3f9a2c71d0>``: the kind plus an HMAC of (tenant, value) under a per-mesh
secret, so the same value gets the same token within a tenant (a model sees consistent
references) and different tokens across tenants. The vault that maps tokens back is kept in
memory (bounded LRU) and is keyed by tenant: a token minted for one tenant is never restored
in another tenant's answer.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from aios_mesh.redaction.redactor import Redaction, RuleRedactor
from aios_mesh.redaction.rules import DEFAULT_RULES, Rule

__all__ = ["TokenVault", "TokenizingRedactor", "load_or_create_key"]

_TOKEN = re.compile(r"<([A-Z]+)_([0-9a-f]{10})>")


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


class TokenVault:
    """(tenant, token) → original value, bounded LRU, thread-safe."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, tenant: str, token: str, value: str) -> None:
        with self._lock:
            self._data[(tenant, token)] = value
            self._data.move_to_end((tenant, token))
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def get(self, tenant: str, token: str) -> str | None:
        with self._lock:
            return self._data.get((tenant, token))


class TokenizingRedactor(RuleRedactor):
    """:class:`RuleRedactor` that writes reversible tokens instead of ``[EMAIL]`` masks."""

    def __init__(self, key: bytes, rules: Iterable[Rule] = DEFAULT_RULES,
                 vault: TokenVault | None = None) -> None:
        super().__init__(rules)
        self._key = key
        self.vault = vault or TokenVault()

    def token(self, tenant: str, kind: str, value: str) -> str:
        mac = hmac.new(self._key, f"{tenant}\0{value}".encode(), hashlib.sha256).hexdigest()
        return f"<{kind.upper()}_{mac[:10]}>"

    def redact(self, payload: Mapping[str, Any], *, tenant: str,
               kinds: Iterable[str] | None = None) -> Redaction:
        wanted = set(kinds) if kinds is not None else None
        rules = [r for r in self.rules if wanted is None or r.kind in wanted]
        counts: Counter[str] = Counter()

        def replace(text: str) -> str:
            for rule in rules:
                def sub(m: Any, rule: Rule = rule) -> str:
                    found: str = m.group(0)
                    if rule.validate is not None and not rule.validate(found):
                        return found
                    counts[rule.kind] += 1
                    token = self.token(tenant, rule.kind, found)
                    self.vault.put(tenant, token, found)
                    return token

                text = rule.pattern.sub(sub, text)
            return text

        return Redaction(_walk(payload, replace), dict(counts))

    def restore(self, value: Any, *, tenant: str) -> Any:
        """Map this tenant's tokens in ``value`` back to the original text."""

        def back(text: str) -> str:
            if "<" not in text:
                return text

            def sub(m: re.Match[str]) -> str:
                found = self.vault.get(tenant, m.group(0))
                return m.group(0) if found is None else found

            return _TOKEN.sub(sub, text)

        return _walk(value, back)


def _walk(value: Any, fn: Any) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, Mapping):
        return {k: _walk(v, fn) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(v, fn) for v in value]
    return value
