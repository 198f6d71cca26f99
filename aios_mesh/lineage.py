"""Decision records → OpenLineage run events (pure Python; ``openlineage`` is not imported).

One capability call is one OpenLineage *run* of the *job* named after the capability::

    run_events_for(record.to_dict())  →  [START, COMPLETE]   outcome ok | degraded | review
                                         [START, FAIL]       outcome denied | rejected | error
                                         [START, ABORT]      outcome cancelled

* ``run.runId`` is ``record["record_id"]`` (a UUID; any other string is mapped to a stable
  UUIDv5, see :func:`run_uuid`).
* ``job.namespace`` is one namespace for the whole mesh (``"aios-mesh"``), **not** one per
  tenant: a capability is the same job whoever calls it, so its history stays in one place;
  the tenant and caller travel in the ``aiosMesh_call`` run facet.
* ``job.name`` is the capability name; its version is in the ``aiosMesh_capability`` job facet.
* inputs and outputs: the record's ``datasets``, named by OpenLineage's naming spec when the
  record was built (:mod:`aios_mesh.lineage_naming`: ``namespace`` the datasource, e.g.
  ``mlflow://host:5000``, ``qdrant://host:6333``, ``kafka://host:9092``, ``file``). Inputs:
  the registered model (``version`` facet = the model version, ``datasetType`` MODEL) and
  every index (``version`` facet = snapshot id); outputs (terminal event): the audit log the
  record went to, the topic its decision event goes to, the indexes the handler wrote.
* run facets: ``parent`` (from ``record["parent"]``: the workflow run, or for a nested call
  the capability run that made it, with the workflow as ``root``), ``processing_engine``,
  and the custom facets ``aiosMesh_call``, ``aiosMesh_modelVersion``,
  ``aiosMesh_policyDecision`` (allow, reason, bundle hash — never the policy *input*),
  ``aiosMesh_cost`` and ``aiosMesh_usage``;
  a FAIL event also carries the standard ``errorMessage`` facet.

Custom facets follow the spec's rules: a ``<prefix>_<name>`` key, and ``_producer`` plus a
``_schemaURL`` that points into :data:`CUSTOM_FACETS_SCHEMA` (the JSON schema of every
custom facet, shipped here so tests can validate against it offline).

:func:`workflow_run_events` builds the same START/COMPLETE/FAIL pair for a workflow run
(Flyte), so a capability call made inside a Flyte task can name the workflow run as its
``parent``.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

from aios_mesh.record import SUCCESSFUL_OUTCOMES, Outcome

__all__ = [
    "CUSTOM_FACETS_SCHEMA",
    "CUSTOM_FACETS_SCHEMA_URL",
    "DEFAULT_NAMESPACE",
    "FACET_PREFIX",
    "OPENLINEAGE_SCHEMA_URL",
    "PRODUCER",
    "EventType",
    "run_events_for",
    "run_uuid",
    "workflow_run_events",
]

#: URI identifying this producer (``producer`` and every facet's ``_producer``).
PRODUCER: Final = "https://github.com/aios-mesh/aios-mesh/tree/v0.1.0"
#: The one job namespace of the mesh's capability jobs.
DEFAULT_NAMESPACE: Final = "aios-mesh"
#: Prefix of the custom facets (the spec asks for a producer-unique prefix).
FACET_PREFIX: Final = "aiosMesh"
OPENLINEAGE_SCHEMA_URL: Final = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
#: ``$id`` of :data:`CUSTOM_FACETS_SCHEMA`; custom facets' ``_schemaURL`` points into it.
CUSTOM_FACETS_SCHEMA_URL: Final = (
    "https://raw.githubusercontent.com/aios-mesh/aios-mesh/main/docs/schemas/"
    "aios-mesh-facets-1-0-0.json"
)

_FACETS: Final = "https://openlineage.io/spec/facets"
_STANDARD_FACET_URLS: Final[Mapping[str, str]] = {
    "parent": f"{_FACETS}/1-2-0/ParentRunFacet.json#/$defs/ParentRunFacet",
    "errorMessage": f"{_FACETS}/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet",
    "processing_engine":
        f"{_FACETS}/1-1-1/ProcessingEngineRunFacet.json#/$defs/ProcessingEngineRunFacet",
    "jobType": f"{_FACETS}/2-0-4/JobTypeJobFacet.json#/$defs/JobTypeJobFacet",
    "version": f"{_FACETS}/1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet",
    "datasetType": f"{_FACETS}/1-0-1/DatasetTypeDatasetFacet.json#/$defs/DatasetTypeDatasetFacet",
}

EventType = Literal["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]
_OK_OUTCOMES: Final = frozenset(str(o) for o in SUCCESSFUL_OUTCOMES)


def _facet_def(properties: Mapping[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "allOf": [
            {"$ref": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunFacet"},
            {"type": "object", "properties": dict(properties), "required": required},
        ],
        "type": "object",
    }


_STR: Final = {"type": "string"}
_OPT_STR: Final = {"type": ["string", "null"]}
_NUM: Final = {"type": "number"}
_OPT_NUM: Final = {"type": ["number", "null"]}

#: JSON schema (draft 2020-12) of every custom facet, in the style of OpenLineage's own
#: facet files. Publish it at :data:`CUSTOM_FACETS_SCHEMA_URL`.
CUSTOM_FACETS_SCHEMA: Final[Mapping[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": CUSTOM_FACETS_SCHEMA_URL,
    "$defs": {
        "CallRunFacet": _facet_def({
            "tenant": _STR, "caller": _STR, "capabilityVersion": _STR,
            "outcome": {"enum": [str(o) for o in Outcome]},
            "latencyMs": _NUM, "attempts": {"type": "integer", "minimum": 0},
            "fallback": _OPT_STR, "serving": _OPT_STR,
            "redactionCounts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "reviewId": _OPT_STR, "confidence": _OPT_NUM,
            "traceId": _OPT_STR, "spanId": _OPT_STR,
            "inputSha256": _OPT_STR, "outputSha256": _OPT_STR,
            "recordSchemaVersion": _STR,
        }, ["tenant", "caller", "outcome"]),
        "CapabilityJobFacet": {
            "allOf": [
                {"$ref": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/JobFacet"},
                {"type": "object", "properties": {"name": _STR, "version": _STR},
                 "required": ["name", "version"]},
            ],
            "type": "object",
        },
        "ModelVersionRunFacet": _facet_def({
            "name": _STR, "version": _STR, "alias": _OPT_STR, "source": _OPT_STR,
            "runId": _OPT_STR,
        }, ["name", "version"]),
        "PolicyDecisionRunFacet": _facet_def({
            "path": _OPT_STR, "allow": {"type": "boolean"}, "reason": _OPT_STR,
            "bundleHash": _OPT_STR, "cached": {"type": "boolean"},
            "requireHuman": {"type": "boolean"},
            "redact": {"type": "array", "items": _STR},
            "maxCost": _OPT_NUM,
        }, ["allow"]),
        "CostRunFacet": _facet_def({
            "amount": _NUM, "currency": _STR,
            "reservationId": _OPT_STR, "reservedAmount": _OPT_NUM,
        }, ["amount", "currency"]),
        "UsageRunFacet": _facet_def({
            "calls": {"type": "integer", "minimum": 0},
            "tokens": {"type": "integer", "minimum": 0},
            "gpuSeconds": {"type": "number", "minimum": 0},
        }, []),
    },
}

_CUSTOM_KEYS: Final[Mapping[str, str]] = {
    f"{FACET_PREFIX}_call": "CallRunFacet",
    f"{FACET_PREFIX}_capability": "CapabilityJobFacet",
    f"{FACET_PREFIX}_modelVersion": "ModelVersionRunFacet",
    f"{FACET_PREFIX}_policyDecision": "PolicyDecisionRunFacet",
    f"{FACET_PREFIX}_cost": "CostRunFacet",
    f"{FACET_PREFIX}_usage": "UsageRunFacet",
}


def run_uuid(value: str, *, namespace: str = DEFAULT_NAMESPACE) -> str:
    """``value`` if it is a UUID, else a stable UUIDv5 of ``namespace/value``.

    OpenLineage wants ``runId`` in UUID form; Flyte execution names (``"f3a1b2c4d5"``) are not,
    so they are mapped the same way everywhere (workflow events and ``parent`` facets).
    """
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{value}"))


def _time(value: Any) -> str:
    if isinstance(value, datetime):
        moment: datetime = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.isoformat()
    if isinstance(value, str) and value:
        return str(value)
    return datetime.now(UTC).isoformat()


def _standard(facet: str, producer: str, /, **fields: Any) -> dict[str, Any]:
    return {"_producer": producer, "_schemaURL": _STANDARD_FACET_URLS[facet], **fields}


def _custom(key: str, producer: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    url = f"{CUSTOM_FACETS_SCHEMA_URL}#/$defs/{_CUSTOM_KEYS[key]}"
    return {"_producer": producer, "_schemaURL": url,
            **{k: v for k, v in fields.items() if v is not None}}


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _parent_facet(parent: Mapping[str, Any], producer: str) -> dict[str, Any]:
    namespace = str(parent.get("namespace") or DEFAULT_NAMESPACE)
    name = str(parent.get("name") or "unknown")
    facet = _standard(
        "parent", producer,
        run={"runId": run_uuid(str(parent.get("run_id")), namespace=namespace)},
        job={"namespace": namespace, "name": name},
    )
    root = parent.get("root")
    if isinstance(root, Mapping) and root.get("run_id"):
        root_ns = str(root.get("namespace") or namespace)
        facet["root"] = {
            "run": {"runId": run_uuid(str(root["run_id"]), namespace=root_ns)},
            "job": {"namespace": root_ns, "name": str(root.get("name") or name)},
        }
    return facet


def _error_message(record: Mapping[str, Any]) -> str:
    error = record.get("error")
    if isinstance(error, Mapping) and error.get("message"):
        kind = error.get("type") or error.get("code")
        return f"{kind}: {error['message']}" if kind else str(error["message"])
    policy = record.get("policy")
    outcome = str(record.get("outcome"))
    if outcome == "denied" and isinstance(policy, Mapping) and policy.get("reason"):
        return f"PolicyDenied: {policy['reason']}"
    return f"capability call ended with outcome {outcome!r}"


def _dataset(entry: Mapping[str, Any], producer: str) -> dict[str, Any]:
    facets: dict[str, Any] = {}
    if entry.get("type"):
        facets["datasetType"] = _standard("datasetType", producer,
                                          datasetType=str(entry["type"]))
    if entry.get("version") is not None:
        facets["version"] = _standard("version", producer, datasetVersion=str(entry["version"]))
    return {"namespace": str(entry["namespace"]), "name": str(entry["name"]), "facets": facets}


def _legacy_inputs(record: Mapping[str, Any], model_namespace: str,
                   index_namespace: str) -> list[dict[str, Any]]:
    # Records written before ``datasets`` existed name no backend: the namespaces given, and
    # the names their events always had (a re-shipped old record names what it named then).
    inputs: list[dict[str, Any]] = []
    model = record.get("model")
    # a handler (``function:<capability>``) is code, not a dataset the call read
    if isinstance(model, Mapping) and model.get("name") and \
            not str(model["name"]).startswith("function:"):
        version = _opt_str(model.get("version"))
        name = f"{model['name']}/{version}" if version is not None else str(model["name"])
        inputs.append({"namespace": model_namespace, "name": name, "type": "MODEL",
                       "version": version})
    snapshots = record.get("index_snapshots") or {}
    inputs.extend({"namespace": index_namespace, "name": str(collection), "type": "TABLE",
                   "version": None if snapshot is None else str(snapshot)}
                  for collection, snapshot in sorted(snapshots.items()))
    return inputs


def _datasets(record: Mapping[str, Any], producer: str, model_namespace: str,
              index_namespace: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The run's input and output datasets: the record's ``datasets`` (named by the naming
    spec when the record was built, see :mod:`aios_mesh.lineage_naming`)."""
    datasets = record.get("datasets")
    if not isinstance(datasets, Mapping):
        inputs: Any = _legacy_inputs(record, model_namespace, index_namespace)
        outputs: Any = []
    else:
        inputs, outputs = datasets.get("inputs") or [], datasets.get("outputs") or []
    return ([_dataset(d, producer) for d in inputs if isinstance(d, Mapping)],
            [_dataset(d, producer) for d in outputs if isinstance(d, Mapping)])


