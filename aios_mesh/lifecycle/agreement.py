"""When do two answers of a capability agree? Per capability, not only equality.

A capability declares ``agreement = "package.module:function"``: a function of two answers
(JSON documents of its output model) returning ``True``/``False`` or a score in ``[0, 1]``.
Shadow traffic, ``compare`` and the promotion gates' quality use it; without one, answers
agree when they are equal.

    def same_invoice(a: dict, b: dict) -> float:
        # vendor and total decide; a reformatted date does not
        return float(a["vendor"] == b["vendor"] and abs(a["total"] - b["total"]) < 0.01)

    @capability("extract-invoice-fields", agreement="myapp.checks:same_invoice", ...)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aios_mesh.errors import ConfigError

if TYPE_CHECKING:
    from aios_mesh.capabilities import CapabilitySpec

__all__ = ["Agreement", "agreement_of", "exactly_equal"]

Agreement = Callable[[Mapping[str, Any], Mapping[str, Any]], float]


def exactly_equal(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    """The default: 1.0 when the two answers are the same document."""
    return float(a == b)


_resolved: dict[str, Agreement] = {}


def agreement_of(spec: CapabilitySpec) -> Agreement:
    """The capability's agreement function as a score in ``[0, 1]`` (its declared one, or
    :func:`exactly_equal`); a function that returns anything else is a :class:`ConfigError`
    at the first comparison, naming it."""
    path = spec.agreement
    if path is None:
        return exactly_equal
    found = _resolved.get(path)
    if found is None:
        from aios_mesh.capabilities import import_object

        fn = import_object(path)
        if not callable(fn):
            raise ConfigError(f"agreement {path!r} of {spec.name} is not a function",
                              hint="name a function f(a: dict, b: dict) -> bool | float")

        def scored(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
            value = fn(a, b)
            score = float(value) if isinstance(value, (bool, int, float)) else math.nan
            if not 0.0 <= score <= 1.0:  # NaN fails too
                raise ConfigError(f"agreement {path!r} returned {value!r}",
                                  hint="return True/False or a score between 0 and 1")
            return score

        found = _resolved[path] = scored
    return found
