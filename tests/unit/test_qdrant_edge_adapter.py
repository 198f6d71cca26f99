"""Qdrant Edge adapter specifics beyond the conformance suite (real engine, no mocks)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path

import pytest
from aios_mesh_qdrant_edge import ID_KEY, TENANT_KEY, EdgeRetrieval

from aios_mesh.backends import load_adapter, parse_url
from aios_mesh.errors import (
    BackendUnavailable,
    ConfigError,
    IntegrityError,
    InvalidInput,
    MeshError,
)
from aios_mesh.ports.base import Feature
from aios_mesh.ports.retrieval import Point


def edge(tmp_path: Path, url: str = "qdrant-edge:///qdrant", **options: object) -> EdgeRetrieval:
    adapter = load_adapter("retrieval", url, base_dir=tmp_path, **options)
    assert isinstance(adapter, EdgeRetrieval)
    return adapter


def v(*xs: float, dim: int = 4) -> list[float]:
    return [*xs, *([0.0] * (dim - len(xs)))]


def test_features() -> None:
    assert EdgeRetrieval.features == {Feature.FILTERED_QUERY, Feature.SNAPSHOT, Feature.DURABLE}
    assert (TENANT_KEY, ID_KEY) == ("_tenant", "_mesh_id")


def test_from_url_options(tmp_path: Path) -> None:
    a = edge(tmp_path, "qdrant-edge:///idx?dim=16&distance=Dot")
    assert (a.root, a.dim, a.distance) == (tmp_path / "idx", 16, "dot")
    b = edge(tmp_path, "qdrant-edge:///idx?dim=16", dim=8, distance="euclid")  # kwargs win
    assert (b.dim, b.distance) == (8, "euclid")
    c = edge(tmp_path, f"qdrant-edge:///{tmp_path}/abs")  # '////abs' form
    assert c.root == tmp_path / "abs"
    assert edge(tmp_path).dim is None


@pytest.mark.parametrize(("url", "match"), [
    ("qdrant-edge:///q?dims=3", "did you mean 'dim'"),
    ("qdrant-edge:///q?distance=cosin", "did you mean 'cosine'"),
    ("qdrant-edge:///q?dim=abc", "not an integer"),
    ("qdrant-edge:///q?dim=0", "positive"),
    ("qdrant-edge://", "names no path"),
])
def test_from_url_errors(tmp_path: Path, url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        EdgeRetrieval.from_url(parse_url(url), base_dir=tmp_path)
    assert info.value.hint


async def test_layout_on_disk(tmp_path: Path) -> None:
    a = edge(tmp_path)
    await a.upsert("docs", [Point(1, v(1.0))], tenant="t")
    await a.aclose()
    folder = tmp_path / "qdrant" / "docs"
    meta = json.loads((folder / "mesh.json").read_text())
    assert meta["dim"] == 4
    assert meta["distance"] == "cosine"
    assert meta["writes"] == 1
    assert (folder / "shard" / "edge_config.json").is_file()


async def test_declared_dim_is_enforced(tmp_path: Path) -> None:
    a = edge(tmp_path, dim=4)
    with pytest.raises(InvalidInput, match="dim=4"):
        await a.upsert("docs", [Point(1, [1.0, 2.0])], tenant="t")
    await a.upsert("docs", [Point(1, v(1.0))], tenant="t")
    await a.aclose()
    b = edge(tmp_path, dim=8)
    with pytest.raises(ConfigError, match="dim=4") as info:
        await b.query("docs", v(1.0, dim=8), tenant="t")
    assert info.value.hint
    await b.aclose()
    c = edge(tmp_path, distance="dot")
    with pytest.raises(ConfigError, match="distance=cosine"):
        await c.snapshot("docs")
    await c.aclose()
    d = edge(tmp_path)  # nothing declared: takes the collection as it is
    assert len(await d.query("docs", v(1.0), tenant="t")) == 1
    await d.aclose()


@pytest.mark.parametrize("distance", ["cosine", "dot", "euclid"])
async def test_distances_rank_best_first(tmp_path: Path, distance: str) -> None:
    a = edge(tmp_path, distance=distance)
    await a.upsert("c", [Point(1, v(0.0, 1.0)), Point(2, v(1.0, 0.0)), Point(3, v(0.8, 0.6))],
                   tenant="t")
    hits = await a.query("c", v(1.0, 0.0), tenant="t")
    assert [h.id for h in hits] == [2, 3, 1]
    scores = [h.score for h in hits]
    assert scores == (sorted(scores) if distance == "euclid" else sorted(scores, reverse=True))
    await a.aclose()


async def test_snapshot_ids_are_deterministic(tmp_path: Path) -> None:
    ids = []
    for folder in ("one", "two"):
        a = edge(tmp_path / folder)
        await a.upsert("docs", [Point(1, v(1.0), {"k": 1}), Point("x", v(0.0, 1.0))],
                       tenant="t")
        await a.delete("docs", [1], tenant="t")
        ids.append(await a.snapshot("docs"))
        await a.aclose()
    assert ids[0] == ids[1]
    assert re.fullmatch(r"2-[0-9a-f]{12}", ids[0])
    b = edge(tmp_path / "three")
    await b.upsert("docs", [Point(1, v(1.0), {"k": 2}), Point("x", v(0.0, 1.0))], tenant="t")
    await b.delete("docs", [1], tenant="t")
    assert await b.snapshot("docs") != ids[0]  # same counter, different content
    await b.aclose()


async def test_deleting_nothing_keeps_the_snapshot(tmp_path: Path) -> None:
    a = edge(tmp_path)
    await a.upsert("docs", [Point(1, v(1.0))], tenant="acme")
    snap = await a.snapshot("docs")
    await a.delete("docs", [2, "nope"], tenant="acme")
    await a.delete("docs", [1], tenant="globex")  # acme's id, other tenant: no-op
    assert await a.snapshot("docs") == snap
    await a.aclose()


async def test_uuid_ids_are_canonical(tmp_path: Path) -> None:
    a = edge(tmp_path)
    uid = uuid.uuid4()
    await a.upsert("docs", [Point(str(uid).upper(), v(1.0))], tenant="t")
    hits = await a.query("docs", v(1.0), tenant="t")
    assert [h.id for h in hits] == [str(uid)]
    await a.delete("docs", [str(uid)], tenant="t")
    assert await a.query("docs", v(1.0), tenant="t") == []
    await a.aclose()


async def test_arbitrary_string_and_large_ids(tmp_path: Path) -> None:
    a = edge(tmp_path)
    await a.upsert("docs", [Point("invoice-42", v(1.0)), Point(2**64 - 1, v(0.0, 1.0)),
                            Point("1", v(0.0, 0.0, 1.0)), Point(1, v(0.0, 0.0, 0.0, 1.0))],
                   tenant="t")
    hits = await a.query("docs", v(1.0), tenant="t")
    assert sorted(map(repr, (h.id for h in hits))) == sorted(
        map(repr, ["invoice-42", 2**64 - 1, "1", 1]))
    with pytest.raises(InvalidInput):
        await a.upsert("docs", [Point(2**64, v(1.0))], tenant="t")
    await a.aclose()


async def test_callers_payload_is_not_mutated(tmp_path: Path) -> None:
    a = edge(tmp_path)
    payload = {"k": "v"}
    await a.upsert("docs", [Point(1, v(1.0), payload)], tenant="t")
    assert payload == {"k": "v"}
    await a.aclose()


async def test_second_adapter_on_an_open_folder_is_refused(tmp_path: Path) -> None:
    a = edge(tmp_path)
    await a.upsert("docs", [Point(1, v(1.0))], tenant="t")
    b = edge(tmp_path)
    with pytest.raises(BackendUnavailable, match="open") as info:
        await b.query("docs", v(1.0), tenant="t")
    assert "another adapter" in (info.value.hint or "")
    await b.aclose()
    await a.aclose()


async def test_closed_adapter_refuses_calls(tmp_path: Path) -> None:
    a = edge(tmp_path)
    await a.upsert("docs", [Point(1, v(1.0))], tenant="t")
    await a.aclose()
    with pytest.raises(MeshError, match="closed"):
        await a.query("docs", v(1.0), tenant="t")


async def test_bulk_upsert_runs_off_the_loop_and_counts_one_write(tmp_path: Path) -> None:
    a = edge(tmp_path)
    dim = 384
    points = [Point(i, [float((i * 7 + j) % 13) + 1.0 for j in range(dim)], {"i": i})
              for i in range(300)]
    await a.upsert("big", points, tenant="t")
    assert (await a.snapshot("big")).startswith("1-")
    hits = await a.query("big", points[5].vector, tenant="t", limit=1)
    assert hits[0].score == pytest.approx(1.0)  # ids 5, 18, 31 ... share this vector
    assert await a.optimize("big") in (True, False)
    assert len(await a.query("big", points[5].vector, tenant="t", limit=300)) == 300
    await a.aclose()


async def test_concurrent_writes_are_all_counted(tmp_path: Path) -> None:
    a = edge(tmp_path)
    await asyncio.gather(*(a.upsert("docs", [Point(i, v(1.0, float(i)))], tenant="t")
                           for i in range(20)))
    assert (await a.snapshot("docs")).startswith("20-")
    assert len(await a.query("docs", v(1.0), tenant="t", limit=50)) == 20
    await a.aclose()
    b = edge(tmp_path)
    assert (await b.snapshot("docs")).startswith("20-")
    await b.aclose()


async def test_corrupt_metadata_is_an_integrity_error(tmp_path: Path) -> None:
    a = edge(tmp_path)
    await a.upsert("docs", [Point(1, v(1.0))], tenant="t")
    await a.aclose()
    (tmp_path / "qdrant" / "docs" / "mesh.json").write_text("{not json")
    b = edge(tmp_path)
    with pytest.raises(IntegrityError) as info:
        await b.query("docs", v(1.0), tenant="t")
    assert info.value.hint
    await b.aclose()


async def test_payload_keys_look_alike_reserved_are_allowed(tmp_path: Path) -> None:
    a = edge(tmp_path)
    payload = {"_id": "mongo-style", "tenant": "x", "_tenants": 1, "nested": {"_tenant": "y"}}
    await a.upsert("docs", [Point(1, v(1.0), payload)], tenant="t")
    assert (await a.query("docs", v(1.0), tenant="t"))[0].payload == payload
    await a.aclose()


def test_index_option_parsing(tmp_path: Path) -> None:
    a = edge(tmp_path, "qdrant-edge:///q?index=category:keyword, price:Float,meta.lang:keyword")
    assert a.indexes == {"category": "keyword", "price": "float", "meta.lang": "keyword"}
    b = edge(tmp_path, index={"n": "integer", "ok": "bool"})
    assert b.indexes == {"n": "integer", "ok": "bool"}
    for bad, match in (("category", "FIELD:TYPE"), ("x:keywrd", "did you mean 'keyword'"),
                       ("_tenant:keyword", "reserved"), ('"_mesh_id":integer', "reserved")):
        with pytest.raises(ConfigError, match=match):
            edge(tmp_path, index=bad)


async def test_declared_indexes_exist_and_filters_stay_correct(tmp_path: Path) -> None:
    from aios_mesh.ports.retrieval import Condition, Filter

    a = edge(tmp_path, index="category:keyword,price:float")
    await a.upsert("docs", [Point(i, v(1.0, i / 10), {"category": f"c{i % 3}", "price": i * 1.5})
                            for i in range(12)], tenant="t")
    flt = Filter(must=(Condition("category", "eq", "c1"),
                       Condition("price", "range", gte=3.0, lte=12.0)))
    assert [h.id for h in await a.query("docs", v(1.0), tenant="t", filter=flt)] == [4, 7]
    schema = a._collections["docs"].shard.info().payload_schema
    assert {"_tenant", "category", "price"} <= set(schema)
    await a.aclose()
    b = edge(tmp_path, index="category:keyword,price:float,extra:integer")  # added on reopen
    assert [h.id for h in await b.query("docs", v(1.0), tenant="t", filter=flt)] == [4, 7]
    assert "extra" in b._collections["docs"].shard.info().payload_schema
    await b.aclose()
