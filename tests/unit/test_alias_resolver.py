"""AliasResolver: lock file first, then a TTL cache, then the registry."""

from __future__ import annotations

from pathlib import Path

from aios_mesh.lockfile import LockFile
from aios_mesh.ports.registry import ModelRef
from aios_mesh.resolver import AliasResolver
from tests.unit.fakes import StaticRegistry


def _resolver(registry: StaticRegistry, now: list[float], **kw: object) -> AliasResolver:
    async def get() -> StaticRegistry:
        return registry
    return AliasResolver(get, ttl_s=30, clock=lambda: now[0], **kw)  # type: ignore[arg-type]


async def test_cache_answers_until_the_ttl_then_the_registry_does() -> None:
    registry, now = StaticRegistry({"m@champion": "3"}), [0.0]
    resolver = _resolver(registry, now)
    assert resolver.cached("m@champion") is None  # never asked yet
    assert (await resolver.resolve("m@champion")).version == "3"
    registry.versions["m@champion"] = "4"
    now[0] = 29.9
    hit = resolver.cached("m@champion")
    assert hit is not None and hit.version == "3" and registry.calls == 1
    assert (await resolver.resolve("m@champion")).version == "3"
    now[0] = 30.0
    assert resolver.cached("m@champion") is None  # stale: only the registry can tell
    assert (await resolver.resolve("m@champion")).version == "4" and registry.calls == 2
    resolver.invalidate("m@champion")
    assert resolver.cached("m@champion") is None


async def test_the_lock_file_pins_without_asking(tmp_path: Path) -> None:
    lock = LockFile()
    lock.models["m@champion"] = ModelRef("m", "2", alias="champion")
    path = tmp_path / "aios-mesh.lock"
    lock.write(path)
    registry = StaticRegistry({"m@champion": "3"})
    resolver = _resolver(registry, [0.0], lock_path=path)
    pinned = resolver.cached("m@champion")
    assert pinned is not None and pinned.version == "2"
    assert (await resolver.resolve("m@champion")).version == "2" and registry.calls == 0
