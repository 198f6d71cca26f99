"""The one error tree of aios-mesh.

Every failure a caller can see is a :class:`MeshError`. Adapters translate their backend's
native exceptions at the boundary (``raise BackendUnavailable(...) from exc``) so business
code never catches a backend SDK's exception type::

    MeshError
    ├── ConfigError                  bad config file, URL, scheme or option
    ├── InvalidInput                 payload fails its schema / is malformed
    │   └── PayloadTooLarge          payload over the configured byte limit
    ├── InvalidOutput                the backend answered something off-schema
    ├── PolicyDenied                 the policy said no (carries the policy's reason)
    ├── QuotaExceeded                a tenant budget or rate limit is spent
    ├── BackendUnavailable  (retry)  connection refused, 5xx, broker down
    ├── BackendTimeout      (retry)  the call ran past its SLO timeout
    ├── CircuitOpen                  the breaker for that backend is open
    ├── NotFound                     unknown capability, tenant, model alias, point ...
    │   ├── UnknownCapability
    │   └── UnknownTenant
    ├── CapabilityNotSupported       the adapter lacks a declared feature
    └── IntegrityError               tampered audit chain, failed durable write

``retryable`` says whether the retry step may try again; every error carries a ``hint``
telling the reader what to do next.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BackendTimeout",
    "BackendUnavailable",
    "CapabilityNotSupported",
    "CircuitOpen",
    "ConfigError",
    "IntegrityError",
    "InvalidInput",
    "InvalidOutput",
    "MeshError",
    "NotFound",
    "PayloadTooLarge",
    "PolicyDenied",
    "QuotaExceeded",
    "UnknownCapability",
    "UnknownTenant",
]


class MeshError(Exception):
    """Base of every error aios-mesh raises.

    Args:
        message: what went wrong, in one sentence.
        hint: what the reader should do about it.
        details: structured context (never secret or PII values).
    """

    retryable: ClassVar[bool] = False
    code: ClassVar[str] = "mesh_error"

    def __init__(self, message: str, *, hint: str | None = None, **details: Any) -> None:
        self.message = message
        self.hint = hint
        self.details = details
        super().__init__(message if hint is None else f"{message} — {hint}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary, as written into decision records."""
        return {"type": type(self).__name__, "code": self.code, "message": self.message,
                "retryable": self.retryable}


class ConfigError(MeshError):
    """The configuration (file, URL, environment variable, option) is invalid."""

    code = "config_error"


class InvalidInput(MeshError):
    """The payload is malformed or does not match the capability's input schema."""

    code = "invalid_input"


class PayloadTooLarge(InvalidInput):
    """The payload is larger than the configured ``max_payload_bytes``."""

    code = "payload_too_large"


class InvalidOutput(MeshError):
    """The backend answered with something that does not match the output schema."""

    code = "invalid_output"


class PolicyDenied(MeshError):
    """The policy decided against the call; ``reason`` is the policy's own words."""

    code = "policy_denied"

    def __init__(self, message: str, *, reason: str | None = None, policy: str | None = None,
                 hint: str | None = None, **details: Any) -> None:
        self.reason = reason
        self.policy = policy
        super().__init__(message, hint=hint, reason=reason, policy=policy, **details)


class QuotaExceeded(MeshError):
    """A tenant's budget (calls, tokens, cost, GPU-seconds) or rate limit is spent."""

    code = "quota_exceeded"


class BackendUnavailable(MeshError):
    """The backend could not be reached or failed; safe to retry."""

    retryable = True
    code = "backend_unavailable"


class BackendTimeout(MeshError):
    """The backend did not answer within the capability's timeout."""

    retryable = True
    code = "backend_timeout"


class CircuitOpen(MeshError):
    """The circuit breaker for the backend is open; calls fail fast until it half-opens."""

    code = "circuit_open"


class NotFound(MeshError):
    """A named thing (capability, tenant, model alias, point, review item) does not exist."""

    code = "not_found"


class UnknownCapability(NotFound):
    """No capability is registered under that name."""

    code = "unknown_capability"


class UnknownTenant(NotFound):
    """The tenant is not declared in the mesh configuration."""

    code = "unknown_tenant"


class CapabilityNotSupported(MeshError):
    """The selected adapter does not declare a feature the call needs."""

    code = "capability_not_supported"


class IntegrityError(MeshError):
    """A durable store is corrupt or could not be written (audit chain, outbox)."""

    code = "integrity_error"
