"""aios-mesh: intent-first AI capabilities as a shared system layer.

``import aios_mesh`` is light: no backend SDK is imported until its adapter is used.

    from aios_mesh import Mesh, capability
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aios_mesh.errors import (
    BackendTimeout,
    BackendUnavailable,
    CircuitOpen,
    ConfigError,
    FeatureNotSupported,
    IntegrityError,
    InvalidInput,
    InvalidOutput,
    MeshError,
    NotFound,
    PayloadTooLarge,
    PolicyDenied,
    QuotaExceeded,
    UnknownCapability,
    UnknownTenant,
)

if TYPE_CHECKING:
    from aios_mesh.capabilities import SLO, CapabilitySpec, Fallback, Price, capability
    from aios_mesh.config import MeshConfig, load_config
    from aios_mesh.mesh import Mesh, Result
    from aios_mesh.record import DecisionRecord

__version__ = "0.1.0"

__all__ = [
    "SLO",
    "BackendTimeout",
    "BackendUnavailable",
    "CapabilitySpec",
    "CircuitOpen",
    "ConfigError",
    "DecisionRecord",
    "Fallback",
    "FeatureNotSupported",
    "IntegrityError",
    "InvalidInput",
    "InvalidOutput",
    "Mesh",
    "MeshConfig",
    "MeshError",
    "NotFound",
    "PayloadTooLarge",
    "PolicyDenied",
    "Price",
    "QuotaExceeded",
    "Result",
    "UnknownCapability",
    "UnknownTenant",
    "__version__",
    "capability",
    "load_config",
]

_LAZY = {
    "SLO": "aios_mesh.capabilities",
    "CapabilitySpec": "aios_mesh.capabilities",
    "Fallback": "aios_mesh.capabilities",
    "Price": "aios_mesh.capabilities",
    "capability": "aios_mesh.capabilities",
    "MeshConfig": "aios_mesh.config",
    "load_config": "aios_mesh.config",
    "Mesh": "aios_mesh.mesh",
    "Result": "aios_mesh.mesh",
    "DecisionRecord": "aios_mesh.record",
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
