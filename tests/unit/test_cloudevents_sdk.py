"""Our envelope checked by a parser we did not write: the CloudEvents Python SDK reads what we
write (JSON event format, Kafka binary mode) and we read what it writes, attribute for
attribute. The brokers in between are covered in tests/integration/test_cloudevents_interop.py."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import orjson
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from dateutil.parser import isoparse
from hypothesis import given, settings
from hypothesis import strategies as st

from aios_mesh.ports.event_codec import decode_event, decode_message, to_binary
from aios_mesh.ports.events import RESERVED_ATTRIBUTES, Event

text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
name = text.filter(bool)
attribute_names = st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True).filter(
    lambda n: n not in RESERVED_ATTRIBUTES | {"dataschema"})
times = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1),
                     timezones=st.just(UTC)).map(datetime.isoformat)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8)
events = st.builds(
    Event, type=name, source=name, tenant=name,
    data=st.dictionaries(text, json_values, max_size=4),
    subject=st.none() | name, key=st.none() | name,
    headers=st.dictionaries(attribute_names, text, max_size=3),
    id=name, time=times, idempotency_key=text)


def _expected(event: Event) -> dict[str, Any]:
    """The attributes the SDK must see, its way: ``time`` a datetime."""
    attrs: dict[str, Any] = dict(event.attributes())
    attrs["time"] = isoparse(event.time)
    return attrs


def _attributes(ce: Any) -> dict[str, Any]:
    return dict(ce.get_attributes())


@settings(max_examples=100)
@given(event=events)
def test_the_sdk_reads_our_structured_events(event: Event) -> None:
    ce = JSONFormat().read(CloudEvent, event.to_bytes())
    assert _attributes(ce) == _expected(event)
    assert ce.get_data() == event.data


@settings(max_examples=100)
@given(event=events)
def test_the_sdk_reads_our_kafka_binary_records(event: Event) -> None:
    headers, value = to_binary(event)
    message = ce_kafka.KafkaMessage(headers=dict(headers), key=(event.key or event.id).encode(),
                                    value=value)
    ce = ce_kafka.from_kafka(message, JSONFormat())
    assert isinstance(ce, CloudEvent)
    expected = _expected(event)
    # the binding maps the record key to partitionkey; ours is the key, else the id
    expected["partitionkey"] = event.key or event.id
    assert _attributes(ce) == expected
    assert ce.get_data() == event.data


@settings(max_examples=100)
@given(event=events)
def test_we_read_the_sdks_events_in_both_modes(event: Event) -> None:
    attrs: dict[str, Any] = {**event.attributes(), "time": isoparse(event.time)}
    ce = CloudEvent(attrs, event.data)
    _assert_same(decode_event(JSONFormat().write(ce)), event)
    structured = ce_kafka.to_structured(ce, JSONFormat())
    _assert_same(decode_message(structured.value, list(structured.headers.items())), event)
    binary = ce_kafka.to_binary(ce, JSONFormat())
    _assert_same(decode_message(binary.value, list(binary.headers.items())), event)


def _assert_same(got: Event, sent: Event) -> None:
    """Equal, with ``time`` the same instant (the SDK writes UTC as ``Z``)."""
    assert isoparse(got.time) == isoparse(sent.time)
    assert dataclasses.replace(got, time=sent.time) == sent


def test_a_minimal_sdk_event_gets_our_defaults() -> None:
    ce = CloudEvent({"type": "com.example.paid", "source": "/billing", "tenant": "acme"})
    for mode in (ce_kafka.to_structured, ce_kafka.to_binary):
        message = mode(ce, JSONFormat())
        event = decode_message(message.value, list(message.headers.items()))
        assert (event.type, event.source, event.tenant, event.id) == (
            "com.example.paid", "/billing", "acme", ce.get_id())
        assert event.idempotency_key == ce.get_id()
        assert event.data == {}
        assert isoparse(event.time) == ce.get_time()
    assert orjson.loads(JSONFormat().write(ce))["specversion"] == "1.0"
