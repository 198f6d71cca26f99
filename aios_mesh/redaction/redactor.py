"""The redactor walks a JSON-like payload and replaces detected PII and secrets in every
string: values and dict keys alike (a key can be an e-mail address or an IBAN)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from aios_mesh.redaction.rules import CARD, EMAIL, IBAN, PHONE, Rule
from aios_mesh.redaction.secrets import secret_rules

__all__ = ["Redaction", "Redactor", "RuleRedactor", "default_rules", "walk_strings"]

_DIGIT = re.compile(r"\d")
_DIGIT_KINDS = frozenset({"iban", "card", "phone"})


def default_rules() -> tuple[Rule, ...]:
    """What is on by default: e-mail, the secret kinds (key and token formats, ``password=``
    pairs, high-entropy strings), IBAN, card and phone numbers. Secrets go before the digit
    kinds, so a key is masked whole, not as a phone number inside it."""
    return (EMAIL, *secret_rules(), IBAN, CARD, PHONE)


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


def walk_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """``value`` with ``fn`` applied to every string in it, dict keys included (mappings
    become dicts, tuples lists: the JSON shapes). Two keys that redact alike merge, the
    later value winning: what the key said is gone either way."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, Mapping):
        return {fn(k) if isinstance(k, str) else k: walk_strings(v, fn)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [walk_strings(v, fn) for v in value]
    return value


class RuleRedactor:
    """Rule-based redactor: e-mails, secrets (key and token formats, ``password=`` pairs,
    high-entropy strings), IBANs (mod-97), card numbers (Luhn), phone numbers.

    >>> RuleRedactor().redact({"note": "mail bob@example.com"}, tenant="t").payload
    {'note': 'mail [EMAIL]'}
    """

    def __init__(self, rules: Iterable[Rule] | None = None) -> None:
        self.rules = tuple(default_rules() if rules is None else rules)

    def redact(self, payload: Mapping[str, Any], *, tenant: str,
               kinds: Iterable[str] | None = None) -> Redaction:
        wanted = set(kinds) if kinds is not None else None
        rules = [r for r in self.rules if wanted is None or r.kind in wanted]
        counts: Counter[str] = Counter()
        redacted = walk_strings(payload, lambda s: self.redact_text(s, rules, counts))
        return Redaction(redacted, dict(counts))

    @staticmethod
    def redact_text(text: str, rules: Iterable[Rule], counts: Counter[str],
                    replace: Replacement | None = None) -> str:
        # Cheap pre-checks skip the regexes on the common case of PII-free text: e-mail needs
        # an '@', the digit kinds a digit, each secret rule what its ``needs`` says.
        has_at = "@" in text
        has_digit = _DIGIT.search(text) is not None
        for rule in rules:
            if rule.kind == "email":
                if not has_at:
                    continue
            elif rule.kind in _DIGIT_KINDS and not has_digit:
                continue
            if rule.needs is not None and rule.needs.search(text) is None:
                continue

            text = _replace(rule, text, counts, replace)
        return text


#: What a found value becomes: the rule's placeholder by default, a reversible token when
#: tokenizing (:class:`~aios_mesh.redaction.tokens.TokenizingRedactor`).
Replacement = Callable[[Rule, str], str]


def _replace(rule: Rule, text: str, counts: Counter[str],
             replace: Replacement | None = None) -> str:
    """Mask every valid match of ``rule`` in ``text``. A match that fails its validator is
    not skipped whole: the search goes on one character later, so the digits of an order
    number in front of a card number cannot hide it (``0134 4111 1111 1111 1111``)."""
    out: list[str] = []
    pos = done = 0
    while (m := rule.pattern.search(text, pos)) is not None:
        if rule.validate is not None and not rule.validate(m.group(0)):
            pos = m.start() + 1
            continue
        counts[rule.kind] += 1
        start, end = m.span(rule.group)
        found = text[start:end]
        out += [text[done:start], rule.placeholder if replace is None else replace(rule, found)]
        done = pos = max(end, m.end(), start + 1)
        if rule.group:
            out.append(text[end:m.end()])
    return "".join(out) + text[done:] if out else text
