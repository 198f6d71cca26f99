"""Fakes for unit tests of core pipeline logic only (never for proving an adapter)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aios_mesh.errors import BackendUnavailable
from aios_mesh.ports.base import Feature
from aios_mesh.ports.policy import Decision, Obligations, PolicyInput
from aios_mesh.ports.registry import ModelRef
from aios_mesh.ports.serving import Prediction, ServingBase


class ScriptedServing(ServingBase):
    """Answers from a script: each entry is an exception to raise or a dict to return;
    the last entry repeats. Records every payload it received."""

    def __init__(self, *script: Any) -> None:
        self.script = list(script) or [{"label": "ok", "confidence": 0.99}]
        self.received: list[dict[str, Any]] = []
        self.calls = 0

    async def infer_batch(self, model: ModelRef, payloads: Sequence[Mapping[str, Any]], *,
                          timeout: float | None = None) -> list[Prediction]:
        out = []
        for p in payloads:
            self.received.append(dict(p))
            step = self.script[min(self.calls, len(self.script) - 1)]
            self.calls += 1
            if isinstance(step, BaseException):
                raise step
            if isinstance(step, type) and issubclass(step, BaseException):
                raise step("scripted failure")
            if callable(step):
                step = step(p)
            out.append(Prediction(dict(step), confidence=step.get("confidence")))
        return out


class DownServing(ScriptedServing):
    def __init__(self) -> None:
        super().__init__(BackendUnavailable("connection refused"))


class StaticPolicy:
    """Allows unless the tenant is in ``deny``; obligations per tenant."""

    features = frozenset({Feature.OBLIGATIONS})

    def __init__(self, deny: set[str] | None = None,
                 obligations: Mapping[str, Obligations] | None = None) -> None:
        self.deny = deny or set()
        self.obligations = dict(obligations or {})
        self.calls = 0

    @property
    def bundle_hash(self) -> str:
        return "static"

    async def decide(self, path: str, input: PolicyInput) -> Decision:
        self.calls += 1
        allow = input.tenant not in self.deny
        return Decision(allow, None if allow else f"tenant {input.tenant} is blocked",
                        self.obligations.get(input.tenant, Obligations()), path, "static")

    async def aclose(self) -> None:
        return None


class StaticRegistry:
    features = frozenset({Feature.ALIASES})

    def __init__(self, versions: Mapping[str, str]) -> None:
        self.versions = dict(versions)
        self.calls = 0

    async def resolve(self, spec: str) -> ModelRef:
        from aios_mesh.errors import NotFound
        from aios_mesh.ports.registry import parse_model_spec

        self.calls += 1
        name, alias, version = parse_model_spec(spec)
        if alias is not None:
            key = f"{name}@{alias}"
            if key not in self.versions:
                raise NotFound(f"no alias {key}")
            return ModelRef(name, self.versions[key], source=f"models:/{name}", alias=alias)
        return ModelRef(name, version or "1", source=f"models:/{name}")

    async def register(self, name: str, source: str, *, run_id: str | None = None,
                       tags: dict[str, str] | None = None) -> ModelRef:
        raise NotImplementedError

    async def set_alias(self, name: str, alias: str, version: str) -> None:
        self.versions[f"{name}@{alias}"] = version

    async def aclose(self) -> None:
        return None
