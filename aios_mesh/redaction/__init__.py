"""PII and secret redaction: before any backend marked external (the redact step) and before
every sink (the Recorder's :class:`Scrubber`)."""

from aios_mesh.redaction.exceptions import describe_exception
from aios_mesh.redaction.redactor import (
    Redaction,
    Redactor,
    RuleRedactor,
    default_rules,
    walk_strings,
)
from aios_mesh.redaction.rules import DEFAULT_RULES, Rule, iban_valid, luhn_valid
from aios_mesh.redaction.scrub import Detector, Scrubber
from aios_mesh.redaction.tokens import TokenizingRedactor, TokenVault

__all__ = ["DEFAULT_RULES", "Detector", "Redaction", "Redactor", "Rule", "RuleRedactor",
           "Scrubber", "TokenVault", "TokenizingRedactor", "default_rules",
           "describe_exception", "iban_valid", "luhn_valid", "walk_strings"]
