"""Errors as HTTP: every :class:`~aios_mesh.errors.MeshError` becomes an RFC 9457
problem-details body (``application/problem+json``) with a fitting status code.

The body carries the error's ``code`` (its ``type`` is ``urn:aios-mesh:error:<code>``), its
message (``detail``), the ``hint`` that says what to do, and the decision record id when the
call was recorded. ``QuotaExceeded`` with a known reset gives ``Retry-After``; a
``PolicyDenied`` body adds the ``policy``, its ``reason`` and ``reason_code``. Detail and
hint (and the ``instance`` path) pass the scrubber: an error raised before any call (a bad
header, a forbidden name) is masked like a recorded one.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from starlette.responses import Response

from aios_mesh.errors import (
    BackendTimeout,
    BackendUnavailable,
    CallCancelled,
    CircuitOpen,
    ConfigError,
    FeatureNotSupported,
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
)
from aios_mesh.gateway.identity import Forbidden, Unauthenticated
from aios_mesh.lifecycle.pause import CapabilityPaused
from aios_mesh.redaction.scrub import default_scrubber

__all__ = ["PROBLEM_JSON", "problem", "problem_body", "status_for"]

PROBLEM_JSON = "application/problem+json"

# Most specific first: the first class the error is an instance of decides.
_STATUS: tuple[tuple[type[MeshError], int], ...] = (
    (Unauthenticated, 401),
    (Forbidden, 403),
    (PayloadTooLarge, 413),
    (InvalidInput, 422),
    (PolicyDenied, 403),
    (QuotaExceeded, 429),
    (Overloaded, 503),
    (CircuitOpen, 503),
    (CapabilityPaused, 503),  # an operator paused it: try again after `aios-mesh resume`
    (BackendTimeout, 504),
    (BackendUnavailable, 502),
    (InvalidOutput, 502),
    (NotFound, 404),
    (FeatureNotSupported, 501),
    (CallCancelled, 499),
    (ConfigError, 500),
    (IntegrityError, 500),
    (StepFailed, 500),
)


def status_for(error: MeshError) -> int:
    """The HTTP status for ``error`` (500 for an error class not listed)."""
    for cls, status in _STATUS:
        if isinstance(error, cls):
            return status
    return 500


def problem(error: MeshError, *, status: int | None = None, record_id: str | None = None,
            instance: str | None = None, **extra: Any) -> Response:
    """The problem-details response for ``error``."""
    body = problem_body(error, status=status, record_id=record_id, instance=instance, **extra)
    code = body["status"]
    headers: dict[str, str] = {}
    retry_after = getattr(error, "retry_after_s", None)
    if isinstance(error, QuotaExceeded | Overloaded) and isinstance(retry_after, int | float):
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if isinstance(error, Unauthenticated):  # RFC 9110: a 401 names the scheme to use
        headers["WWW-Authenticate"] = 'Bearer realm="aios-mesh"'
    return Response(orjson.dumps(body), status_code=code, media_type=PROBLEM_JSON,
                    headers=headers)


def problem_body(error: MeshError, *, status: int | None = None, record_id: str | None = None,
                 instance: str | None = None, **extra: Any) -> dict[str, Any]:
    """The problem-details document for ``error`` (what :func:`problem` sends; a bulk job's
    failed row carries it in its result line)."""
    code = status or status_for(error)
    scrub = default_scrubber().text
    body: dict[str, Any] = {"type": f"urn:aios-mesh:error:{error.code}",
                            "title": type(error).__name__, "status": code,
                            "detail": scrub(error.message), "code": error.code}
    if error.hint:
        body["hint"] = scrub(error.hint)
    if isinstance(error, PolicyDenied):  # the policy's own words, and a code to switch on
        body.update(policy=error.policy, reason_code=error.reason_code,
                    reason=None if error.reason is None else scrub(error.reason))
    if record_id:
        body["record_id"] = record_id
    if instance:
        body["instance"] = scrub(instance)  # the path: a capability name the caller made up
    body.update(extra)
    return body
