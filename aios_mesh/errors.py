"""The one error tree of aios-mesh.

Every failure a caller can see is a :class:`MeshError`. Adapters translate their backend's
native exceptions at the boundary (``raise BackendUnavailable(...) from exc``) so business
code never catches a backend SDK's exception type::

    MeshError
    ├── ConfigError                  bad config file, URL, scheme or option
    ├── InvalidInput                 payload fails its schema / is malformed
    │   ├── PayloadTooLarge          payload over the configured byte limit
    │   └── ContextWindowExceeded    a prompt + max_tokens over the model's context window
    ├── InvalidOutput                the backend answered something off-schema
    ├── PolicyDenied                 the policy said no (carries the policy's reason)
    ├── QuotaExceeded                a tenant budget or rate limit is spent
    ├── Overloaded                   admission shed the call: its queue wait would break the SLO
    ├── BackendUnavailable  (retry)  connection refused, 5xx, broker down
    ├── BackendTimeout      (retry)  the call ran past its SLO timeout
    ├── CircuitOpen                  the breaker for that backend is open
    ├── NotFound                     unknown capability, tenant, model alias, point ...
    │   ├── UnknownCapability
    │   └── UnknownTenant
    ├── FeatureNotSupported          the adapter lacks a declared feature (streaming ...)
    ├── IntegrityError               tampered audit chain, failed durable write
    ├── StepFailed                   a pipeline step raised a non-mesh exception
    ├── CallCancelled                the caller went away (stream closed early)
    ├── Unauthenticated              no or bad credential (gateway, HTTP 401)
    └── Forbidden                    the credential does not allow this (HTTP 403)

``retryable`` says whether the retry step may try again; every error carries a ``hint``
telling the reader what to do next.

``CapabilityNotSupported`` is the deprecated name of :class:`FeatureNotSupported` (it named a
missing adapter *feature*, not a capability); it still works, warns, and goes in the next
release.
"""

from __future__ import annotations

import warnings
from datetime import datetime
from typing import Any, ClassVar

