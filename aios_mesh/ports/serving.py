"""Serving port: run a model on inputs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, runtime_checkable

from aios_mesh.errors import FeatureNotSupported, InvalidOutput
from aios_mesh.ports.base import Feature
from aios_mesh.ports.registry import ModelRef

__all__ = ["BatchPredictor", "PerItemServing", "Prediction", "Serving", "ServingBase", "Usage",
           "as_prediction"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Resources one call consumed; drives cost accounting and quota settlement."""

    calls: int = 1
    #: every token the call consumed (for a generation: ``input_tokens + output_tokens``)
    tokens: int = 0
    gpu_seconds: float = 0.0
    #: prompt tokens a generation read and completion tokens it wrote (0 for other models)
    input_tokens: int = 0
    output_tokens: int = 0
    #: the token counts are the mesh's estimate (the backend reported no usage)
    estimated: bool = False

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.calls + other.calls, self.tokens + other.tokens,
                     self.gpu_seconds + other.gpu_seconds,
                     self.input_tokens + other.input_tokens,
                     self.output_tokens + other.output_tokens,
                     self.estimated or other.estimated)

    @classmethod
    def of_tokens(cls, input_tokens: int, output_tokens: int, *,
                  estimated: bool = False) -> Usage:
        """One generation's usage from its prompt and completion token counts."""
        return cls(calls=1, tokens=input_tokens + output_tokens, input_tokens=input_tokens,
                   output_tokens=output_tokens, estimated=estimated)

    def to_dict(self) -> dict[str, int | float | bool]:
        """As written into decision records (token split only where there is one)."""
        doc: dict[str, int | float | bool] = {"calls": self.calls, "tokens": self.tokens,
                                              "gpu_seconds": self.gpu_seconds}
        if self.input_tokens or self.output_tokens:
            doc["input_tokens"] = self.input_tokens
            doc["output_tokens"] = self.output_tokens
            doc["estimated"] = self.estimated
        return doc


@dataclass(frozen=True, slots=True)
class Prediction:
    """One model answer: the output document, an optional confidence and the usage."""

    output: dict[str, Any]
    confidence: float | None = None
    usage: Usage = field(default_factory=Usage)


#: The prediction shape of in-process models (registered callables, model loaders, the
#: BentoML and Triton model servers): a list of input documents in, one answer per input out,
#: in order. An answer is a :class:`Prediction` or a mapping (a pydantic model is accepted at
#: run time too); :func:`as_prediction` normalises it.
BatchPredictor: TypeAlias = Callable[[list[dict[str, Any]]],
                                     Sequence[Prediction | Mapping[str, Any]]]


def as_prediction(value: Prediction | Mapping[str, Any] | Any) -> Prediction:
    """Normalise a predictor's answer: a Prediction, a dict (``confidence`` key is lifted), or a
    pydantic model."""
    if isinstance(value, Prediction):
        return value
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    if not isinstance(value, Mapping):
        raise InvalidOutput(f"model returned {type(value).__name__}, expected a mapping",
                            hint="return a dict, a pydantic model or a Prediction")
    doc = dict(value)
    conf = doc.get("confidence")
    return Prediction(doc, confidence=float(conf) if isinstance(conf, int | float) else None)


@runtime_checkable
class Serving(Protocol):
    """Runs a resolved model.

    ``infer_batch`` is the primitive; ``infer`` is one item of it. Adapters that can stream
    declare :attr:`Feature.STREAMING` and implement ``stream``.
    """

    features: frozenset[Feature]

    async def infer(self, model: ModelRef, payload: Mapping[str, Any], *,
                    timeout: float | None = None) -> Prediction: ...

    async def infer_batch(self, model: ModelRef, payloads: Sequence[Mapping[str, Any]], *,
                          timeout: float | None = None) -> list[Prediction]: ...

    def stream(self, model: ModelRef, payload: Mapping[str, Any], *,
               timeout: float | None = None) -> AsyncIterator[dict[str, Any]]: ...

    async def aclose(self) -> None: ...


class ServingBase:
    """Conveniences on the one primitive ``infer_batch``: ``infer`` is a batch of one, and
    ``stream`` raises :class:`FeatureNotSupported` unless a subclass streams."""

    features: frozenset[Feature] = frozenset({Feature.BATCH})

    async def infer_batch(self, model: ModelRef, payloads: Sequence[Mapping[str, Any]], *,
                          timeout: float | None = None) -> list[Prediction]:
        raise NotImplementedError

    async def infer(self, model: ModelRef, payload: Mapping[str, Any], *,
                    timeout: float | None = None) -> Prediction:
        return (await self.infer_batch(model, [payload], timeout=timeout))[0]

    def stream(self, model: ModelRef, payload: Mapping[str, Any], *,
               timeout: float | None = None) -> AsyncIterator[dict[str, Any]]:
        raise FeatureNotSupported(f"{type(self).__name__} cannot stream",
                                  hint="use invoke(), or a backend that declares STREAMING")

    async def aclose(self) -> None:
        return None


class PerItemServing(ServingBase):
    """For backends whose primitive is one item (an LLM's chat completion): ``infer`` is
    implemented, and a batch is its items run concurrently (the backend queues or batches
    them on its side)."""

    async def infer(self, model: ModelRef, payload: Mapping[str, Any], *,
                    timeout: float | None = None) -> Prediction:
        raise NotImplementedError

    async def infer_batch(self, model: ModelRef, payloads: Sequence[Mapping[str, Any]], *,
                          timeout: float | None = None) -> list[Prediction]:
        return list(await asyncio.gather(*(self.infer(model, p, timeout=timeout)
                                           for p in payloads)))
