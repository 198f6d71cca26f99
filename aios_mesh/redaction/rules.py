"""Detection rules: a pattern plus an optional validator that rejects look-alikes
(a 16-digit order number that fails the Luhn check is not a card number)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DEFAULT_RULES", "Rule", "iban_valid", "luhn_valid", "phone_valid"]


@dataclass(frozen=True, slots=True)
class Rule:
    """One detector: what ``pattern`` matches (and ``validate`` accepts) is masked as
    ``[KIND]`` — the whole match, or only its ``group`` (the value of a ``password=`` pair).
    ``needs`` lets texts that cannot hold a match skip the (slower) ``pattern``."""

    kind: str
    pattern: re.Pattern[str]
    validate: Callable[[str], bool] | None = None
    group: int = 0
    #: a cheap pattern any text the rule can match contains: texts without it skip the rule
    needs: re.Pattern[str] | None = None

    @property
    def placeholder(self) -> str:
        return f"[{self.kind.upper()}]"


def luhn_valid(text: str) -> bool:
    """Luhn checksum over the digits of ``text`` (13–19 digits, as card numbers have)."""
    digits = [int(c) for c in text if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """ISO 13616 mod-97 check."""
    s = re.sub(r"\s+", "", text).upper()
    if not 15 <= len(s) <= 34 or not s[:2].isalpha() or not s[2:4].isdigit():
        return False
    moved = s[4:] + s[:4]
    try:
        number = "".join(str(int(c, 36)) for c in moved)
    except ValueError:
        return False
    return int(number) % 97 == 1


_DATE = re.compile(r"\d{4}([-./])\d{1,2}\1\d{1,2}|\d{1,2}([-./])\d{1,2}\2\d{2,4}")


def phone_valid(text: str) -> bool:
    """7 to 15 digits (E.164 allows 15) and no date inside: ``2024-03-05``, ``05.03.2024``
    and ``2024-03-05 15`` (a timestamp) match the phone pattern but are dates."""
    digits = sum(c.isdigit() for c in text)
    return 7 <= digits <= 15 and _DATE.search(text) is None


EMAIL = Rule("email", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
                                 r"\.[A-Za-z]{2,}\b"))
IBAN = Rule("iban", re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b"),
            iban_valid)
# Cards as printed (4-4-4-4 with an optional 3 more, Amex 4-6-5) or as one run of 13-19
# digits: a loose "any 13-19 digits with separators" pattern would take a following digit
# group in and then fail the Luhn check, leaving the card number in clear.
CARD = Rule("card", re.compile(r"\b(?:\d{4}([ -])\d{4}\1\d{4}\1\d{4}(?:\1?\d{3})?"
                               r"|\d{4}([ -])\d{6}\2\d{5}|\d{13,19})\b"), luhn_valid)
# Not inside a dash-joined token: the all-digit groups of a UUID are not a phone number.
PHONE = Rule("phone", re.compile(r"(?<![\w+-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?"
                                 r"\d{2,4}(?:[ .-]\d{2,4}){2,4}(?![\w-])"), phone_valid)

#: The PII kinds by pattern and checksum (:func:`~aios_mesh.redaction.redactor.default_rules`
#: adds the secret kinds). Order matters: IBANs and cards before phones, whose
#: pattern would also match digit runs.
DEFAULT_RULES: tuple[Rule, ...] = (EMAIL, IBAN, CARD, PHONE)

