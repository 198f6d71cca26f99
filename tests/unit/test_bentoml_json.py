"""The BentoML adapter's JSON codec: orjson on the call path, exactly as strict as the
standard library (``allow_nan=False``) in what it accepts and reads."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from aios_mesh_bentoml.client import _decode, _encode
from hypothesis import example, given
from hypothesis import strategies as st

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
           | st.floats() | st.text())
docs = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text() | st.integers(), inner, max_size=4),
                    max_leaves=20)


def _stdlib(doc: Any) -> bytes | type[Exception]:
    try:
        return json.dumps(doc, ensure_ascii=False, allow_nan=False).encode()
    except ValueError:
        return ValueError


@given(docs)
@example({"big": 2**64, "small": -(2**63) - 1})
@example([float("nan")])
def test_encode_accepts_and_refuses_what_json_dumps_does(doc: Any) -> None:
    expected = _stdlib(doc)
    if expected is ValueError:
        with pytest.raises(ValueError):
            _encode(doc)
        return
    assert isinstance(expected, bytes)
    assert json.loads(_encode(doc)) == json.loads(expected)


@given(docs)
@example({"big": 2**64, "small": -(2**63) - 1})
@example({"id": "1234567890123456789", "x": float("inf")})
def test_decode_reads_what_json_loads_reads(doc: Any) -> None:
    text = json.dumps(doc, ensure_ascii=False).encode()  # may hold NaN / Infinity
    got, want = _decode(text), json.loads(text)
    assert json.dumps(got) == json.dumps(want)  # NaN != NaN: compare the text


def test_garbage_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        _decode(b"<html>oops</html>")
    assert math.isnan(_decode(b"NaN"))