def _call_facet(record: Mapping[str, Any], producer: str) -> dict[str, Any]:
    capability = record.get("capability") or {}
    trace = record.get("trace") or {}
    redaction = record.get("redaction") or {}
    confidence = record.get("confidence")
    return _custom(f"{FACET_PREFIX}_call", producer, {
        "tenant": str(record.get("tenant", "")),
        "caller": str(record.get("caller", "")),
        "capabilityVersion": _opt_str(capability.get("version")),
        "outcome": str(record.get("outcome")),
        "latencyMs": float(record.get("latency_ms") or 0.0),
        "attempts": int(record.get("attempts") or 0),
        "fallback": _opt_str(record.get("fallback")),
        "serving": _opt_str(record.get("serving")),
        "redactionCounts": {str(k): int(v) for k, v in (redaction.get("counts") or {}).items()},
        "reviewId": _opt_str(record.get("review_id")),
        "confidence": None if confidence is None else float(confidence),
        "traceId": _opt_str(trace.get("trace_id")),
        "spanId": _opt_str(trace.get("span_id")),
        "inputSha256": _opt_str(record.get("input_sha256")),
        "outputSha256": _opt_str(record.get("output_sha256")),
        "recordSchemaVersion": _opt_str(record.get("schema_version")),
    })


def _policy_facet(policy: Mapping[str, Any], producer: str) -> dict[str, Any]:
    # Never the policy *input*: it is derived from the payload and may hold PII.
    obligations = policy.get("obligations") or {}
    max_cost = obligations.get("max_cost")
    return _custom(f"{FACET_PREFIX}_policyDecision", producer, {
        "path": _opt_str(policy.get("path")),
        "allow": bool(policy.get("allow")),
        "reason": _opt_str(policy.get("reason")),
        "bundleHash": _opt_str(policy.get("bundle_hash")),
        "cached": bool(policy.get("cached", False)),
        "requireHuman": bool(obligations.get("require_human", False)),
        "redact": [str(kind) for kind in obligations.get("redact") or []],
        "maxCost": None if max_cost is None else float(max_cost),
    })


