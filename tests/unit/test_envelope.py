"""The event envelope: bytes round trip, and every malformed input is InvalidInput."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aios_mesh.errors import InvalidInput
from aios_mesh.ports.event_codec import decode_event, encode_event
from aios_mesh.ports.events import ENVELOPE_VERSION, Event

text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
name = text.filter(bool)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12)
events = st.builds(
    Event, type=name, source=name, tenant=name,
    data=st.dictionaries(text, json_values, max_size=5),
    subject=st.none() | text, key=st.none() | text,
    headers=st.dictionaries(text, text, max_size=4),
    idempotency_key=text)


@settings(max_examples=300)
@given(event=events)
def test_round_trip(event: Event) -> None:
    raw = event.to_bytes()
    assert Event.from_bytes(raw) == event
    assert decode_event(raw) == event
    assert encode_event(event) == raw  # the fast path writes the same bytes


def test_defaults() -> None:
    event = Event(type="t", source="s", tenant="acme")
    assert event.schema_version == ENVELOPE_VERSION
    assert event.idempotency_key == event.id
    assert len(event.id) == 32
    assert Event.from_bytes(event.to_bytes()) == event


def test_unknown_fields_are_ignored() -> None:
    doc = orjson.loads(Event(type="t", source="s", tenant="a").to_bytes())
    doc["added_in_a_later_minor"] = {"x": 1}
    assert Event.from_bytes(orjson.dumps(doc)).type == "t"


@settings(max_examples=500)
@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_raise_invalid_input(raw: bytes) -> None:
    try:
        decode_event(raw)
    except InvalidInput:
        pass


_VALID: dict[str, Any] = orjson.loads(Event(type="t", source="s", tenant="a").to_bytes())
json_docs = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8)


@settings(max_examples=500)
@given(field=st.sampled_from(sorted(_VALID)), value=json_docs)
def test_any_field_mutation_parses_or_raises_invalid_input(field: str, value: Any) -> None:
    doc = {**_VALID, field: value}
    try:
        event = decode_event(orjson.dumps(doc))
    except InvalidInput:
        return
    assert getattr(event, field) == value  # accepted only when well-typed


@pytest.mark.parametrize("raw", [
    b"", b"{", b"null", b"[]", b'"event"', b"42", b"\xff\xfe",
    b'{"type": "t"}',
    orjson.dumps({**_VALID, "schema_version": "2"}),
    orjson.dumps({**_VALID, "schema_version": 1}),
    orjson.dumps({**_VALID, "tenant": ""}),
    orjson.dumps({k: v for k, v in _VALID.items() if k != "idempotency_key"}),
])
def test_malformed_envelopes_raise_invalid_input(raw: bytes) -> None:
    with pytest.raises(InvalidInput):
        Event.from_bytes(raw)
    with pytest.raises(InvalidInput):
        decode_event(raw)


@pytest.mark.parametrize(("field", "value"), [
    ("data", 5), ("data", [1]), ("headers", [1]), ("headers", {"a": 1}), ("key", 7),
    ("subject", {"x": 1}), ("tenant", 3), ("type", ["t"]),
])
def test_ill_typed_fields_are_poison(field: str, value: Any) -> None:
    with pytest.raises(InvalidInput, match=field):
        decode_event(orjson.dumps({**_VALID, field: value}))


def test_unknown_schema_version_hint_names_the_supported_one() -> None:
    with pytest.raises(InvalidInput) as info:
        Event.from_bytes(orjson.dumps({**_VALID, "schema_version": "99"}))
    assert "99" in info.value.message
    assert info.value.hint is not None
    assert ENVELOPE_VERSION in info.value.hint
