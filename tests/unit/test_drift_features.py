"""Drift features from a capability's schemas: the rules per field kind, and properties over
generated schemas and payloads (never raises, every number finite)."""

from __future__ import annotations

import enum
import math
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, create_model

from aios_mesh.lifecycle.features import (
    TEXT_STATS,
    Features,
    call_features,
    extract,
    is_code,
    schema_for,
    text_stats,
)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    city: str
    zip_code: str = Field(max_length=8)


class In(BaseModel):
    text: str
    amount: float | None = None
    count: int = 0
    urgent: bool = False
    color: Color = Color.RED
    level: Literal["low", "high"] = "low"
    tags: list[str] = []
    address: Address | None = None
    anything: Any = None


def test_each_kind_of_field() -> None:
    payload = {"text": "Invoice 12\nTOTAL 3 EUR", "amount": 12.5, "count": 3, "urgent": True,
               "color": "blue", "level": "high", "tags": ["a", "b"],
               "address": {"city": "Zürich", "zip_code": "8001"}, "anything": 7}
    f = extract(schema_for(In, "input"), payload)
    for stat in TEXT_STATS:
        assert f"input.text.{stat}" in f.numeric
    assert f.numeric["input.text.lines"] == 2.0
    assert f.numeric["input.text.tokens"] == 5.0
    assert f.categorical["input.text"] == "<text>"  # a text's words never become a category
    assert f.numeric["input.amount"] == 12.5
    assert f.categorical["input.amount.missing"] == "no"
    assert f.numeric["input.count"] == 3.0
    assert "input.count.missing" not in f.categorical  # not optional
    assert f.categorical["input.urgent"] == "true"
    assert f.categorical["input.color"] == "blue"
    assert f.categorical["input.level"] == "high"
    assert f.numeric["input.tags.count"] == 2.0
    assert f.numeric["input.address.city.non_ascii"] == pytest.approx(1 / 6)
    assert f.categorical["input.address.zip_code"] == "8001"  # declared short: a category
    assert f.numeric["input.anything"] == 7.0  # Any: classified by the value


def test_missing_values_and_model_instances() -> None:
    f = extract(schema_for(In, "input"), In(text="x", color=Color.BLUE))
    assert f.categorical["input.amount.missing"] == "yes"
    assert "input.amount" not in f.numeric
    assert f.categorical["input.color"] == "blue"
    assert f.categorical["input.address.city"] == "<none>"
    assert f.categorical["input.text"] == "x"  # one short token: a label


def test_codes_are_categories_and_text_is_not() -> None:
    assert is_code("EUR") and is_code("DE-BY") and is_code("A1.2")
    assert is_code("Euro") and is_code("billing") and is_code("en:US/x")
    assert not is_code("ACME LTD") and not is_code("a" * 17) and not is_code("Zürich")


def test_call_features_prefix_input_and_output() -> None:
    class Out(BaseModel):
        currency: str | None = None
        total: float | None = None

    f = call_features(In, {"text": "hello"}, Out, Out(currency="JPY"))
    assert f.categorical["output.currency"] == "JPY"
    assert f.categorical["output.total.missing"] == "yes"
    assert "input.text.length" in f.numeric


def test_text_stats() -> None:
    assert text_stats("") == (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    length, lines, tokens, digits, upper, non_ascii = text_stats("AB 12\nçé")
    assert (length, lines, tokens) == (8.0, 2.0, 3.0)
    assert (digits, upper, non_ascii) == (0.25, 0.25, 0.25)


def test_non_finite_and_huge_numbers_are_skipped() -> None:
    schema = schema_for(In, "input")
    for bad in (math.nan, math.inf, -math.inf):
        assert "input.amount" not in extract(schema, {"text": "t", "amount": bad}).numeric
    f = extract(schema, {"text": "t", "count": 10**400})
    assert "input.count" not in f.numeric


def test_digest_follows_the_plan_not_the_docs() -> None:
    a = create_model("A", text=(str, ...), n=(int, 0))
    b = create_model("B", __doc__="other docs", text=(str, Field(..., description="x")),
                     n=(int, 5))
    c = create_model("C", text=(str, ...), n=(str, ""))
    assert schema_for(a, "input").digest == schema_for(b, "input").digest
    assert schema_for(a, "input").digest != schema_for(c, "input").digest


# --------------------------------------------------------------------------- properties

_SCALARS: list[Any] = [str, int, float, bool, str | None, float | None, Literal["a", "b"],
                       Color, list[int], dict[str, int], Any, int | str]
_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=50) | st.sampled_from(list(Color)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=8)
_names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda n: n not in ("model_config", "model_fields", "copy", "json", "dict", "schema",
                        "construct", "validate", "fields") and not n.startswith("model_"))


@st.composite
def schemas_and_payloads(draw: st.DrawFn) -> tuple[type[BaseModel], dict[str, Any]]:
    names = draw(st.lists(_names, min_size=1, max_size=6, unique=True))
    fields: dict[str, Any] = {}
    for name in names:
        annotation = draw(st.sampled_from(_SCALARS))
        fields[name] = (annotation, None)
    if draw(st.booleans()):
        nested = create_model("Nested", inner=(str | None, None), size=(float | None, None))
        fields["nested"] = (nested | None, None)
    model = create_model("Generated", **fields)
    # payloads as the redactor hands them over: any JSON-ish values, right type or not
    payload = draw(st.dictionaries(st.sampled_from([*names, "nested", "unknown"]), _values,
                                   max_size=8))
    return model, payload


@settings(max_examples=150, deadline=None)
@given(schemas_and_payloads())
def test_extract_never_raises_and_numbers_are_finite(
        case: tuple[type[BaseModel], dict[str, Any]]) -> None:
    model, payload = case
    f = extract(schema_for(model, "input"), payload)
    assert isinstance(f, Features)
    assert all(isinstance(v, float) and math.isfinite(v) for v in f.numeric.values())
    assert all(isinstance(v, str) for v in f.categorical.values())
    assert all(k.startswith("input.") for k in [*f.numeric, *f.categorical])


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_text_stats_shares_are_between_zero_and_one(text: str) -> None:
    length, lines, tokens, *shares = text_stats(text)
    assert length == len(text) and lines >= (1 if text else 0) and tokens >= 0
    assert all(0.0 <= s <= 1.0 for s in shares)