def _run_facets(record: Mapping[str, Any], producer: str, *, terminal: bool) -> dict[str, Any]:
    facets: dict[str, Any] = {
        "processing_engine": _standard("processing_engine", producer, name="aios-mesh",
                                       version=_engine_version()),
        f"{FACET_PREFIX}_call": _call_facet(record, producer),
    }
    parent = record.get("parent")
    if isinstance(parent, Mapping) and parent.get("run_id"):
        facets["parent"] = _parent_facet(parent, producer)
    model = record.get("model")
    if isinstance(model, Mapping) and model.get("name"):
        facets[f"{FACET_PREFIX}_modelVersion"] = _custom(
            f"{FACET_PREFIX}_modelVersion", producer, {
                "name": str(model["name"]), "version": str(model.get("version")),
                "alias": _opt_str(model.get("alias")), "source": _opt_str(model.get("source")),
                "runId": _opt_str(model.get("run_id")),
            })
    policy = record.get("policy")
    if isinstance(policy, Mapping):
        facets[f"{FACET_PREFIX}_policyDecision"] = _policy_facet(policy, producer)
    if not terminal:
        return facets
    quota = record.get("quota") or {}
    reserved = quota.get("reserved_cost")
    facets[f"{FACET_PREFIX}_cost"] = _custom(f"{FACET_PREFIX}_cost", producer, {
        "amount": float(record.get("cost") or 0.0),
        "currency": str(record.get("currency") or "USD"),
        "reservationId": _opt_str(quota.get("reservation_id")),
        "reservedAmount": None if reserved is None else float(reserved),
    })
    usage = record.get("usage") or {}
    facets[f"{FACET_PREFIX}_usage"] = _custom(f"{FACET_PREFIX}_usage", producer, {
        "calls": int(usage.get("calls") or 0),
        "tokens": int(usage.get("tokens") or 0),
        "gpuSeconds": float(usage.get("gpu_seconds") or 0.0),
    })
    if str(record.get("outcome")) not in _OK_OUTCOMES:
        facets["errorMessage"] = _standard("errorMessage", producer,
                                           message=_error_message(record),
                                           programmingLanguage="PYTHON")
    return facets


