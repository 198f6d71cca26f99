"""Secrets as a redaction kind: known key and token formats, ``password=``-like pairs and
high-entropy strings, all masked as ``[SECRET]``.

The known formats are the regexes of detect-secrets' plugins (AWS, GitHub, GitLab, Slack,
Stripe, OpenAI, SendGrid, Twilio, JWTs, private-key headers, passwords in URLs, ...), kept up
to date by that project rather than copied here. The pair keywords are its keyword list plus
``token`` and ``bearer``; the entropy is its Shannon entropy. detect-secrets costs ~0.1 s to
import, so the rules are built on first use (:func:`secret_rules`) — a mesh builds them when
it starts, not on its first call.
"""

from __future__ import annotations

import functools
import itertools
import math
import re

from aios_mesh.redaction.rules import Rule

__all__ = ["SECRET", "high_entropy", "secret_rules"]

#: The redaction kind of every secret detector (placeholder ``[SECRET]``).
SECRET = "secret"

# detect-secrets' plugins whose regexes name a secret by its shape alone. Left out: the
# IP-address plugin (an address is not a secret) and the IBM/Cloudant/Softlayer keyword
# plugins (the pair rule below covers ``key = value`` generally).
_PLUGINS = (
    ("artifactory", "ArtifactoryDetector"), ("aws", "AWSKeyDetector"),
    ("azure_storage_key", "AzureStorageKeyDetector"), ("basic_auth", "BasicAuthDetector"),
    ("discord", "DiscordBotTokenDetector"), ("github_token", "GitHubTokenDetector"),
    ("gitlab_token", "GitLabTokenDetector"), ("jwt", "JwtTokenDetector"),
    ("mailchimp", "MailchimpDetector"), ("npm", "NpmDetector"), ("openai", "OpenAIDetector"),
    ("private_key", "PrivateKeyDetector"), ("pypi_token", "PypiTokenDetector"),
    ("sendgrid", "SendGridDetector"), ("slack", "SlackDetector"),
    ("square_oauth", "SquareOAuthDetector"), ("stripe", "StripeDetector"),
    ("telegram_token", "TelegramBotTokenDetector"), ("twilio", "TwilioKeyDetector"),
)

# A token of the base64/base62 alphabets at least 20 long; '/' and '.' end it, so paths and
# host names are cut into their parts rather than judged whole.
_TOKEN = re.compile(r"(?<![A-Za-z0-9+_=-])[A-Za-z0-9+_-]{20,}={0,2}(?![A-Za-z0-9+_=-])")
_HEX = re.compile(r"[0-9a-fA-F_-]+")


@functools.cache
def _entropy() -> object:
    from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString

    return Base64HighEntropyString().calculate_shannon_entropy


#: The body of a reversible token the tokenizer writes (``<EMAIL_0123456789abcdef>``):
#: already redacted, never a secret (else tokenizing would tokenize its own tokens).
_OUR_TOKEN = re.compile(r"[A-Z][A-Z_]*_[0-9a-f]{16}")


def high_entropy(text: str) -> bool:
    """A random-looking token: letters and digits mixed, its Shannon entropy near the most
    its length allows, its character class changing often (``ExtractInvoiceFieldsV2`` has
    the entropy of a key but changes class 5 times in 22 characters; a random base62 key
    about every second character). Hex-only strings are left alone: that is the shape of
    the record's own ids and digests (a hex key is caught by its ``key=`` pair instead).

    >>> high_entropy("sk_test_4eC39HqLyjWDarjtT1zdp7dc"), high_entropy("ExtractInvoiceFieldsV2")
    (True, False)
    """
    n = len(text)
    if _HEX.fullmatch(text) or _OUR_TOKEN.fullmatch(text):
        return False
    digits = sum(c.isdigit() for c in text)
    if digits < 2 or digits == n or not any(c.isalpha() for c in text):
        return False
    changes = sum(_cls(a) != _cls(b) for a, b in itertools.pairwise(text))
    if changes < 0.3 * n:
        return False
    entropy = _entropy()(text)  # type: ignore[operator]
    return bool(entropy >= min(4.5, 0.85 * math.log2(n)))


def _cls(c: str) -> int:
    return 0 if c.isdigit() else 1 if c.isupper() else 2 if c.islower() else 3


@functools.cache
def secret_rules() -> tuple[Rule, ...]:
    """The secret detectors as redaction rules (built once, on first use)."""
    import importlib

    from detect_secrets.plugins.keyword import DENYLIST

    sources = []
    for module, cls in _PLUGINS:
        plugin = getattr(importlib.import_module(f"detect_secrets.plugins.{module}"), cls)()
        sources += [f"(?:{p.pattern})" for p in plugin.denylist]
    # One alternation: a string is searched once for every format; the whole match goes
    # (some plugins' groups point at the secret inside a longer match, e.g. a URL's password).
    known = re.compile("|".join(sources))
    # "tokenize=llamacpp" names an option, not a credential: a key that goes on from
    # "token" into "tokeniz..." / "tokenis..." is no secret's name
    words = "|".join((*DENYLIST, "token(?!i[sz])", "access_?key", "client_?secret"))
    pair = re.compile(rf"(?i)(?:{words})\w*[\"']?\s*[:=]\s*[\"']?"
                      r"([^\s\"',;&}\[\]]{3,})")
    bearer = re.compile(r"(?i)\bbearer\s+([A-Za-z0-9._~+/-]{8,}=*)")
    # Every known format holds 16+ characters without a space, a private-key header or a
    # URL's "://"; a pair needs its ':' or '='.
    return (Rule(SECRET, known, needs=re.compile(r"\S{16}|BEGIN|://|PuTTY")),
            Rule(SECRET, pair, group=1, needs=re.compile("[:=]")),
            Rule(SECRET, bearer, group=1, needs=re.compile("(?i)bearer")),
            Rule(SECRET, _TOKEN, high_entropy))
