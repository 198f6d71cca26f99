"""aios-mesh: intent-first AI capabilities as a shared system layer.

``import aios_mesh`` is light: no backend SDK is imported until its adapter is used.

    from aios_mesh import Mesh, capability

What is exported here is the public API: the mesh and its three parts (``Ports``,
``Pipeline`` with its steps, ``Recorder`` with its processors), capability specs, the
decision record and the error tree. Everything else is internal and may change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aios_mesh.errors import (
    BackendTimeout,
    BackendUnavailable,
    CallCancelled,
    CircuitOpen,
    ConfigError,
    ContextWindowExceeded,
    FeatureNotSupported,
    Forbidden,
    IntegrityError,
    InvalidInput,
    InvalidOutput,
    MeshError,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    PolicyDenied,
    QuotaExceeded,
    StepFailed,
    Unauthenticated,
    UnknownCapability,
    UnknownTenant,
)

if TYPE_CHECKING:
    from aios_mesh.capabilities import SLO, Canary, CapabilitySpec, Fallback, Price, capability
    from aios_mesh.config import MeshConfig, load_config
    from aios_mesh.context import CallContext
    from aios_mesh.generation import ChatInput, ChatMessage, Generation, TextOutput
    from aios_mesh.mesh import Mesh
    from aios_mesh.pipeline.admission import Admission, ConcurrencyLimit
    from aios_mesh.pipeline.call import Call
    from aios_mesh.pipeline.fair import FairScheduler
    from aios_mesh.pipeline.runner import Pipeline, Step, StepBase
    from aios_mesh.ports.container import Ports
    from aios_mesh.record import DecisionRecord, Outcome
    from aios_mesh.recorder import Recorded, Recorder, RecordProcessor
    from aios_mesh.recorder.processors import Deferred
    from aios_mesh.result import Result

__version__ = "0.1.0"

__all__ = [
    "SLO",
    "Admission",
    "BackendTimeout",
    "BackendUnavailable",
    "Call",
    "CallCancelled",
    "CallContext",
    "Canary",
    "CapabilitySpec",
    "ChatInput",
    "ChatMessage",
    "CircuitOpen",
    "ConcurrencyLimit",
    "ConfigError",
    "ContextWindowExceeded",
    "DecisionRecord",
    "Deferred",
    "FairScheduler",
    "Fallback",
    "FeatureNotSupported",
    "Forbidden",
    "Generation",
    "IntegrityError",
    "InvalidInput",
    "InvalidOutput",
    "Mesh",
    "MeshConfig",
    "MeshError",
    "NotFound",
    "Outcome",
    "Overloaded",
    "PayloadTooLarge",
    "Pipeline",
    "PolicyDenied",
    "Ports",
    "Price",
    "QuotaExceeded",
    "RecordProcessor",
    "Recorded",
    "Recorder",
    "Result",
    "Step",
    "StepBase",
    "StepFailed",
    "TextOutput",
    "Unauthenticated",
    "UnknownCapability",
    "UnknownTenant",
    "__version__",
    "capability",
    "load_config",
]

_LAZY = {
    "SLO": "aios_mesh.capabilities",
    "Canary": "aios_mesh.capabilities",
    "CapabilitySpec": "aios_mesh.capabilities",
    "Fallback": "aios_mesh.capabilities",
    "Price": "aios_mesh.capabilities",
    "capability": "aios_mesh.capabilities",
    "ChatInput": "aios_mesh.generation",
    "ChatMessage": "aios_mesh.generation",
    "Generation": "aios_mesh.generation",
    "TextOutput": "aios_mesh.generation",
    "MeshConfig": "aios_mesh.config",
    "load_config": "aios_mesh.config",
    "CallContext": "aios_mesh.context",
    "Mesh": "aios_mesh.mesh",
    "Admission": "aios_mesh.pipeline.admission",
    "ConcurrencyLimit": "aios_mesh.pipeline.admission",
    "FairScheduler": "aios_mesh.pipeline.fair",
    "Call": "aios_mesh.pipeline.call",
    "Pipeline": "aios_mesh.pipeline.runner",
    "Step": "aios_mesh.pipeline.runner",
    "StepBase": "aios_mesh.pipeline.runner",
    "Ports": "aios_mesh.ports.container",
    "DecisionRecord": "aios_mesh.record",
    "Outcome": "aios_mesh.record",
    "Recorded": "aios_mesh.recorder",
    "RecordProcessor": "aios_mesh.recorder",
    "Recorder": "aios_mesh.recorder",
    "Deferred": "aios_mesh.recorder.processors",
    "Result": "aios_mesh.result",
    # deprecated (goes in 0.2): warns on every access, never cached; not in __all__
    "CapabilityNotSupported": "aios_mesh.errors",
}


def __getattr__(name: str) -> Any:
    # Lazy so `import aios_mesh` costs little; the mesh pulls pydantic, OTel and structlog.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aios_mesh' has no attribute {name!r}")
    if module == "aios_mesh.errors":  # a deprecated error name
        from aios_mesh.errors import _deprecated

        return _deprecated(name, __name__)
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