@functools.cache  # reading package metadata costs ~0.6 ms: once per process, not per event
def _engine_version(distribution: str = "aios-mesh") -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def _event(event_type: EventType, event_time: str, run: dict[str, Any], job: dict[str, Any],
           inputs: list[dict[str, Any]], producer: str,
           outputs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "eventType": event_type,
        "eventTime": event_time,
        "producer": producer,
        "schemaURL": OPENLINEAGE_SCHEMA_URL,
        "run": run,
        "job": job,
        "inputs": inputs,
        "outputs": outputs or [],
    }


def run_events_for(record: Mapping[str, Any], *, producer: str = PRODUCER,
                   namespace: str = DEFAULT_NAMESPACE, model_namespace: str = "mlflow",
                   index_namespace: str = "qdrant") -> list[dict[str, Any]]:
    """The OpenLineage RunEvents of one decision record: ``[START, COMPLETE | FAIL]``.

    Args:
        record: a decision record document (``DecisionRecord.to_dict()``, docs/dev/RECORD.md).
        producer: URI of the producer, written into ``producer`` and every ``_producer``.
        namespace: the job namespace (one for the whole mesh by default).
        model_namespace, index_namespace: only for records written before the record had
            ``datasets``: the namespace to give their model and their indexes (such a
            record does not say which backend it used).

    Returns:
        Two JSON-ready dicts that validate against OpenLineage.json and its facet schemas.
        Both carry the input datasets (the record's ``datasets.inputs``: the model, with its
        version as the ``version`` facet, and the index snapshots); START (at
        ``started_at``) carries the parent, call, model and policy facets; the terminal
        event (at ``ended_at``) adds the outputs (``datasets.outputs``: the audit log, the
        decision topic, indexes written), cost, usage and, on FAIL, ``errorMessage``.
    """
    capability = record.get("capability") or {}
    job_name = str(capability.get("name") or "unknown-capability")
    run_id = run_uuid(str(record.get("record_id")), namespace=namespace)
    job: dict[str, Any] = {
        "namespace": namespace,
        "name": job_name,
        "facets": {
            "jobType": _standard("jobType", producer, processingType="BATCH",
                                 integration="AIOS_MESH", jobType="CAPABILITY"),
            f"{FACET_PREFIX}_capability": {
                "_producer": producer,
                "_schemaURL": f"{CUSTOM_FACETS_SCHEMA_URL}#/$defs/CapabilityJobFacet",
                "name": job_name,
                "version": str(capability.get("version") or "0"),
            },
        },
    }
    inputs, outputs = _datasets(record, producer, model_namespace, index_namespace)
    outcome = str(record.get("outcome"))
    # OpenLineage's ABORT is a run stopped before it finished: a caller that went away
    terminal: EventType = ("COMPLETE" if outcome in _OK_OUTCOMES
                           else "ABORT" if outcome == Outcome.CANCELLED else "FAIL")
    start = _event("START", _time(record.get("started_at")),
                   {"runId": run_id, "facets": _run_facets(record, producer, terminal=False)},
                   job, inputs, producer)
    end = _event(terminal, _time(record.get("ended_at") or record.get("started_at")),
                 {"runId": run_id, "facets": _run_facets(record, producer, terminal=True)},
                 job, inputs, producer, outputs)
    return [start, end]


