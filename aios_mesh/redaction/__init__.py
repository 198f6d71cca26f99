"""PII redaction applied before any backend marked external."""

from aios_mesh.redaction.exceptions import describe_exception
from aios_mesh.redaction.redactor import Redaction, Redactor, RuleRedactor
from aios_mesh.redaction.rules import DEFAULT_RULES, Rule, iban_valid, luhn_valid
from aios_mesh.redaction.tokens import TokenizingRedactor, TokenVault

__all__ = ["DEFAULT_RULES", "Redaction", "Redactor", "Rule", "RuleRedactor", "TokenVault",
           "TokenizingRedactor", "describe_exception", "iban_valid", "luhn_valid"]
