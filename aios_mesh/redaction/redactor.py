"""The redactor walks a JSON-like payload and replaces detected PII in every string."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from aios_mesh.redaction.rules import DEFAULT_RULES, Rule

__all__ = ["Redaction", "Redactor", "RuleRedactor"]

_DIGIT = re.compile(r"\d")
_DIGIT_KINDS = frozenset({"iban", "card", "phone"})


@dataclass(frozen=True, slots=True)
class Redaction:
    """The redacted payload and what was found (kinds and counts, never values)."""

    payload: dict[str, Any]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def applied(self) -> bool:
        return bool(self.counts)


@runtime_checkable
class Redactor(Protocol):
    """Pluggable redaction: ``kinds`` limits which detectors run (``None`` = all)."""

    def redact(self, payload: Mapping[str, Any], *, tenant: str,
               kinds: Iterable[str] | None = None) -> Redaction: ...


class RuleRedactor:
    """Rule-based redactor: e-mails, IBANs (mod-97), card numbers (Luhn), phone numbers.

    >>> RuleRedactor().redact({"note": "mail bob@example.com"}, tenant="t").payload
    {'note': 'mail [EMAIL]'}
    """

    def __init__(self, rules: Iterable[Rule] = DEFAULT_RULES) -> None:
        self.rules = tuple(rules)

    def redact(self, payload: Mapping[str, Any], *, tenant: str,
               kinds: Iterable[str] | None = None) -> Redaction:
        wanted = set(kinds) if kinds is not None else None
        rules = [r for r in self.rules if wanted is None or r.kind in wanted]
        counts: Counter[str] = Counter()
        redacted = self._walk(payload, rules, counts)
        return Redaction(redacted, dict(counts))

    def _walk(self, value: Any, rules: list[Rule], counts: Counter[str]) -> Any:
        if isinstance(value, str):
            return self.redact_text(value, rules, counts)
        if isinstance(value, Mapping):
            return {k: self._walk(v, rules, counts) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._walk(v, rules, counts) for v in value]
        return value

    @staticmethod
    def redact_text(text: str, rules: Iterable[Rule], counts: Counter[str]) -> str:
        # Cheap pre-checks skip the regexes on the common case of PII-free text: every
        # built-in kind but e-mail needs a digit, and e-mail needs an '@'.
        has_at = "@" in text
        has_digit = _DIGIT.search(text) is not None
        for rule in rules:
            if rule.kind == "email":
                if not has_at:
                    continue
            elif rule.kind in _DIGIT_KINDS and not has_digit:
                continue

            def sub(m: Any, rule: Rule = rule) -> str:
                found: str = m.group(0)
                if rule.validate is not None and not rule.validate(found):
                    return found
                counts[rule.kind] += 1
                return rule.placeholder

            text = rule.pattern.sub(sub, text)
        return text
