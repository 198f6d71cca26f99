"""The event envelope is a CloudEvents 1.0 event: both content modes round trip, foreign
producers get the documented defaults, the envelope written before CloudEvents still decodes,
and every malformed input is InvalidInput (a poison message)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aios_mesh.errors import InvalidInput
from aios_mesh.ports.event_codec import (
    DEAD_LETTER_ATTEMPTS,
    DEAD_LETTER_REASON,
    ORIGINAL_TOPIC,
    decode_event,
    decode_message,
    encode_event,
    from_binary,
    poison_event,
    to_binary,
)
from aios_mesh.ports.events import RESERVED_ATTRIBUTES, SPEC_VERSION, Event

text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
name = text.filter(bool)
attribute_names = st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True).filter(
    lambda n: n not in RESERVED_ATTRIBUTES)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12)
events = st.builds(
    Event, type=name, source=name, tenant=name,
    data=st.dictionaries(text, json_values, max_size=5),
    subject=st.none() | text, key=st.none() | text,
    headers=st.dictionaries(attribute_names, text, max_size=4),
    id=name, time=name, idempotency_key=text)


def _old_row(event: Event) -> bytes:
    """The envelope as aios-mesh wrote it before CloudEvents (outbox rows, bus logs)."""
    return orjson.dumps({
        "type": event.type, "source": event.source, "tenant": event.tenant,
        "data": event.data, "subject": event.subject, "key": event.key,
        "headers": event.headers, "id": event.id, "time": event.time,
        "schema_version": "1", "idempotency_key": event.idempotency_key})


@settings(max_examples=300)
@given(event=events)
def test_both_content_modes_round_trip(event: Event) -> None:
    raw = event.to_bytes()
    assert Event.from_bytes(raw) == event
    assert decode_event(raw) == event
    assert decode_message(raw) == event
    assert encode_event(event) == raw
    headers, body = to_binary(event)
    assert from_binary(headers, body) == event
    assert decode_message(body, headers) == event


@settings(max_examples=200)
@given(event=events)
def test_the_envelope_written_before_cloudevents_still_decodes(event: Event) -> None:
    assert decode_event(_old_row(event)) == event
    assert decode_event(orjson.dumps(event)) == event  # the outbox's dataclass dump


def test_a_stored_row_from_the_previous_release_decodes() -> None:
    # bytes as the previous release wrote them (Event.to_bytes, schema_version "1"), with
    # the dead-letter headers of that release
    row = (b'{"type":"invoice.extracted","source":"aios-mesh","tenant":"acme",'
           b'"data":{"total":12.5},"subject":null,"key":"vendor-7",'
           b'"headers":{"traceparent":"00-ab-cd-01","x-dead-letter-reason":"boom",'
           b'"x-original-topic":"invoices","x-attempts":"3"},'
           b'"id":"0f4c8b1e2d3a4f5b6c7d8e9fa0b1c2d3","time":"2026-01-05T10:00:00+00:00",'
           b'"schema_version":"1","idempotency_key":"inv-42"}')
    event = decode_event(row)
    assert (event.type, event.tenant, event.key, event.id, event.idempotency_key) == (
        "invoice.extracted", "acme", "vendor-7", "0f4c8b1e2d3a4f5b6c7d8e9fa0b1c2d3", "inv-42")
    assert event.data == {"total": 12.5}
    assert event.headers == {"traceparent": "00-ab-cd-01", DEAD_LETTER_REASON: "boom",
                             ORIGINAL_TOPIC: "invoices", DEAD_LETTER_ATTEMPTS: "3"}
    assert decode_event(event.to_bytes()) == event  # and re-encodes as a CloudEvent


def test_the_wire_form_is_a_cloudevent() -> None:
    event = Event(type="invoice.paid", source="svc://billing", tenant="acme", key="v-7",
                  subject="inv-42", data={"n": 1}, headers={"traceparent": "00-ab-cd-01"},
                  idempotency_key="inv-42:paid")
    doc = orjson.loads(event.to_bytes())
    assert doc == {"specversion": "1.0", "id": event.id, "source": "svc://billing",
                   "type": "invoice.paid", "time": event.time,
                   "datacontenttype": "application/json", "subject": "inv-42",
                   "tenant": "acme", "partitionkey": "v-7", "idempotencykey": "inv-42:paid",
                   "traceparent": "00-ab-cd-01", "data": {"n": 1}}
    headers, body = to_binary(event)
    assert dict(headers) == {
        "ce_specversion": b"1.0", "ce_id": event.id.encode(), "ce_source": b"svc://billing",
        "ce_type": b"invoice.paid", "ce_time": event.time.encode(),
        "content-type": b"application/json", "ce_subject": b"inv-42", "ce_tenant": b"acme",
        "ce_partitionkey": b"v-7", "ce_idempotencykey": b"inv-42:paid",
        "ce_traceparent": b"00-ab-cd-01"}
    assert orjson.loads(body) == {"n": 1}


def test_defaults_for_a_minimal_cloudevent() -> None:
    raw = orjson.dumps({"specversion": "1.0", "id": "e-1", "source": "/s", "type": "t",
                        "tenant": "acme"})
    event = decode_event(raw)
    assert (event.id, event.idempotency_key, event.data, event.subject, event.key) == (
        "e-1", "e-1", {}, None, None)
    assert event.time
    binary = from_binary([("ce_specversion", b"1.0"), ("ce_id", b"e-1"), ("ce_source", b"/s"),
                          ("ce_type", b"t"), ("ce_tenant", b"acme")], b"")
    assert (binary.id, binary.idempotency_key, binary.data) == ("e-1", "e-1", {})


def test_defaults_for_an_old_envelope_with_only_the_required_fields() -> None:
    raw = orjson.dumps({"type": "t", "source": "s", "tenant": "acme", "data": {"x": 1}})
    event = decode_event(raw)
    # the id is a hash of the message: a redelivery gets the same one and is deduplicated
    assert event.id == hashlib.sha256(raw).hexdigest()[:32] == decode_event(raw).id
    assert event.idempotency_key == event.id
    assert event.data == {"x": 1}


def test_extensions_become_headers_and_travel_back() -> None:
    raw = orjson.dumps({"specversion": "1.0", "id": "e", "source": "s", "type": "t",
                        "tenant": "a", "dataschema": "https://example.com/s.json",
                        "sequence": 7, "sampled": True, "gone": None})
    event = decode_event(raw)
    assert event.headers == {"dataschema": "https://example.com/s.json", "sequence": "7",
                             "sampled": "true"}
    assert orjson.loads(event.to_bytes())["dataschema"] == "https://example.com/s.json"


def test_an_empty_subject_or_key_is_none() -> None:
    event = Event(type="t", source="s", tenant="a", subject="", key="")
    assert (event.subject, event.key) == (None, None)


@pytest.mark.parametrize("header", ["X-Custom", "x-dead-letter-reason", "", "tenant", "id",
                                    "data", "partitionkey", "ümlaut"])
def test_header_names_must_be_extension_attribute_names(header: str) -> None:
    with pytest.raises(InvalidInput) as info:
        Event(type="t", source="s", tenant="a", headers={header: "v"})
    assert info.value.hint and "lower-case" in info.value.hint


def test_deprecated_names_warn() -> None:
    from aios_mesh.ports import events as module

    with pytest.warns(DeprecationWarning, match="SPEC_VERSION"):
        assert module.ENVELOPE_VERSION == SPEC_VERSION
    with pytest.warns(DeprecationWarning, match="specversion"):
        assert Event(type="t", source="s", tenant="a").schema_version == SPEC_VERSION


@settings(max_examples=500)
@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_raise_invalid_input(raw: bytes) -> None:
    try:
        decode_event(raw)
    except InvalidInput:
        pass


@settings(max_examples=300)
@given(headers=st.lists(st.tuples(st.sampled_from(["ce_specversion", "ce_id", "ce_source",
                                                   "ce_type", "ce_tenant", "content-type",
                                                   "ce_time", "ce_x", "other"]),
                                  st.binary(max_size=12)), max_size=8),
       body=st.binary(max_size=60))
def test_arbitrary_binary_messages_parse_or_raise_invalid_input(
        headers: list[tuple[str, bytes]], body: bytes) -> None:
    try:
        from_binary(headers, body)
    except InvalidInput:
        pass


_VALID: dict[str, Any] = orjson.loads(Event(type="t", source="s", tenant="a", subject="x",
                                            key="k", headers={"h": "v"}).to_bytes())
json_docs = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8)


@settings(max_examples=500)
@given(field=st.sampled_from(sorted(_VALID)), value=json_docs)
def test_any_attribute_mutation_parses_or_raises_invalid_input(field: str, value: Any) -> None:
    doc = {**_VALID, field: value}
    try:
        event = decode_event(orjson.dumps(doc))
    except InvalidInput:
        return
    attrs: dict[str, Any] = {**event.attributes(), "data": event.data}
    if value is None or value == "":  # absent: a default took its place, or it is gone
        assert field not in ("id", "source", "type", "tenant", "specversion")
        return
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, int) and field != "data":
        value = str(value)
    assert attrs[field] == value  # accepted only when well-typed


@pytest.mark.parametrize("raw", [
    b"", b"{", b"null", b"[]", b'"event"', b"42", b"\xff\xfe",
    b'{"type": "t"}',
    orjson.dumps({**_VALID, "specversion": "0.3"}),
    orjson.dumps({**_VALID, "specversion": 1.0}),
    orjson.dumps({**_VALID, "tenant": ""}),
    orjson.dumps({k: v for k, v in _VALID.items() if k != "tenant"}),
    orjson.dumps({k: v for k, v in _VALID.items() if k != "id"}),
    orjson.dumps({**_VALID, "datacontenttype": "text/plain"}),
    orjson.dumps({**{k: v for k, v in _VALID.items() if k != "data"}, "data_base64": "AA=="}),
    orjson.dumps({**_VALID, "Bad-Name": "x"}),
    orjson.dumps({"type": "t", "source": "s", "tenant": "a", "schema_version": "2"}),
    orjson.dumps({"type": "t", "source": "s", "tenant": "a", "headers": {"a": 1}}),
])
def test_malformed_envelopes_raise_invalid_input(raw: bytes) -> None:
    with pytest.raises(InvalidInput) as info:
        decode_event(raw)
    assert info.value.hint


@pytest.mark.parametrize(("field", "value"), [
    ("data", 5), ("data", [1]), ("partitionkey", 7), ("subject", {"x": 1}), ("tenant", 3),
    ("type", ["t"]), ("h", 1.5), ("h", {"x": 1}),
])
def test_ill_typed_attributes_are_poison(field: str, value: Any) -> None:
    with pytest.raises(InvalidInput, match=field):
        decode_event(orjson.dumps({**_VALID, field: value}))


@pytest.mark.parametrize(("headers", "body", "needle"), [
    ([("ce_specversion", b"1.0"), ("ce_id", b"e"), ("ce_source", b"s"), ("ce_type", b"t")],
     b"{}", "tenant"),
    ([("ce_specversion", b"1.0"), ("ce_id", b"e"), ("ce_source", b"s"), ("ce_type", b"t"),
      ("ce_tenant", b"a")], b"[1]", "data"),
    ([("ce_specversion", b"1.0"), ("ce_id", b"e"), ("ce_source", b"s"), ("ce_type", b"t"),
      ("ce_tenant", b"a"), ("content-type", b"text/plain")], b"hi", "not JSON"),
    ([("ce_specversion", b"1.0"), ("ce_id", b"\xff"), ("ce_source", b"s"),
      ("ce_type", b"t"), ("ce_tenant", b"a")], b"{}", "UTF-8"),
])
def test_bad_binary_messages_are_poison(headers: list[tuple[str, bytes]], body: bytes,
                                        needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        decode_message(body, headers)


def test_poison_keeps_the_wire_headers() -> None:
    event = poison_event(b"x", topic="t", reason="bad", wire_headers=[("ce_id", b"e\xff")])
    assert event.data["wire_headers"] == {"ce_id": "e\ufffd"}
    assert event.headers[DEAD_LETTER_REASON] == "bad"
