"""Conformance suite for the Lineage port.

Mixins and the fixtures they ask for:

* :class:`LineageBasic` — ``adapter`` (a Lineage) and ``lineage_received``: a callable that
  returns every event the backend has received so far, as parsed JSON dicts, in arrival order
  (read the file back, collect the POST bodies, consume the topic ...).
* :class:`LineageUnavailable` — ``unavailable_adapter``: the same adapter pointed at a backend
  that cannot accept events; ``emit`` must raise ``BackendUnavailable``.

Every received event is validated with ``jsonschema`` against the official OpenLineage JSON
schemas (``OpenLineage.json`` plus ``facets/*.json``), resolving ``$ref`` to the local files
(no network), and every facet against the schema its ``_schemaURL`` names (custom facets
against :data:`aios_mesh.lineage.CUSTOM_FACETS_SCHEMA`). The schemas ship with this kit as
package data (``schemas/openlineage/``, upstream commit in ``schemas/README.md``), found with
:mod:`importlib.resources`: nothing outside the installed package is read. To validate against
other copies (a newer spec), set ``$AIOS_MESH_OPENLINEAGE_SCHEMAS`` to a folder holding
``OpenLineage.json`` and ``facets/``, or override the ``openlineage_schema_dir`` fixture in
your test class. Needs the ``jsonschema`` and ``referencing`` packages (``aios-mesh[dev]``).
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from aios_mesh.errors import BackendUnavailable
from aios_mesh.lineage import CUSTOM_FACETS_SCHEMA, run_events_for, workflow_run_events
from aios_mesh.ports.lineage import Lineage

__all__ = [
    "POLICY_INPUT_SENTINEL",
    "LineageBasic",
    "LineageUnavailable",
    "OpenLineageSchemas",
    "packaged_schema_dir",
    "sample_record",
]

Received = Callable[[], list[dict[str, Any]]]

#: A value only present in the policy *input*; it must never reach a lineage backend.
POLICY_INPUT_SENTINEL = "sentinel-policy-input-7f3a"


def sample_record(**overrides: Any) -> dict[str, Any]:
    """A complete decision record document (docs/dev/RECORD.md) with ``overrides`` applied."""
    record: dict[str, Any] = {
        "schema_version": "1",
        "record_id": str(uuid.uuid4()),
        "started_at": "2026-11-22T04:00:00.000000+00:00",
        "ended_at": "2026-11-22T04:00:00.120000+00:00",
        "latency_ms": 120.0,
        "tenant": "acme",
        "caller": "svc-invoices",
        "capability": {"name": "extract-invoice-fields", "version": "1"},
        "trace": {"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331"},
        "parent": {"run_id": str(uuid.uuid4()), "namespace": "flyte", "name": "invoice_batch"},
        "policy": {"path": "mesh/invoices", "allow": True, "reason": None,
                   "obligations": {"redact": ["email"], "require_human": False,
                                   "max_cost": 0.05},
                   "bundle_hash": "sha256:" + "ab" * 32, "cached": False,
                   "input": {"payload_kind": POLICY_INPUT_SENTINEL}},
        "redaction": {"applied": True, "counts": {"email": 1, "iban": 1}},
        "model": {"name": "invoice-extractor", "version": "3", "alias": "champion",
                  "source": "mlflow-artifacts:/1/models/m-abc/artifacts", "run_id": "d1e2f3"},
        "serving": "inprocess",
        "index_snapshots": {"vendors": "snap-2026-11-21"},
        "attempts": 1, "fallback": None,
        "usage": {"calls": 1, "tokens": 42, "gpu_seconds": 0.0},
        "cost": 0.001, "currency": "USD",
        "quota": {"reservation_id": "res-1", "reserved_cost": 0.002},
        "outcome": "ok",
        "review_id": None, "confidence": 0.93,
        "error": None,
        "input_sha256": "0" * 64, "output_sha256": "1" * 64,
        "model_drift": None,
        "datasets": {
            "inputs": [
                {"namespace": "mlflow://127.0.0.1:5000", "name": "invoice-extractor",
                 "type": "MODEL", "version": "3"},
                {"namespace": "qdrant://127.0.0.1:6333", "name": "vendors", "type": "TABLE",
                 "version": "snap-2026-11-21"},
            ],
            "outputs": [
                {"namespace": "postgres://127.0.0.1:5432", "name": "mesh.public.audit_log",
                 "type": "TABLE"},
                {"namespace": "kafka://127.0.0.1:9092", "name": "aios.mesh.decisions",
                 "type": "TOPIC"},
            ],
        },
    }
    record.update(overrides)
    return record


def packaged_schema_dir() -> Traversable:
    """The OpenLineage schemas shipped with this kit (``OpenLineage.json`` and ``facets/``)."""
    return files(__package__ or "aios_mesh.testing.conformance") / "schemas" / "openlineage"


class OpenLineageSchemas:
    """Validate OpenLineage events against a local copy of the official JSON schemas.

    Args:
        schema_dir: a folder holding ``OpenLineage.json`` and ``facets/*.json``; by default
            the copy packaged with this kit (:func:`packaged_schema_dir`).
    """

    def __init__(self, schema_dir: Path | Traversable | None = None) -> None:
        from referencing import Registry, Resource

        folder: Path | Traversable = packaged_schema_dir() if schema_dir is None else schema_dir
        main = folder / "OpenLineage.json"
        if not main.is_file():
            raise FileNotFoundError(
                f"no OpenLineage.json in {folder}; set AIOS_MESH_OPENLINEAGE_SCHEMAS to the "
                "folder holding OpenLineage.json and facets/")
        facets = folder / "facets"
        facet_files = sorted((p for p in facets.iterdir() if p.name.endswith(".json")),
                             key=lambda p: p.name) if facets.is_dir() else []
        resources: list[tuple[str, Resource[Any]]] = []
        #: top-level facet key (``parent``, ``errorMessage`` ...) → facet file ``$id``
        self.facet_files: dict[str, str] = {}
        root = json.loads(main.read_text(encoding="utf-8"))
        resources.append((root["$id"], Resource.from_contents(root)))
        for path in facet_files:
            document = json.loads(path.read_text(encoding="utf-8"))
            resources.append((document["$id"], Resource.from_contents(document)))
            for key in document.get("properties", {}):
                self.facet_files[key] = document["$id"]
        resources.append((CUSTOM_FACETS_SCHEMA["$id"],
                          Resource.from_contents(dict(CUSTOM_FACETS_SCHEMA))))
        self.registry: Registry[Any] = Registry().with_resources(resources)
        self.root_id: str = root["$id"]

    def _validate(self, instance: Any, ref: str) -> None:
        from jsonschema import Draft202012Validator, FormatChecker  # type: ignore[import-untyped]

        validator = Draft202012Validator({"$ref": ref}, registry=self.registry,
                                         format_checker=FormatChecker())
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
        if errors:
            lines = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                     for e in errors[:10]]
            raise AssertionError(f"does not validate against {ref}:\n  " + "\n  ".join(lines))

    def validate(self, event: Mapping[str, Any]) -> None:
        """Raise ``AssertionError`` unless ``event`` is a valid RunEvent with valid facets."""
        self._validate(event, self.root_id)
        self._validate(event, f"{self.root_id}#/$defs/RunEvent")
        _check_time(event["eventTime"])
        for uri in (event["producer"], event["schemaURL"]):
            _check_uri(uri)
        groups: list[Mapping[str, Any]] = [event["run"].get("facets") or {},
                                           event["job"].get("facets") or {}]
        for dataset in [*event.get("inputs", []), *event.get("outputs", [])]:
            for key in ("facets", "inputFacets", "outputFacets"):
                groups.append(dataset.get(key) or {})
        for facets in groups:
            for key, facet in facets.items():
                self.validate_facet(key, facet)

    def validate_facet(self, key: str, facet: Mapping[str, Any]) -> None:
        """Check one facet against the schema its ``_schemaURL`` names (and its key's file)."""
        _check_uri(facet["_producer"])
        url = facet["_schemaURL"]
        _check_uri(url)
        try:
            self.registry.resolver().lookup(url)
        except Exception as exc:  # referencing raises its own Unresolvable types
            raise AssertionError(f"facet {key!r}: _schemaURL {url} names no known schema") from exc
        self._validate(facet, url)
        if key in self.facet_files:
            file_id = self.facet_files[key]
            assert url.startswith(file_id + "#"), f"facet {key!r} points at {url}, not {file_id}"
            self._validate({key: facet}, file_id)
        else:
            assert "_" in key, f"custom facet {key!r} needs a '<prefix>_' name"


def _check_time(value: str) -> None:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert moment.tzinfo is not None, f"eventTime {value!r} has no time zone"


def _check_uri(value: str) -> None:
    parts = urlsplit(value)
    assert parts.scheme, f"{value!r} is not an absolute URI"
    assert parts.netloc, f"{value!r} is not an absolute URI"


class _SchemaFixtures:
    @pytest.fixture(scope="session")
    def openlineage_schema_dir(self) -> Path | Traversable:
        """``$AIOS_MESH_OPENLINEAGE_SCHEMAS`` when set, else the schemas packaged here."""
        env = os.environ.get("AIOS_MESH_OPENLINEAGE_SCHEMAS")
        if env:
            return Path(env)
        return packaged_schema_dir()

    @pytest.fixture(scope="session")
    def openlineage_schemas(self, openlineage_schema_dir: Path | Traversable
                            ) -> OpenLineageSchemas:
        return OpenLineageSchemas(openlineage_schema_dir)


class LineageBasic(_SchemaFixtures):
    """Events arrive complete, in order, schema-valid, and without policy input values."""

    async def _emit_all(self, adapter: Lineage, events: list[dict[str, Any]]) -> None:
        for event in events:
            await adapter.emit(event)

    async def test_start_then_complete_arrive(self, adapter: Lineage,
                                              lineage_received: Received,
                                              openlineage_schemas: OpenLineageSchemas) -> None:
        record = sample_record()
        await self._emit_all(adapter, run_events_for(record))
        got = [e for e in lineage_received() if e["run"]["runId"] == record["record_id"]]
        assert [e["eventType"] for e in got] == ["START", "COMPLETE"]
        for event in got:
            openlineage_schemas.validate(event)
            assert event["job"]["namespace"] == "aios-mesh"
            assert event["job"]["name"] == "extract-invoice-fields"
        assert got[0]["eventTime"] == record["started_at"]
        assert got[1]["eventTime"] == record["ended_at"]

    @pytest.mark.parametrize("outcome", ["denied", "rejected", "error"])
    async def test_failed_call_emits_fail_with_error_message(
            self, adapter: Lineage, lineage_received: Received,
            openlineage_schemas: OpenLineageSchemas, outcome: str) -> None:
        error = {"type": "PolicyDenied", "code": "policy_denied",
                 "message": "tenant acme may not call this", "retryable": False}
        record = sample_record(outcome=outcome, error=error)
        await self._emit_all(adapter, run_events_for(record))
        got = [e for e in lineage_received() if e["run"]["runId"] == record["record_id"]]
        assert [e["eventType"] for e in got] == ["START", "FAIL"]
        for event in got:
            openlineage_schemas.validate(event)
        facet = got[1]["run"]["facets"]["errorMessage"]
        assert "tenant acme may not call this" in facet["message"]
        assert facet["programmingLanguage"] == "PYTHON"

    async def test_datasets_and_parent_survive_transport(
            self, adapter: Lineage, lineage_received: Received) -> None:
        record = sample_record()
        await self._emit_all(adapter, run_events_for(record))
        end = [e for e in lineage_received() if e["run"]["runId"] == record["record_id"]][-1]
        inputs = {(d["namespace"], d["name"]): d for d in end["inputs"]}
        model = inputs[("mlflow://127.0.0.1:5000", "invoice-extractor")]
        assert model["facets"]["version"]["datasetVersion"] == "3"
        assert model["facets"]["datasetType"]["datasetType"] == "MODEL"
        index = inputs[("qdrant://127.0.0.1:6333", "vendors")]
        assert index["facets"]["version"]["datasetVersion"] == "snap-2026-11-21"
        outputs = [(d["namespace"], d["name"]) for d in end["outputs"]]
        assert outputs == [("postgres://127.0.0.1:5432", "mesh.public.audit_log"),
                           ("kafka://127.0.0.1:9092", "aios.mesh.decisions")]
        parent = end["run"]["facets"]["parent"]
        assert parent["run"]["runId"] == record["parent"]["run_id"]
        assert parent["job"] == {"namespace": "flyte", "name": "invoice_batch"}
        facets = end["run"]["facets"]
        assert facets["aiosMesh_cost"]["amount"] == record["cost"]
        assert facets["aiosMesh_usage"]["tokens"] == 42
        assert facets["aiosMesh_modelVersion"]["alias"] == "champion"
        assert facets["aiosMesh_policyDecision"]["bundleHash"] == record["policy"]["bundle_hash"]

    async def test_policy_input_never_reaches_backend(self, adapter: Lineage,
                                                      lineage_received: Received) -> None:
        record = sample_record()
        await self._emit_all(adapter, run_events_for(record))
        assert lineage_received()
        assert POLICY_INPUT_SENTINEL not in json.dumps(lineage_received())

    async def test_workflow_events_validate(self, adapter: Lineage, lineage_received: Received,
                                            openlineage_schemas: OpenLineageSchemas) -> None:
        run_id = str(uuid.uuid4())
        events = [*workflow_run_events(run_id, "pkg.flows:batch", status="succeeded"),
                  *workflow_run_events("f3a1b2c4d5", "pkg.flows:batch", status="failed",
                                       error="ValueError: boom")]
        await self._emit_all(adapter, events)
        got = [e for e in lineage_received() if e["job"]["namespace"] == "flyte"]
        assert [e["eventType"] for e in got] == ["START", "COMPLETE", "START", "FAIL"]
        for event in got:
            openlineage_schemas.validate(event)
        assert got[0]["run"]["runId"] == run_id
        assert got[3]["run"]["facets"]["errorMessage"]["message"] == "ValueError: boom"

    async def test_concurrent_emits_all_arrive(self, adapter: Lineage,
                                               lineage_received: Received) -> None:
        records = [sample_record() for _ in range(8)]
        await asyncio.gather(*(adapter.emit(e) for r in records for e in run_events_for(r)))
        ids = [e["run"]["runId"] for e in lineage_received()]
        for record in records:
            assert ids.count(record["record_id"]) == 2

    async def test_emit_leaves_event_untouched(self, adapter: Lineage) -> None:
        event = run_events_for(sample_record())[0]
        before = json.dumps(event, sort_keys=True)
        await adapter.emit(event)
        assert json.dumps(event, sort_keys=True) == before

    async def test_declares_features_and_closes_twice(self, adapter: Lineage) -> None:
        assert isinstance(adapter.features, frozenset)
        assert isinstance(adapter, Lineage)
        await adapter.aclose()
        await adapter.aclose()


class LineageUnavailable:
    """A backend that cannot take events makes ``emit`` raise ``BackendUnavailable``."""

    async def test_unavailable_backend_raises(self, unavailable_adapter: Lineage) -> None:
        event = run_events_for(sample_record())[0]
        with pytest.raises(BackendUnavailable) as info:
            await unavailable_adapter.emit(event)
        assert info.value.retryable
        assert info.value.hint
