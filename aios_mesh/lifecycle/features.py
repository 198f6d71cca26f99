"""Drift features: what one call's (redacted) input and its output look like, as numbers and
categories, driven by the capability's pydantic schemas.

A capability's input and output models are compiled once into a :class:`FeatureSchema` (a
list of field plans); :func:`extract` then turns a payload dict or a model instance into
:class:`Features` with plain loops and ``str`` methods — no regular expressions, no copies of
the payload. The rules, per field (nested models are followed, dotted names, 3 levels deep):

* **text** (``str`` without a declared short maximum): ``NAME.length``, ``NAME.lines``,
  ``NAME.tokens`` (whitespace-separated), ``NAME.digits``, ``NAME.upper`` and
  ``NAME.non_ascii`` (shares of the characters, 0..1) — plus the category ``NAME``: the value
  itself when it reads as a *code or label* (one token of at most :data:`CODE_MAX_LEN`
  letters, digits, ``-``, ``_``, ``.``, ``:``, ``/``: a currency, a country, a predicted
  class such as ``billing``), ``"<text>"`` otherwise, and ``"<none>"`` when missing; an
  optional text also gets ``NAME.missing``. So a predicted class or currency counts in the
  class mix, and free text never leaks its words into a category (only its statistics are
  kept). A drift reference drops categories with many values (identifiers, dates), so
  ``NAME.missing`` is what still tells whether the field was found;
* **category**: ``bool``, ``Literal[...]``, an ``Enum``, a ``str`` with ``max_length <=``
  :data:`CODE_MAX_LEN`: the value as text (``"true"``/``"false"`` for booleans);
* **number**: ``int``/``float``/``Decimal`` as they are (non-finite values are skipped);
  an optional number also gets the category ``NAME.missing`` (``"yes"``/``"no"``);
* **count**: lists, tuples, sets and dicts: ``NAME.count`` (number of items);
* anything else (``Any``, unions of unlike types) is classified by the value's type at run time.

Input features are named ``input.<field>...``, output ones ``output.<field>...``; the
*predicted class mix* of a capability is the categories of its output fields.

    >>> from pydantic import BaseModel
    >>> class Out(BaseModel):
    ...     currency: str | None = None
    ...     total: float | None = None
    >>> f = extract(schema_for(Out, "output"), {"currency": "EUR", "total": 12.5})
    >>> f.numeric["output.total"], f.categorical["output.currency"]
    (12.5, 'EUR')
    >>> f.categorical["output.total.missing"]
    'no'
"""

from __future__ import annotations

import enum
import functools
import hashlib
import math
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

__all__ = [
    "CODE_MAX_LEN",
    "TEXT_STATS",
    "FeatureSchema",
    "Features",
    "FieldPlan",
    "call_features",
    "capability_schema",
    "extract",
    "is_code",
    "schema_for",
    "text_stats",
]

#: The longest one-token string that still counts as a code or label (a category).
CODE_MAX_LEN = 16
#: The numeric statistics every text field yields, in order (suffixes of the field's name).
TEXT_STATS = ("length", "lines", "tokens", "digits", "upper", "non_ascii")
#: Nested models are followed this deep (a self-referencing model stops here).
_MAX_DEPTH = 3
_CODE_PUNCTUATION = frozenset("-_.:/")
_NONE = "<none>"
_TEXT = "<text>"

Kind = Literal["text", "category", "number", "count", "auto"]


@dataclass(slots=True)
class Features:
    """One call's features: numbers by name, categories by name (names never clash within
    one dict; a name may appear in both, e.g. a number and its ``.missing`` flag differ)."""

    numeric: dict[str, float] = field(default_factory=dict)
    categorical: dict[str, str] = field(default_factory=dict)

    def merge(self, other: Features) -> Features:
        """Both feature sets in one (``other`` wins on a clash)."""
        return Features({**self.numeric, **other.numeric},
                        {**self.categorical, **other.categorical})


@dataclass(frozen=True, slots=True)
class FieldPlan:
    """How one (possibly nested) field becomes features: its path in the payload, the
    feature name prefix, its kind and whether the schema allows ``None``."""

    path: tuple[str, ...]
    name: str
    kind: Kind
    optional: bool = False


@dataclass(frozen=True, slots=True)
class FeatureSchema:
    """The compiled plan for one model (see :func:`schema_for`)."""

    prefix: str
    fields: tuple[FieldPlan, ...]

    @property
    def digest(self) -> str:
        """A short hash of the plan (names, kinds): two schemas with the same digest yield
        comparable features, whatever their docstrings or defaults say."""
        text = "\n".join(f"{p.name}:{p.kind}:{int(p.optional)}" for p in self.fields)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_code(value: str) -> bool:
    """Whether ``value`` reads as a code or a label (``"EUR"``, ``"de-CH"``, ``"billing"``):
    a category.

    >>> is_code("EUR"), is_code("billing"), is_code("Acme Ltd"), is_code("")
    (True, True, False, False)
    """
    return 0 < len(value) <= CODE_MAX_LEN and all(
        c.isascii() and (c.isalnum() or c in _CODE_PUNCTUATION) for c in value)


def text_stats(text: str) -> tuple[float, float, float, float, float, float]:
    """``(length, lines, tokens, digit share, uppercase share, non-ASCII share)`` of ``text``.

    >>> text_stats("Total: 12 EUR")
    (13.0, 1.0, 3.0, 0.15384615384615385, 0.3076923076923077, 0.0)
    """
    n = len(text)
    if n == 0:
        return 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    # str methods mapped over the text run in C: ~20 ns a character
    digits = sum(map(str.isdigit, text))
    upper = sum(map(str.isupper, text))
    non_ascii = n - len(text.encode("ascii", "ignore"))
    return (float(n), float(text.count("\n") + 1), float(len(text.split())), digits / n,
            upper / n, non_ascii / n)


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, types.UnionType):
        args = get_args(annotation)
        rest = [a for a in args if a is not type(None)]
        optional = len(rest) < len(args)
        if len(rest) == 1:
            return rest[0], optional
        if rest and all(a in (int, float) for a in rest):
            return float, optional
        return Any, optional
    return annotation, False