def workflow_run_events(run_id: str, workflow: str, *, status: str,
                        started_at: datetime | str | None = None,
                        ended_at: datetime | str | None = None,
                        error: str | None = None, namespace: str = "flyte",
                        parent: Mapping[str, Any] | None = None,
                        producer: str = PRODUCER) -> list[dict[str, Any]]:
    """The RunEvents of one workflow run (Flyte): ``[START]`` or ``[START, COMPLETE | FAIL]``.

    Args:
        run_id: the execution id (a Flyte execution name is mapped to a UUID by
            :func:`run_uuid`; use the same mapping when naming it as a record's ``parent``).
        workflow: ``"module:workflow"`` or Flyte's ``"module.workflow"``; the job name is the
            dotted form, as Flyte registers it, so local and remote runs share one job.
        status: an ``ExecutionStatus`` value: ``queued``/``running`` give ``[START]``,
            ``succeeded`` adds COMPLETE, ``failed`` adds FAIL (with ``errorMessage``).
        started_at, ended_at: event times (default: now).
        error: the failure text for the ``errorMessage`` facet.
        namespace: the job namespace (``"flyte"``, as records name their Flyte parent).
        parent: ``{"run_id", "namespace", "name"}`` of a parent run, if any.
    """
    status = str(status).lower()
    if status not in {"queued", "running", "succeeded", "failed"}:
        raise ValueError(f"unknown workflow status {status!r}")
    job_name = workflow.replace(":", ".")
    job = {
        "namespace": namespace,
        "name": job_name,
        "facets": {"jobType": _standard("jobType", producer, processingType="BATCH",
                                        integration="FLYTE", jobType="WORKFLOW")},
    }
    run_facets: dict[str, Any] = {
        "processing_engine": _standard("processing_engine", producer, name="flyte",
                                       version=_engine_version("flytekit"),
                                       openlineageAdapterVersion=_engine_version()),
    }
    if parent is not None and parent.get("run_id"):
        run_facets["parent"] = _parent_facet(parent, producer)
    rid = run_uuid(run_id, namespace=namespace)
    events = [_event("START", _time(started_at), {"runId": rid, "facets": run_facets},
                     job, [], producer)]
    if status == "succeeded":
        events.append(_event("COMPLETE", _time(ended_at), {"runId": rid, "facets": run_facets},
                             job, [], producer))
    elif status == "failed":
        failed = {**run_facets, "errorMessage": _standard(
            "errorMessage", producer, message=error or "workflow failed",
            programmingLanguage="PYTHON")}
        events.append(_event("FAIL", _time(ended_at), {"runId": rid, "facets": failed},
                             job, [], producer))
    return events
