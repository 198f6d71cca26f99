"""What every port shares: declared features and the check that enforces them."""

from __future__ import annotations

import enum
from collections.abc import Iterable

from aios_mesh.errors import FeatureNotSupported

__all__ = ["Feature", "require_feature"]


class Feature(enum.StrEnum):
    """Optional abilities an adapter declares in its ``features`` frozenset."""

    # serving
    BATCH = "batch"
    STREAMING = "streaming"
    ASYNC_NATIVE = "async_native"
    #: ``infer``/``infer_batch`` raise :class:`~aios_mesh.errors.BackendTimeout` once
    #: ``timeout`` seconds have passed, so the pipeline sets no timer of its own.
    DEADLINE = "deadline"
    #: an LLM: takes a :data:`~aios_mesh.generation.GenerationRequest` as its payload
    GENERATION = "generation"
    # retrieval
    FILTERED_QUERY = "filtered_query"
    SNAPSHOT = "snapshot"
    # events
    CONSUMER_GROUPS = "consumer_groups"
    DEAD_LETTER = "dead_letter"
    EXACTLY_ONCE = "exactly_once"
    DURABLE = "durable"
    # policy
    OBLIGATIONS = "obligations"
    # audit
    FSYNC = "fsync"
    # registry
    ALIASES = "aliases"
    #: versioned prompts with aliases (:class:`~aios_mesh.ports.registry.PromptRegistry`)
    PROMPTS = "prompts"
    #: JSON documents stored with a model version (drift references, gate reports):
    #: :class:`~aios_mesh.ports.registry.ModelDocuments`
    DOCUMENTS = "documents"


def require_feature(adapter: object, feature: Feature, *, what: str | None = None) -> None:
    """Raise :class:`FeatureNotSupported` unless ``adapter`` declares ``feature``."""
    features: Iterable[Feature] = getattr(adapter, "features", frozenset())
    if feature not in features:
        name = type(adapter).__name__
        raise FeatureNotSupported(
            f"{name} does not support {what or feature.value!r}",
            hint=f"choose a backend whose adapter declares Feature.{feature.name}",
            adapter=name, feature=feature.value,
        )
