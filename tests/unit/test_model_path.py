"""Micro-batching, the response cache and the canary split, on in-process serving."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from aios_mesh import CapabilitySpec, Mesh
from aios_mesh.capabilities import BatchPolicy, Canary, Price
from aios_mesh.config import config_from_mapping
from aios_mesh.embedded.serving import InProcessServing
from tests.unit.fakes import StaticRegistry


class Q(BaseModel):
    text: str


class A(BaseModel):
    text: str
    version: str


class CountingModel:
    def __init__(self, version: str) -> None:
        self.version = version
        self.batches: list[int] = []

    def __call__(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.batches.append(len(batch))
        return [{"text": item["text"].upper(), "version": self.version} for item in batch]


def mesh_with(tmp_path: Path, **spec_kw: Any) -> tuple[Mesh, CountingModel, CountingModel]:
    serving = InProcessServing()
    v3, v4 = CountingModel("3"), CountingModel("4")
    serving.register("m", "3", v3)
    serving.register("m", "4", v4)
    spec = CapabilitySpec(name="echo", input=Q, output=A, model="m@champion",
                          price=Price(per_call=0.01), **spec_kw)
    config = config_from_mapping({"state_dir": str(tmp_path), "tenants": {"a": {}, "b": {}},
                                  "telemetry": {"lineage": False, "decision_events": False}})
    registry = StaticRegistry({"m@champion": "3", "m@challenger": "4"})
    mesh = Mesh(config, capabilities=[spec],
                adapters={"serving": serving, "registry": registry})
    return mesh, v3, v4


async def test_concurrent_calls_coalesce_into_batches(tmp_path: Path) -> None:
    mesh, v3, _ = mesh_with(tmp_path, batch=BatchPolicy(max_size=16, max_wait_ms=20))
    results = await asyncio.gather(*(mesh.ainvoke("echo", {"text": f"t{i}"}, tenant="a")
                                     for i in range(40)))
    assert [r.output.text for r in results] == [f"T{i}" for i in range(40)]
    assert sum(v3.batches) == 40
    assert max(v3.batches) == 16 and len(v3.batches) <= 4  # not 40 single calls
    await mesh.aclose()


async def test_unbatched_capability_calls_one_by_one(tmp_path: Path) -> None:
    mesh, v3, _ = mesh_with(tmp_path)
    await asyncio.gather(*(mesh.ainvoke("echo", {"text": "x"}, tenant="a") for _ in range(5)))
    assert v3.batches == [1, 1, 1, 1, 1]
    await mesh.aclose()


def test_response_cache_per_tenant_and_model_version(tmp_path: Path) -> None:
    mesh, v3, v4 = mesh_with(tmp_path, cache_ttl_s=60)
    with mesh:
        first = mesh.invoke("echo", {"text": "q"}, tenant="a")
        again = mesh.invoke("echo", {"text": "q"}, tenant="a")
        other_tenant = mesh.invoke("echo", {"text": "q"}, tenant="b")
        assert (first.record.cache, again.record.cache, other_tenant.record.cache) == \
            ("miss", "hit", "miss")
        assert again.output == first.output and again.record.cost == 0.0
        assert v3.batches == [1, 1]
        # Moving the alias means a new model version: the old answer is never served.
        mesh.run_sync(mesh.port("registry").set_alias("m", "champion", "4"))
        mesh.resolver.invalidate("m@champion")
        moved = mesh.invoke("echo", {"text": "q"}, tenant="a")
    assert moved.record.cache == "miss" and moved.output.version == "4"
    assert v4.batches == [1]


def test_canary_sends_a_share_of_calls_and_records_the_version(tmp_path: Path) -> None:
    mesh, v3, v4 = mesh_with(tmp_path, canary=Canary(model="m@challenger", percent=30))
    with mesh:
        results = [mesh.invoke("echo", {"text": str(i)}, tenant="a") for i in range(200)]
    canary = [r for r in results if r.record.variant == "canary"]
    assert 35 <= len(canary) <= 85  # ~30% of 200
    assert all(r.record.model["version"] == "4" and r.output.version == "4" for r in canary)
    primary = [r for r in results if r.record.variant == "primary"]
    assert all(r.record.model["version"] == "3" for r in primary)
    assert sum(v3.batches) + sum(v4.batches) == 200


def test_canary_split_is_sticky_per_tenant_and_question(tmp_path: Path) -> None:
    mesh, _, _ = mesh_with(tmp_path, canary=Canary(model="m@challenger", percent=50))
    with mesh:
        for i in range(20):
            sides = {mesh.invoke("echo", {"text": f"q{i}"}, tenant="a").record.variant
                     for _ in range(5)}
            assert len(sides) == 1, f"q{i} met both versions: {sides}"
        by_tenant = {t: [mesh.invoke("echo", {"text": f"q{i}"}, tenant=t).record.variant
                         for i in range(40)] for t in ("a", "b")}
    assert by_tenant["a"] != by_tenant["b"]  # the hash includes the tenant


def test_shadow_compare_promote_and_rollback(tmp_path: Path) -> None:
    from aios_mesh import rollout

    mesh, _, v4 = mesh_with(tmp_path, canary=Canary(model="m@challenger", shadow=True))
    with mesh:
        results = [mesh.invoke("echo", {"text": f"q{i}"}, tenant="a") for i in range(20)]
        assert all(r.record.model["version"] == "3" for r in results)  # callers see primary
        assert mesh.flush()
        assert sum(v4.batches) == 20  # every call was mirrored to the candidate
        report = mesh.run_sync(rollout.compare(mesh, "echo"))
        assert report["shadow"]["calls"] == 20
        assert report["shadow"]["agreement"] == 0.0  # the two versions answer differently
        change = mesh.run_sync(rollout.promote(mesh, "echo", actor="ana"))
        assert (change.from_version, change.to_version) == ("3", "4")
        assert mesh.invoke("echo", {"text": "x"}, tenant="a").record.model["version"] == "4"
        back = mesh.run_sync(rollout.rollback(mesh, "echo", actor="ana"))
        assert (back.from_version, back.to_version) == ("4", "3")
        assert mesh.invoke("echo", {"text": "x"}, tenant="a").record.model["version"] == "3"
        entries = mesh.run_sync(mesh.port("audit").read())
    changes = [e.record for e in entries if e.record.get("kind") == "alias_change"]
    assert [(c["action"], c["actor"]) for c in changes] == [("promote", "ana"),
                                                            ("rollback", "ana")]
    from aios_mesh.embedded.audit import verify_file

    assert verify_file(tmp_path / "audit.jsonl").ok


def test_rollback_without_promote_is_typed(tmp_path: Path) -> None:
    import pytest

    from aios_mesh import NotFound, rollout

    mesh, _, _ = mesh_with(tmp_path)
    with mesh, pytest.raises(NotFound, match="no promote"):
        mesh.run_sync(rollout.rollback(mesh, "echo"))