__all__ = [
    "BackendTimeout",
    "BackendUnavailable",
    "CallCancelled",
    "CircuitOpen",
    "ConfigError",
    "ContextWindowExceeded",
    "FeatureNotSupported",
    "Forbidden",
    "IntegrityError",
    "InvalidInput",
    "InvalidOutput",
    "MeshError",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "PolicyDenied",
    "QuotaExceeded",
    "StepFailed",
    "Unauthenticated",
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
    #: The decision record's ``outcome`` for a call that ends with this error (a value of
    #: :class:`aios_mesh.record.Outcome`): a new error class picks how it is counted here.
    outcome: ClassVar[str] = "error"
    #: The decision record of the call that ended with this error (set by the mesh once the
    #: record is in the audit log; None for errors raised outside a call).
    record_id: str | None = None

    def __init__(self, message: str, *, hint: str | None = None, **details: Any) -> None:
        self.message = message
        self.hint = hint
        self.details = details
        super().__init__(message if hint is None else f"{message} — {hint}")

    def cli_text(self) -> str:
        """How a command line shows this error: ``error TYPE: message`` and, when it has
        one, the hint on a line ``  fix: ...`` (``aios-mesh serve NAME`` commands print it
        to stderr and exit 2)."""
        return f"error {type(self).__name__}: {self.message}" + (
            f"\n  fix: {self.hint}" if self.hint else "")

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
    outcome = "rejected"


class PayloadTooLarge(InvalidInput):
    """The payload is larger than the configured ``max_payload_bytes``."""

    code = "payload_too_large"


class ContextWindowExceeded(InvalidInput):
    """The rendered prompt plus ``max_tokens`` does not fit the model's context window;
    raised before any token is spent."""

    code = "context_window_exceeded"


class InvalidOutput(MeshError):
    """The backend answered with something that does not match the output schema."""

    code = "invalid_output"


class PolicyDenied(MeshError):
    """The policy decided against the call; ``reason`` is the policy's own words,
    ``reason_code`` a short identifier a program can switch on (``no_policy``,
    ``input_schema_mismatch``, ``max_cost_exceeded`` or the policy's own ``reason_code``)."""

    code = "policy_denied"
    outcome = "denied"

    def __init__(self, message: str, *, reason: str | None = None, policy: str | None = None,
                 reason_code: str | None = None, hint: str | None = None,
                 **details: Any) -> None:
        self.reason = reason
        self.policy = policy
        self.reason_code = reason_code
        super().__init__(message, hint=hint, reason=reason, policy=policy,
                         reason_code=reason_code, **details)


class QuotaExceeded(MeshError):
    """A tenant's budget (calls, tokens, cost, GPU-seconds; lifetime or per calendar window)
    or rate limit is spent.

    ``window`` names the window of the limit (``minute``, ``hour``, ``day``, ``month``;
    ``None`` for a lifetime budget or the rate limit); ``retry_after_s`` is how long until
    the limit admits the call again and ``resets_at`` when its window ends (UTC); both are
    ``None`` when waiting does not help (a lifetime budget, or a call that alone asks more
    than the limit), which is what an HTTP gateway turns into ``Retry-After``.
    """

    code = "quota_exceeded"
    outcome = "rejected"

    def __init__(self, message: str, *, hint: str | None = None, window: str | None = None,
                 retry_after_s: float | None = None, resets_at: datetime | None = None,
                 **details: Any) -> None:
        self.window = window
        self.retry_after_s = retry_after_s
        self.resets_at = resets_at
        extra: dict[str, Any] = {k: v for k, v in (
            ("window", window), ("retry_after_s", retry_after_s),
            ("resets_at", None if resets_at is None else resets_at.isoformat()))
            if v is not None}
        super().__init__(message, hint=hint, **details, **extra)


class Overloaded(MeshError):
    """Admission control refused the call early: the time it would wait in the backend's
    queue would break the capability's SLO (``retry_after_s`` says when to try again; the
    gateway answers 503 with ``Retry-After``)."""

    code = "overloaded"
    outcome = "rejected"

    def __init__(self, message: str, *, hint: str | None = None,
                 retry_after_s: float | None = None, **details: Any) -> None:
        self.retry_after_s = retry_after_s
        if retry_after_s is not None:
            details["retry_after_s"] = retry_after_s
        super().__init__(message, hint=hint, **details)


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
    outcome = "rejected"


class UnknownCapability(NotFound):
    """No capability is registered under that name."""

    code = "unknown_capability"


class UnknownTenant(NotFound):
    """The tenant is not declared in the mesh configuration."""

    code = "unknown_tenant"


class FeatureNotSupported(MeshError):
    """The selected adapter does not declare a feature the call needs (``Feature.STREAMING``,
    snapshots, ...), or the model cannot do it.

    Formerly ``CapabilityNotSupported`` (a deprecated alias until the next release). ``code``
    keeps its old value, ``capability_not_supported``, so decision records, dashboards and
    clients that match on the code see no change; ``to_dict()["type"]`` names this class.
    """

    code = "capability_not_supported"


class IntegrityError(MeshError):
    """A durable store is corrupt or could not be written (audit chain, outbox)."""

    code = "integrity_error"


class StepFailed(MeshError):
    """A pipeline step (built-in or your own) raised something that is not a
    :class:`MeshError`; the call is unwound and recorded like any other failure, and the
    original exception is the ``__cause__``."""

    code = "step_failed"


class CallCancelled(MeshError):
    """The caller went away before the call finished (a stream closed early, a task
    cancelled); whatever the call reserved is given back and the record says ``cancelled``."""

    code = "call_cancelled"
    outcome = "cancelled"


class Unauthenticated(MeshError):
    """No credential, or one that is unknown, revoked, expired or badly signed (the gateway
    answers 401)."""

    code = "unauthenticated"
    outcome = "denied"


class Forbidden(MeshError):
    """The credential is good but does not allow this: a capability outside its scopes, a
    page without the reviewer role, a ``tenant=`` that is not the credential's (403)."""

    code = "forbidden"
    outcome = "denied"


# Deprecated names → (current class, release that removes them).
_DEPRECATED: dict[str, tuple[type[MeshError], str]] = {
    "CapabilityNotSupported": (FeatureNotSupported, "0.2"),
}


def _deprecated(name: str, module: str) -> type[MeshError]:
    """The class a deprecated name stands for; warns the code that used the name (it is
    called from a module ``__getattr__``: here, or ``aios_mesh``'s lazy table)."""
    cls, removed_in = _DEPRECATED[name]
    warnings.warn(f"{module}.{name} is deprecated and goes in aios-mesh {removed_in}; use "
                  f"{module}.{cls.__name__} (the same class)", DeprecationWarning, stacklevel=3)
    return cls


def __getattr__(name: str) -> type[MeshError]:
    """Resolve a deprecated error name to its class, with a ``DeprecationWarning``."""
    if name not in _DEPRECATED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _deprecated(name, __name__)
