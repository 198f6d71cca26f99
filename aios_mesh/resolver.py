"""Model- and prompt-alias resolution with a TTL cache, pinned by the lock file when one
exists."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aios_mesh.backends import load_adapter
from aios_mesh.errors import ConfigError, FeatureNotSupported, MeshError
from aios_mesh.generation.prompt import is_prompt_uri, parse_prompt_uri
from aios_mesh.lockfile import DefinitionPin, LockFile, PromptPin
from aios_mesh.ports.prompts import template_sha256
from aios_mesh.ports.registry import (
    ModelRef,
    ModelRegistry,
    PromptRef,
    PromptRegistry,
    parse_model_spec,
)

if TYPE_CHECKING:
    from aios_mesh.capabilities import CapabilitySpec

__all__ = ["AliasResolver", "prompt_specs", "resolve_on"]


def prompt_specs(specs: Iterable[CapabilitySpec]) -> list[str]:
    """The registered prompts (``name@alias``) the capabilities name: each generation's
    ``generate.prompt`` and a canary's candidate ``prompt`` where there is one — what
    ``aios-mesh lock`` pins beside the models."""
    out: set[str] = set()
    for spec in specs:
        gen = spec.generate
        if gen is not None and gen.prompt is not None and is_prompt_uri(gen.prompt):
            out.add(parse_prompt_uri(gen.prompt))
        candidate = getattr(spec.canary, "prompt", None)  # a candidate prompt, once declared
        if isinstance(candidate, str):
            out.add(parse_prompt_uri(candidate))
    return sorted(out)


class AliasResolver:
    """``name@alias`` → :class:`ModelRef`.

    Order: the lock file (if it pins the spec) → the TTL cache → the registry. A moved alias
    is seen after at most ``ttl_s``; :meth:`invalidate` forgets at once (``promote`` uses it).
    Where the lock pins a spec, :meth:`live` still says what its alias names in the registry
    now (the record's ``model_drift``).
    """

    def __init__(self, registry: Callable[[], Awaitable[ModelRegistry]], *, ttl_s: float = 30.0,
                 lock_path: Path | None = None, clock: Callable[[], float] = time.monotonic,
                 live_timeout_s: float = 2.0) -> None:
        self._registry = registry
        self.ttl_s = ttl_s
        self.live_timeout_s = live_timeout_s
        self._clock = clock
        self._cache: dict[str, tuple[float, ModelRef]] = {}
        self._prompts: dict[str, tuple[float, PromptRef]] = {}
        self._prompt_versions: dict[tuple[str, str], PromptRef] = {}  # versions never change
        self._unreachable: dict[str, float] = {}  # spec → when the registry could not tell
        self.lock_path = lock_path
        self.lock = LockFile.read(lock_path) if lock_path is not None else None

    def cached(self, spec: str) -> ModelRef | None:
        """The answer without asking the registry: pinned by the lock file or fresh in the
        cache; ``None`` when only :meth:`resolve` can tell."""
        if self.lock is not None and spec in self.lock.models:
            return self.lock.models[spec]
        hit = self._cache.get(spec)
        if hit is not None and self._clock() - hit[0] < self.ttl_s:
            return hit[1]
        return None

    async def resolve(self, spec: str) -> ModelRef:
        found = self.cached(spec)
        if found is not None:
            return found
        now = self._clock()
        registry = await self._registry()
        ref = await registry.resolve(spec)
        self._cache[spec] = (now, ref)
        return ref

    async def _prompt_registry(self) -> PromptRegistry:
        registry = await self._registry()
        if not isinstance(registry, PromptRegistry):
            raise FeatureNotSupported(
                f"the model registry ({type(registry).__name__}) keeps no prompts",
                hint="use a registry with a prompt registry (mlflow, memory), or an inline "
                     "template in generate.prompt")
        return registry

    async def resolve_prompt(self, spec: str) -> PromptRef:
        """``name@alias`` of a registered prompt → its version: the lock file's pin (its
        template checked against the pinned digest), else the TTL cache, else the registry.
        """
        pin = self.lock.prompts.get(spec) if self.lock is not None else None
        if pin is not None:
            return await self._pinned_prompt(spec, pin)
        hit = self._prompts.get(spec)
        now = self._clock()
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        ref = await (await self._prompt_registry()).resolve_prompt(spec)
        self._prompts[spec] = (now, ref)
        return ref

    async def _pinned_prompt(self, spec: str, pin: PromptPin) -> PromptRef:
        key = (pin.name, pin.version)
        ref = self._prompt_versions.get(key)
        if ref is None:
            registry = await self._prompt_registry()
            ref = await registry.resolve_prompt(f"{pin.name}/{pin.version}")
            if template_sha256(ref.template) != pin.sha256:
                raise ConfigError(
                    f"the lock file pins prompt {pin.name} version {pin.version} (for {spec}), "
                    "but the registry's version has another template",
                    hint="the registry was rebuilt or is another one: point the mesh at the "
                         "registry the lock was written against, or run `aios-mesh lock` "
                         "to pin what it holds now", prompt=pin.name, version=pin.version)
            self._prompt_versions[key] = ref
        return PromptRef(ref.name, ref.version, ref.template, pin.alias)

    def pinned_prompt(self, spec: str) -> bool:
        """Whether the lock file pins the prompt ``spec``."""
        return self.lock is not None and spec in self.lock.prompts

    def pinned(self, spec: str) -> bool:
        """Whether the lock file pins ``spec``."""
        return self.lock is not None and spec in self.lock.models

    async def live(self, spec: str) -> str | None:
        """The version ``spec`` names in the registry now, whatever the lock file pins (TTL
        cached like :meth:`resolve`). Never raises: None when the registry cannot tell
        (down, slower than ``live_timeout_s``, the alias gone), asked again after ``ttl_s``
        — a pinned call never fails or waits long because the registry moved or is away."""
        now = self._clock()
        hit = self._cache.get(spec)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1].version
        failed = self._unreachable.get(spec)
        if failed is not None and now - failed < self.ttl_s:
            return None
        try:
            registry = await self._registry()
            ref = await asyncio.wait_for(registry.resolve(spec), timeout=self.live_timeout_s)
        except (MeshError, TimeoutError):
            self._unreachable[spec] = now
            return None
        self._unreachable.pop(spec, None)
        self._cache[spec] = (now, ref)
        return ref.version

    def invalidate(self, spec: str | None = None) -> None:
        if spec is None:
            self._cache.clear()
            self._prompts.clear()
            self._unreachable.clear()
        else:
            name = parse_model_spec(spec)[0]
            for key in [k for k in self._cache if parse_model_spec(k)[0] == name]:
                del self._cache[key]
            for key in [k for k in self._unreachable if parse_model_spec(k)[0] == name]:
                del self._unreachable[key]
            for key in [k for k in self._prompts if parse_model_spec(k)[0] == name]:
                del self._prompts[key]

    async def lock_all(self, specs: list[str], indexes: dict[str, str] | None = None,
                       prompts: Sequence[str] = (),
                       definitions: Mapping[str, DefinitionPin] | None = None) -> LockFile:
        """Resolve every model spec and every prompt spec (:func:`prompt_specs`) against the
        registry (ignoring any old lock), add the capability ``definitions`` (an agent's,
        by ``name@version``) and write the lock."""
        registry = await self._registry()
        lock = LockFile(definitions=dict(definitions or {}))
        for spec in sorted(set(specs)):
            lock.models[spec] = await registry.resolve(spec)
        if prompts:
            prompt_registry = await self._prompt_registry()
            for spec in sorted(set(prompts)):
                ref = await prompt_registry.resolve_prompt(spec)
                lock.prompts[spec] = PromptPin.of(ref, parse_model_spec(spec)[1])
        lock.indexes = dict(indexes or {})
        if self.lock_path is not None:
            lock.write(self.lock_path)
        self.lock = lock
        return lock


def resolve_on(registry_url: str, spec: str, *, base_dir: Path) -> ModelRef:
    """Resolve ``spec`` (``name@alias``, ``name/version`` or ``name``) once on the registry at
    ``registry_url``, for commands that hold no mesh (``aios-mesh serve ...``, a model
    server's start-up). The adapter is opened for this one question and closed again. Sync;
    also callable under a running event loop (it then resolves on a worker thread).
    """

    async def resolve() -> ModelRef:
        registry: ModelRegistry = load_adapter("registry", registry_url, base_dir=base_dir)
        try:
            return await registry.resolve(spec)
        finally:
            await registry.aclose()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(resolve())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, resolve()).result()
