"""The Qdrant-family translation shared by the Edge and qdrant-client adapters
(:mod:`aios_mesh.ports.retrieval_scope`): one set of checks, one upsert hash, one hit filter."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aios_mesh.backends import parse_url
from aios_mesh.errors import ConfigError, InvalidInput
from aios_mesh.ports.retrieval import Condition, Filter, Point
from aios_mesh.ports.retrieval_scope import (
    ID_KEY,
    TENANT_KEY,
    CheckedCondition,
    check_filter,
    delete_op,
    encode_payload,
    index_options,
    internal_id,
    prepare_points,
    scored_points,
)


def test_check_filter_gives_engine_neutral_conditions() -> None:
    must, must_not = check_filter(Filter(
        must=(Condition("lang", "eq", "en"), Condition("n", "any", (1, 2)),
              Condition("price", "range", gte=1, lte=2.5)),
        must_not=(Condition("flag", "eq", True),)))
    assert must == [CheckedCondition("lang", "eq", "en"), CheckedCondition("n", "any", [1, 2]),
                    CheckedCondition("price", "range", gte=1, lte=2.5)]
    assert must_not == [CheckedCondition("flag", "eq", True)]
    assert check_filter(None) == ([], [])


@pytest.mark.parametrize("cond", [
    Condition("_tenant", "eq", "other"), Condition("x", "eq", 1.5), Condition("x", "eq", 2**63),
    Condition("x", "any", "ab"), Condition("x", "any", [1, "a"]), Condition("x", "range"),
    Condition("x", "range", value=1, gte=0), Condition("x", "range", gte=float("nan")),
    Condition("x", "near", 1),  # type: ignore[arg-type]
])
def test_bad_conditions_are_invalid_input(cond: Condition) -> None:
    with pytest.raises(InvalidInput) as info:
        check_filter(Filter(must=(cond,)))
    assert info.value.hint


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
                    st.lists(st.one_of(st.integers(), st.text(max_size=3)), max_size=3))


@given(st.text(max_size=10), st.sampled_from(["eq", "any", "range", "x"]), _VALUES,
       st.one_of(st.none(), st.floats(), st.integers()), st.one_of(st.none(), st.floats()))
def test_check_filter_raises_only_invalid_input(key: str, op: str, value: Any, gte: Any,
                                                lte: Any) -> None:
    try:
        check_filter(Filter(must=(Condition(key, op, value, gte=gte, lte=lte),)))  # type: ignore[arg-type]
    except InvalidInput:
        pass


def test_prepare_points_sets_reserved_keys_and_hashes_the_content() -> None:
    batch = [Point(1, [1.0, 0.0], {"k": "v"}), Point("doc", [0.0, 1.0])]
    prepared = prepare_points("acme", batch)
    assert prepared.dim == 2
    assert [p.payload for p in prepared.points] == [
        {"k": "v", TENANT_KEY: "acme", ID_KEY: 1}, {TENANT_KEY: "acme", ID_KEY: "doc"}]
    assert [p.uid for p in prepared.points] == [internal_id("acme", 1),
                                                 internal_id("acme", "doc")]
    expected = hashlib.sha256(b"upsert|")
    for p in prepared.points:
        expected.update(p.uid.bytes)
        expected.update(np.asarray(p.vector, dtype=np.float32).tobytes())
        expected.update(encode_payload(p.payload))
    assert prepared.digest == expected.digest()
    assert prepare_points("acme", batch).digest == prepared.digest
    assert prepare_points("other", batch).digest != prepared.digest
    assert batch[0].payload == {"k": "v"}  # the caller's payload is not touched


def test_the_edge_encoder_keeps_its_snapshot_hash() -> None:
    """The Edge adapter hashes payloads with orjson (as before the translation was shared),
    so its snapshot ids for the same writes did not change."""
    batch = [Point(7, [0.5, 0.25], {"b": 1e16, "a": "é"})]
    prepared = prepare_points("t", batch,
                              encode=lambda p: orjson.dumps(p, option=orjson.OPT_SORT_KEYS))
    uid = internal_id("t", 7)
    expected = hashlib.sha256(b"upsert|")
    expected.update(uid.bytes)
    expected.update(np.asarray([0.5, 0.25], dtype=np.float32).tobytes())
    expected.update(orjson.dumps({"b": 1e16, "a": "é", TENANT_KEY: "t", ID_KEY: 7},
                                 option=orjson.OPT_SORT_KEYS))
    assert prepared.digest == expected.digest()
    with pytest.raises(InvalidInput, match="not JSON"):  # orjson refuses > 64-bit integers
        prepare_points("t", [Point(1, [1.0], {"big": 2**70})],
                       encode=lambda p: orjson.dumps(p, option=orjson.OPT_SORT_KEYS))


@pytest.mark.parametrize("batch", [
    [Point(1, [1.0]), Point(2, [1.0, 2.0])], [object()], [Point(True, [1.0])],  # type: ignore[arg-type]
    [Point(1, [float("nan")])], [Point(1, [1.0], {TENANT_KEY: "x"})]])
def test_prepare_points_refuses_bad_batches(batch: list[Any]) -> None:
    with pytest.raises(InvalidInput):
        prepare_points("t", batch)


def test_delete_op_is_order_free() -> None:
    ids = [internal_id("t", i) for i in range(5)]
    assert delete_op("t", ids) == delete_op("t", reversed(ids)) != delete_op("u", ids)


@dataclass
class _Hit:
    score: float
    payload: dict[str, Any] | None


def test_scored_points_strip_reserved_keys_and_drop_other_tenants() -> None:
    hits = [_Hit(0.9, {TENANT_KEY: "a", ID_KEY: 1, "k": "v"}),
            _Hit(0.8, {TENANT_KEY: "b", ID_KEY: 2}), _Hit(0.7, {TENANT_KEY: "a"}),
            _Hit(0.6, None)]
    points = scored_points(hits, "a")
    assert [(p.id, p.score, p.payload) for p in points] == [(1, 0.9, {"k": "v"})]


def test_index_options() -> None:
    opts = index_options(parse_url("qdrant-edge:///q?dim=3&distance=Dot&index=a:keyword"))
    assert (opts.dim, opts.distance, opts.index, opts.explicit_distance) == \
        (3, "dot", "a:keyword", True)
    assert not index_options(parse_url("qdrant-edge:///q")).explicit_distance
    with pytest.raises(ConfigError, match="did you mean 'euclid'"):
        index_options(parse_url("qdrant-edge:///q?distance=euclidean"))
