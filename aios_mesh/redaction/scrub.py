"""The scrubber: what every sink sees of a call passes through it once.

The Recorder scrubs each decision record *before* the audit write, so the audit log, the
decision log lines, spans and metrics, OpenLineage and decision events (shipped from the
audit log) and the caller's error (the gateway's problem body) only ever hold scrubbed text.
Structural fields (ids, hashes, timestamps) are not passed to it (see docs/governance/
scrubbing.md).

Scrubbing is pattern, checksum and secret detection (:func:`~aios_mesh.redaction.rules.
default_rules`) plus any opt-in :class:`Detector` (names and postal addresses,
:mod:`aios_mesh.redaction.names`). Records repeat most of their strings (tenant, capability,
model, messages of the same error), so results are cached by text.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import orjson

from aios_mesh.errors import MeshError
from aios_mesh.redaction.redactor import RuleRedactor, default_rules, walk_strings
from aios_mesh.redaction.rules import Rule
from aios_mesh.redaction.secrets import high_entropy

__all__ = ["Detector", "Scrubber", "default_scrubber"]

_CACHED_LEN = 512
#: Structures up to this many serialised bytes are cached whole (:meth:`Scrubber.value`).
_CACHED_STRUCTURE_LEN = 4096


@runtime_checkable
class Detector(Protocol):
    """A detector beyond patterns (a named-entity model): the spans of ``text`` to mask,
    each ``(start, end, kind)``; the kind names the placeholder (``person`` → ``[PERSON]``)."""

    def spans(self, text: str) -> Iterable[tuple[int, int, str]]: ...


class Scrubber:
    """Masks PII and secrets in text and JSON-like values, keys included.

    Args:
        rules: the pattern detectors (default: :func:`default_rules`).
        detectors: opt-in detectors run after the rules (e.g. names).
        cache_size: distinct strings whose result is kept (the cache is emptied when full).

    >>> Scrubber().text("card 4111 1111 1111 1111, password=hunter2")
    'card [CARD], password=[SECRET]'
    """

    @classmethod
    def with_names(cls, names_model: str | None) -> Scrubber:
        """The default scrubber, plus the opt-in names detector when ``names_model`` names
        an installed spaCy pipeline (``[redaction] names_model``)."""
        if names_model is None:
            return cls()
        from aios_mesh.redaction.names import SpacyNames

        return cls(detectors=[SpacyNames(names_model)])

    def __init__(self, rules: Iterable[Rule] | None = None, *,
                 detectors: Sequence[Detector] = (), cache_size: int = 8192) -> None:
        self.rules = tuple(default_rules() if rules is None else rules)
        self.detectors = tuple(detectors)
        self.cache_size = cache_size
        self._cache: dict[str, str] = {}
        self._structures: dict[bytes, bytes] = {}
        self._found: Counter[str] = Counter()
        # Names the operator declared (a tenant, a registered capability or model) are
        # identifiers, often with a random suffix ("invoice-clf-f4ed9809"): every pattern
        # and known secret format still applies, the randomness guess does not.
        self._named = Scrubber(tuple(r for r in self.rules if r.validate is not high_entropy),
                               detectors=detectors, cache_size=cache_size) \
            if any(r.validate is high_entropy for r in self.rules) else self

    def text(self, text: str) -> str:
        """``text`` with every detected PII value and secret masked."""
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        out = RuleRedactor.redact_text(text, self.rules, self._found)
        for detector in self.detectors:
            out = _mask(out, detector.spans(out), self._found)
        if len(text) <= _CACHED_LEN:  # long texts rarely repeat
            if len(self._cache) >= self.cache_size:
                self._cache.clear()  # cheaper than LRU bookkeeping on every hit
            self._cache[text] = out
        return out

    def name(self, name: str) -> str:
        """A name the operator declared (tenant, registered capability, model, alias): PII
        and known secret formats masked, but not for looking random — an identifier with a
        random suffix is not a secret, and masking it would break the record's joins."""
        return self._named.text(name)

    def names(self, value: Any) -> Any:
        """``value`` with every string treated as a declared name (see :meth:`name`)."""
        return self._walk(value, self.name, b"n")

    def value(self, value: Any) -> Any:
        """``value`` (a JSON-like structure) with every string scrubbed, dict keys too."""
        return self._walk(value, self.text, b"v")

    def _walk(self, value: Any, fn: Callable[[str], str], kind: bytes) -> Any:
        # Records repeat whole structures (policy inputs, checks, drift): one serialisation
        # finds the scrubbed copy of one seen before (a fresh copy each time: records never
        # share a mutable part); walking even a cached structure costs ~10x more.
        if not isinstance(value, dict | list) or not value:
            return walk_strings(value, fn)
        try:
            key = kind + orjson.dumps(value)
        except TypeError:  # not plain JSON (a datetime, a model): walk it
            return walk_strings(value, fn)
        cached = self._structures.get(key)
        if cached is not None:
            return orjson.loads(cached)
        out = walk_strings(value, fn)
        if len(key) <= _CACHED_STRUCTURE_LEN:
            if len(self._structures) >= self.cache_size:
                self._structures.clear()
            self._structures[key] = orjson.dumps(out)
        return out

    def error(self, error: MeshError) -> MeshError:
        """Scrub ``error`` in place (message, hint, details, a policy's ``reason``) and
        return it: the caller gets the same text the record holds."""
        error.message = self.text(error.message)
        if error.hint is not None:
            error.hint = self.text(error.hint)
        if error.details:
            error.details = self.value(error.details)
        reason = getattr(error, "reason", None)
        if isinstance(reason, str):
            error.reason = self.text(reason)  # type: ignore[attr-defined]  # PolicyDenied's
        error.args = (error.message if error.hint is None
                      else f"{error.message} — {error.hint}",)
        return error

    @property
    def found(self) -> dict[str, int]:
        """How often each kind was masked since start (kinds and counts, never values;
        cached strings count once)."""
        return dict(self._found)


def _mask(text: str, spans: Iterable[tuple[int, int, str]], counts: Counter[str]) -> str:
    out, last = [], 0
    for start, end, kind in sorted(spans):
        if start < last:
            continue  # overlaps a span already masked
        out += [text[last:start], f"[{kind.upper()}]"]
        counts[kind] += 1
        last = end
    return "".join(out) + text[last:] if out else text


@functools.cache
def default_scrubber() -> Scrubber:
    """The process's scrubber with the default detectors (for text outside a mesh's
    records, e.g. problem bodies of errors raised before a call starts)."""
    return Scrubber()