def _short_max_length(metadata: list[Any]) -> bool:
    for item in metadata:
        limit = getattr(item, "max_length", None)
        if isinstance(limit, int) and limit <= CODE_MAX_LEN:
            return True
    return False


def _kind(annotation: Any, metadata: list[Any]) -> Kind | type[BaseModel]:
    origin = get_origin(annotation)
    if origin is Literal:
        return "category"
    if annotation is bool:
        return "category"
    if isinstance(annotation, type):
        if issubclass(annotation, enum.Enum):
            return "category"
        if issubclass(annotation, BaseModel):
            return annotation
        if issubclass(annotation, str):
            return "category" if _short_max_length(metadata) else "text"
        if issubclass(annotation, int | float | Decimal):
            return "number"
        if issubclass(annotation, list | tuple | set | frozenset | dict):
            return "count"
    if origin in (list, tuple, set, frozenset, dict) or (
            isinstance(origin, type) and issubclass(origin, list | tuple | set | frozenset | dict)):
        return "count"
    from collections import abc

    if origin in (abc.Sequence, abc.Mapping, abc.Set, abc.MutableSequence,
                  abc.MutableMapping):
        return "count"
    return "auto"


def _plans(model: type[BaseModel], path: tuple[str, ...], name: str,
           depth: int) -> list[FieldPlan]:
    out: list[FieldPlan] = []
    for key, info in model.model_fields.items():
        annotation, optional = _strip_optional(info.annotation)
        kind = _kind(annotation, list(info.metadata))
        here, label = (*path, key), f"{name}.{key}"
        if isinstance(kind, type):  # a nested model
            if depth < _MAX_DEPTH:
                out += _plans(kind, here, label, depth + 1)
            continue
        out.append(FieldPlan(here, label, kind, optional))
    return out


@functools.cache
def schema_for(model: type[BaseModel] | None, prefix: str) -> FeatureSchema:
    """The feature plan of ``model`` with names under ``prefix`` (cached per model class).

    >>> from pydantic import BaseModel
    >>> class In(BaseModel):
    ...     text: str
    >>> [p.name for p in schema_for(In, "input").fields]
    ['input.text']
    """
    if model is None:
        return FeatureSchema(prefix, ())
    return FeatureSchema(prefix, tuple(_plans(model, (), prefix, 1)))


def capability_schema(spec_input: type[BaseModel] | None,
                      spec_output: type[BaseModel] | None) -> tuple[FeatureSchema,
                                                                     FeatureSchema]:
    """The input and output plans of a capability (``spec.input``, ``spec.output``)."""
    return schema_for(spec_input, "input"), schema_for(spec_output, "output")


def _get(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if value is None:
            return None
        value = value.get(key) if isinstance(value, Mapping) else getattr(value, key, None)
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float | Decimal):
        try:
            number = float(value)
        except (OverflowError, ValueError):
            return None
        return number if math.isfinite(number) else None
    return None


def _text(name: str, value: str, out: Features) -> None:
    for stat, number in zip(TEXT_STATS, text_stats(value), strict=True):
        out.numeric[f"{name}.{stat}"] = number
    out.categorical[name] = value if is_code(value) else _TEXT


def _category(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        value = value.value
    text = value if isinstance(value, str) else str(value)
    # a declared category is a closed vocabulary; a long value is still not stored verbatim
    return text if len(text) <= 64 else _TEXT


def _one(plan: FieldPlan, value: Any, out: Features) -> None:
    kind = plan.kind
    if kind == "auto":
        if value is None:
            return
        if isinstance(value, bool | enum.Enum):
            kind = "category"
        elif isinstance(value, int | float | Decimal):
            kind = "number"
        elif isinstance(value, str):
            kind = "text"
        elif isinstance(value, list | tuple | set | frozenset | dict):
            kind = "count"
        else:
            return
    if kind == "text":
        if isinstance(value, str):
            _text(plan.name, value, out)
        else:
            out.categorical[plan.name] = _NONE if value is None else _TEXT
        if plan.optional:
            out.categorical[f"{plan.name}.missing"] = "yes" if value is None else "no"
    elif kind == "category":
        out.categorical[plan.name] = _NONE if value is None else _category(value)
    elif kind == "number":
        number = _number(value)
        if number is not None:
            out.numeric[plan.name] = number
        if plan.optional:
            out.categorical[f"{plan.name}.missing"] = "yes" if value is None else "no"
    else:  # count
        if isinstance(value, list | tuple | set | frozenset | dict):
            out.numeric[f"{plan.name}.count"] = float(len(value))


def extract(schema: FeatureSchema, value: Any, into: Features | None = None) -> Features:
    """The features of ``value`` (a payload dict, a pydantic model instance or ``None``) by
    ``schema``. Never raises for any value: a field of an unexpected type yields what it can
    (nothing, or its category), and every number is finite."""
    out = into if into is not None else Features()
    if value is None:
        return out
    for plan in schema.fields:
        try:
            _one(plan, _get(value, plan.path), out)
        except Exception:
            continue
    return out


def call_features(spec_input: type[BaseModel] | None, payload: Any,
                  spec_output: type[BaseModel] | None, output: Any) -> Features:
    """Input and output features of one call (see the module docstring)."""
    schema_in, schema_out = capability_schema(spec_input, spec_output)
    return extract(schema_out, output, extract(schema_in, payload))
