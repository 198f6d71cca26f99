"""Foreign exceptions as record-safe text: a handler's or a model's exception message may
quote the payload, so it is masked before it goes into an error message (and from there into
the decision record, the log line, the span and the events)."""

from __future__ import annotations

from collections import Counter

from aios_mesh.redaction.redactor import RuleRedactor, default_rules

__all__ = ["describe_exception"]


def describe_exception(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` of ``exc`` with e-mail addresses, secrets, IBANs, card and phone
    numbers masked, the message cut at ``limit`` characters.

    >>> describe_exception(ValueError("no account for bob@example.com"))
    'ValueError: no account for [EMAIL]'
    """
    text = RuleRedactor.redact_text(str(exc)[:limit], default_rules(), Counter())
    return f"{type(exc).__name__}: {text}"
