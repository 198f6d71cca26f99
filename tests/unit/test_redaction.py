from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aios_mesh.redaction import RuleRedactor, iban_valid, luhn_valid
from aios_mesh.redaction.rules import DEFAULT_RULES

VISA = "4111 1111 1111 1111"
IBAN = "DE89 3704 0044 0532 0130 00"


@pytest.mark.parametrize(("text", "kind", "expected"), [
    ("write to jane.doe+inv@example.co.uk today", "email", "write to [EMAIL] today"),
    (f"card {VISA} exp 12/29", "card", "card [CARD] exp 12/29"),
    (f"pay to {IBAN} please", "iban", "pay to [IBAN] please"),
    ("call +49 30 1234 5678 now", "phone", "call [PHONE] now"),
])
def test_each_kind_is_found(text: str, kind: str, expected: str) -> None:
    result = RuleRedactor().redact({"t": text}, tenant="t")
    assert result.payload == {"t": expected}
    assert result.counts == {kind: 1}


def test_look_alikes_are_left_alone() -> None:
    # Fails Luhn; IBAN with a wrong check digit; not an e-mail.
    text = "order 4111 1111 1111 1112, ref DE00 3704 0044 0532 0130 00, user at example"
    result = RuleRedactor().redact({"t": text}, tenant="t")
    assert "[CARD]" not in result.payload["t"]
    assert "[IBAN]" not in result.payload["t"]
    assert result.counts.get("email", 0) == 0


def test_nested_payload_and_kind_filter() -> None:
    payload = {"a": [{"b": "x@y.io"}, "4111111111111111"], "n": 5}
    only_email = RuleRedactor().redact(payload, tenant="t", kinds=["email"])
    assert only_email.payload == {"a": [{"b": "[EMAIL]"}, "4111111111111111"], "n": 5}
    assert RuleRedactor().redact(payload, tenant="t").counts == {"email": 1, "card": 1}


def test_checksums() -> None:
    assert luhn_valid(VISA) and not luhn_valid("4111 1111 1111 1112")
    assert iban_valid(IBAN) and iban_valid("GB82WEST12345698765432")
    assert not iban_valid("GB82WEST12345698765433")


_emails = st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,5})?@[a-z]{2,8}\.(com|org|io|de)", fullmatch=True)
_noise = st.text(alphabet=st.characters(whitelist_categories=("Ll", "Zs")), max_size=20)


@given(_noise, _emails, _noise)
def test_planted_emails_never_survive(pre: str, email: str, post: str) -> None:
    result = RuleRedactor().redact({"t": f"{pre} {email} {post}"}, tenant="t")
    assert email not in result.payload["t"]
    assert result.counts["email"] >= 1


@given(st.lists(st.integers(0, 9), min_size=12, max_size=18))
def test_every_luhn_valid_card_number_is_redacted(digits: list[int]) -> None:
    # Complete the number with its Luhn check digit.
    for check in range(10):
        number = "".join(map(str, [*digits, check]))
        if luhn_valid(number):
            break
    out = RuleRedactor.redact_text(f"card {number} end", DEFAULT_RULES, Counter())
    assert number not in out


@pytest.mark.parametrize("date", ["2024-03-05", "05.03.2024", "5/3/2024", "2024.3.5",
                                  "2023-05-23 15:03"])
def test_dates_are_not_phone_numbers(date: str) -> None:
    from aios_mesh.redaction.rules import PHONE

    match = PHONE.pattern.search(f"Invoice date: {date}")
    assert match is None or not (PHONE.validate and PHONE.validate(match.group()))


def test_phone_numbers_are_still_found() -> None:
    from aios_mesh.redaction.rules import PHONE

    match = PHONE.pattern.search("call +49 30 1234 5678 today")
    assert match is not None and PHONE.validate is not None and PHONE.validate(match.group())
