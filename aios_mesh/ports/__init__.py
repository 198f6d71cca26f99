"""Ports: the small protocols the pipeline calls, one module per port.

Each port is a :class:`typing.Protocol` with a handful of async primitives, a ``features``
frozenset the adapter declares, and ``aclose()``. Adapters live in ``aios_mesh.embedded``
(pure-Python defaults) and ``adapters/`` (one package per backend engine or server).
"""

from aios_mesh.ports.audit import AuditEntry, AuditLog, VerifyProblem, VerifyReport
from aios_mesh.ports.base import Feature, require_feature
from aios_mesh.ports.events import Delivery, Event, EventBus
from aios_mesh.ports.lineage import Lineage
from aios_mesh.ports.orchestrator import Execution, ExecutionStatus, Orchestrator
from aios_mesh.ports.policy import Decision, Obligations, Policy, PolicyInput
from aios_mesh.ports.quota import QuotaLimits, QuotaStore, Reservation
from aios_mesh.ports.registry import ModelRef, ModelRegistry
from aios_mesh.ports.retrieval import Condition, Filter, Point, Retrieval, ScoredPoint
from aios_mesh.ports.serving import Prediction, Serving, Usage

__all__ = [
    "AuditEntry",
    "AuditLog",
    "Condition",
    "Decision",
    "Delivery",
    "Event",
    "EventBus",
    "Execution",
    "ExecutionStatus",
    "Feature",
    "Filter",
    "Lineage",
    "ModelRef",
    "ModelRegistry",
    "Obligations",
    "Orchestrator",
    "Point",
    "Policy",
    "PolicyInput",
    "Prediction",
    "QuotaLimits",
    "QuotaStore",
    "Reservation",
    "Retrieval",
    "ScoredPoint",
    "Serving",
    "Usage",
    "VerifyProblem",
    "VerifyReport",
    "require_feature",
]
