"""Decision records → OpenLineage events: schema-valid for every record shape.

The custom facets are also checked against the schema file their ``_schemaURL`` names
(``docs/schemas/aios-mesh-facets-1-0-0.json``), with the facets of real decision records.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aios_mesh.lineage import (
    CUSTOM_FACETS_SCHEMA,
    CUSTOM_FACETS_SCHEMA_URL,
    FACET_PREFIX,
    run_events_for,
    run_uuid,
    workflow_run_events,
)
from aios_mesh.testing.conformance.lineage import (
    POLICY_INPUT_SENTINEL,
    OpenLineageSchemas,
    packaged_schema_dir,
    sample_record,
)

SCHEMAS = OpenLineageSchemas()  # the copy packaged with the conformance kit

names = st.text(min_size=1, max_size=20)
maybe_text = st.none() | st.text(max_size=20)
uuids = st.uuids().map(str)
money = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)

parents = st.none() | st.fixed_dictionaries({
    "run_id": uuids | st.text(min_size=1, max_size=12),
    "namespace": st.sampled_from(["flyte", "aios-mesh"]),
    "name": names,
})
policies = st.none() | st.fixed_dictionaries({
    "path": maybe_text, "allow": st.booleans(), "reason": maybe_text,
    "obligations": st.fixed_dictionaries({
        "redact": st.lists(st.sampled_from(["email", "iban", "phone"]), max_size=3),
        "require_human": st.booleans(), "max_cost": st.none() | money}),
    "bundle_hash": maybe_text, "cached": st.booleans(),
    "input": st.just({"who": POLICY_INPUT_SENTINEL}),
})
models = st.none() | st.fixed_dictionaries({
    "name": names, "version": st.integers(1, 99).map(str) | st.integers(1, 99),
    "alias": maybe_text, "source": maybe_text, "run_id": maybe_text,
})
errors = st.none() | st.fixed_dictionaries({
    "type": st.sampled_from(["PolicyDenied", "BackendTimeout", "InvalidOutput"]),
    "code": st.text(max_size=10), "message": st.text(max_size=40), "retryable": st.booleans(),
})
dataset_entries = st.fixed_dictionaries(
    {"namespace": st.sampled_from(["file", "kafka://h:9092", "mlflow://h:5000",
                                   "inmemory://"]),
     "name": names, "type": st.sampled_from(["MODEL", "TABLE", "TOPIC", "FILE"])},
    optional={"version": st.text(min_size=1, max_size=8)})
datasets = st.none() | st.fixed_dictionaries({
    "inputs": st.lists(dataset_entries, max_size=3),
    "outputs": st.lists(dataset_entries, max_size=3)})
records = st.builds(
    sample_record,
    datasets=datasets,
    record_id=uuids,
    outcome=st.sampled_from(["ok", "review", "denied", "rejected", "error"]),
    tenant=names, caller=names,
    capability=st.fixed_dictionaries({"name": names, "version": st.text(min_size=1, max_size=5)}),
    parent=parents, policy=policies, model=models, error=errors,
    index_snapshots=st.dictionaries(names, st.none() | st.text(max_size=20), max_size=3),
    usage=st.fixed_dictionaries({"calls": st.integers(0, 100), "tokens": st.integers(0, 10**6),
                                 "gpu_seconds": money}),
    cost=money, confidence=st.none() | st.floats(0, 1),
    quota=st.none() | st.fixed_dictionaries({"reservation_id": maybe_text,
                                             "reserved_cost": st.none() | money}),
    redaction=st.fixed_dictionaries({"applied": st.booleans(),
                                     "counts": st.dictionaries(names, st.integers(0, 9),
                                                               max_size=3)}),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=records)
def test_every_record_gives_valid_start_and_terminal_events(record: dict[str, Any]) -> None:
    events = run_events_for(record)
    for event in events:
        SCHEMAS.validate(event)
    start, end = events
    assert start["eventType"] == "START"
    assert end["eventType"] == ("COMPLETE" if record["outcome"] in ("ok", "review") else "FAIL")
    assert start["run"]["runId"] == end["run"]["runId"] == record["record_id"]
    assert end["job"]["name"] == record["capability"]["name"]
    assert end["job"]["namespace"] == "aios-mesh"
    assert ("errorMessage" in end["run"]["facets"]) == (end["eventType"] == "FAIL")
    assert "errorMessage" not in start["run"]["facets"]
    if record["datasets"] is None:  # a record written before ``datasets``
        expected_inputs = (record["model"] is not None) + len(record["index_snapshots"])
        assert end["outputs"] == []
    else:
        expected_inputs = len(record["datasets"]["inputs"])
        assert [(d["namespace"], d["name"]) for d in end["outputs"]] == \
            [(d["namespace"], d["name"]) for d in record["datasets"]["outputs"]]
    assert len(end["inputs"]) == len(start["inputs"]) == expected_inputs
    assert start["outputs"] == []  # written once the call ended
    assert ("parent" in end["run"]["facets"]) == (record["parent"] is not None)
    assert POLICY_INPUT_SENTINEL not in json.dumps(events)
    assert run_events_for(record) == events  # deterministic


@settings(max_examples=30, deadline=None)
@given(record_id=st.text(max_size=30))
def test_non_uuid_record_ids_map_to_stable_uuids(record_id: str) -> None:
    record = sample_record(record_id=record_id)
    run_id = run_events_for(record)[0]["run"]["runId"]
    assert str(uuid.UUID(run_id)) == run_id
    assert run_events_for(record)[1]["run"]["runId"] == run_id


def test_denied_without_error_uses_policy_reason() -> None:
    record = sample_record(outcome="denied", error=None,
                           policy={"allow": False, "reason": "tenant over budget"})
    facet = run_events_for(record)[1]["run"]["facets"]["errorMessage"]
    assert facet["message"] == "PolicyDenied: tenant over budget"


def test_custom_facets_carry_producer_and_schema_url() -> None:
    events = run_events_for(sample_record(), producer="https://example.com/me")
    facets = events[1]["run"]["facets"]
    for key in ("aiosMesh_call", "aiosMesh_modelVersion", "aiosMesh_policyDecision",
                "aiosMesh_cost", "aiosMesh_usage"):
        assert facets[key]["_producer"] == "https://example.com/me"
        assert facets[key]["_schemaURL"].startswith(CUSTOM_FACETS_SCHEMA_URL + "#/$defs/")
    assert "input" not in facets["aiosMesh_policyDecision"]
    assert events[0]["producer"] == "https://example.com/me"
    # cost and usage are only known at the end
    assert "aiosMesh_cost" not in events[0]["run"]["facets"]


@pytest.mark.parametrize(("status", "types"), [
    ("queued", ["START"]), ("running", ["START"]),
    ("succeeded", ["START", "COMPLETE"]), ("failed", ["START", "FAIL"]),
])
def test_workflow_run_events(status: str, types: list[str]) -> None:
    parent = {"run_id": str(uuid.uuid4()), "namespace": "flyte", "name": "outer"}
    events = workflow_run_events("f3a1b2c4d5", "pkg.flows:batch", status=status,
                                 started_at="2026-11-22T04:00:00+00:00", error="boom",
                                 parent=parent)
    assert [e["eventType"] for e in events] == types
    for event in events:
        SCHEMAS.validate(event)
        assert (event["job"]["namespace"], event["job"]["name"]) == ("flyte", "pkg.flows.batch")
        assert event["run"]["runId"] == run_uuid("f3a1b2c4d5", namespace="flyte")
        assert event["run"]["facets"]["parent"]["run"]["runId"] == parent["run_id"]


def test_workflow_run_events_rejects_unknown_status() -> None:
    with pytest.raises(ValueError, match="unknown workflow status"):
        workflow_run_events("x", "m:wf", status="exploded")


def test_record_parent_links_to_workflow_run() -> None:
    """A call inside a Flyte run names the same runId as that run's own events."""
    wf = workflow_run_events("f3a1b2c4d5", "pkg.flows:batch", status="running")[0]
    record = sample_record(parent={"run_id": "f3a1b2c4d5", "namespace": "flyte",
                                   "name": "pkg.flows.batch"})
    parent = run_events_for(record)[0]["run"]["facets"]["parent"]
    assert parent["run"]["runId"] == wf["run"]["runId"]
    assert parent["job"] == {"namespace": wf["job"]["namespace"], "name": wf["job"]["name"]}


def test_a_function_handler_is_not_an_input_dataset() -> None:
    from aios_mesh.lineage import run_events_for

    record = {"record_id": "r-1", "capability": {"name": "route-invoice", "version": "1"},
              "outcome": "ok", "tenant": "acme", "started_at": "2026-01-01T00:00:00+00:00",
              "ended_at": "2026-01-01T00:00:01+00:00",
              "model": {"name": "function:route-invoice", "version": "1"}}
    start, _ = run_events_for(record)
    assert start["inputs"] == []


# ------------------------------------------------------ the published custom-facet schema

REPO_ROOT = Path(__file__).resolve().parents[2]
#: ``raw.githubusercontent.com/<owner>/<repo>/<branch>/<path>`` → ``<path>`` in this repo.
FACETS_FILE = REPO_ROOT / CUSTOM_FACETS_SCHEMA_URL.split("/", 6)[6]
#: Fields every facet may carry (BaseFacet, and JobFacet's ``_deleted``).
BASE_FIELDS = {"_producer", "_schemaURL", "_deleted"}


def _published() -> dict[str, Any]:
    return dict(json.loads(FACETS_FILE.read_text(encoding="utf-8")))


def _published_validator(ref: str) -> Any:
    from jsonschema import Draft202012Validator, FormatChecker  # type: ignore[import-untyped]
    from referencing import Registry, Resource

    root = json.loads((packaged_schema_dir() / "OpenLineage.json").read_text(encoding="utf-8"))
    published = _published()
    registry: Registry[Any] = Registry().with_resources([
        (root["$id"], Resource.from_contents(root)),
        (published["$id"], Resource.from_contents(published)),
    ])
    return Draft202012Validator({"$ref": ref}, registry=registry,
                                format_checker=FormatChecker())


def _def_properties(definition: dict[str, Any]) -> tuple[str, set[str], set[str]]:
    base, own = definition["allOf"]
    return base["$ref"], set(own["properties"]), set(own["required"])


def check_custom_facets(events: list[dict[str, Any]]) -> set[str]:
    """Validate every ``aiosMesh_*`` facet of ``events`` against the published file; return
    the facet keys seen. Each field must be one the file declares (nothing undocumented)."""
    published = _published()
    by_key = _published_validator(CUSTOM_FACETS_SCHEMA_URL)
    seen: set[str] = set()
    for event in events:
        for facets in (event["run"].get("facets") or {}, event["job"].get("facets") or {}):
            for key, facet in facets.items():
                if not key.startswith(f"{FACET_PREFIX}_"):
                    continue
                seen.add(key)
                url = facet["_schemaURL"]
                assert url.startswith(f"{published['$id']}#/$defs/"), url
                _published_validator(url).validate(facet)
                by_key.validate({key: facet})
                definition = published["$defs"][url.rpartition("/")[2]]
                assert published["properties"][key] == {"$ref": f"#/$defs/{url.rpartition('/')[2]}"}
                _, declared, _ = _def_properties(definition)
                undeclared = set(facet) - declared - BASE_FIELDS
                assert not undeclared, f"{key}: fields the schema does not declare: {undeclared}"
    return seen


def test_the_schema_url_names_the_published_file() -> None:
    assert CUSTOM_FACETS_SCHEMA_URL.startswith("https://raw.githubusercontent.com/")
    assert FACETS_FILE.is_file(), f"{CUSTOM_FACETS_SCHEMA_URL} names no file of the repository"
    assert FACETS_FILE.relative_to(REPO_ROOT).as_posix() == \
        "docs/schemas/aios-mesh-facets-1-0-0.json"
    published = _published()
    assert published["$id"] == CUSTOM_FACETS_SCHEMA_URL == CUSTOM_FACETS_SCHEMA["$id"]
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(published)
    assert published["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_the_published_file_and_the_packaged_schema_agree() -> None:
    """Same facets, same fields, same required fields, same base facet: a facet change is
    made in aios_mesh/lineage.py and in the published file (a new version of it) together."""
    published = _published()["$defs"]
    packaged = dict(CUSTOM_FACETS_SCHEMA["$defs"])
    assert set(published) == set(packaged)
    for name, definition in published.items():
        assert _def_properties(definition) == _def_properties(packaged[name]), name
    keys = set(_published()["properties"])
    assert all(key.startswith(f"{FACET_PREFIX}_") for key in keys)
    assert len(keys) == len(published)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=records)
def test_custom_facets_match_the_published_schema(record: dict[str, Any]) -> None:
    check_custom_facets(run_events_for(record))


def test_every_custom_facet_is_checked() -> None:
    seen = check_custom_facets(run_events_for(sample_record()))
    assert seen == set(_published()["properties"])


async def test_facets_of_real_decision_records_match_the_published_schema(
        tmp_path: Path) -> None:
    """Records the mesh itself wrote to its audit log (an answered call, a failed one and a
    denied one), not hand-made ones."""
    from pydantic import BaseModel

    from aios_mesh import CapabilitySpec, Mesh
    from aios_mesh.capabilities import Price
    from aios_mesh.config import config_from_mapping
    from aios_mesh.embedded.serving import InProcessServing
    from aios_mesh.errors import MeshError
    from tests.unit.fakes import StaticPolicy, StaticRegistry

    class Question(BaseModel):
        text: str

    class Answer(BaseModel):
        text: str

    def model(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if any(item["text"] == "fail" for item in batch):
            raise RuntimeError("model failed")
        return [{"text": item["text"].upper()} for item in batch]

    serving = InProcessServing()
    serving.register("m", "3", model)
    config = config_from_mapping({"state_dir": str(tmp_path),
                                  "tenants": {"acme": {}, "globex": {}},
                                  "telemetry": {"lineage": False, "decision_events": False}})
    mesh = Mesh(config, capabilities=[CapabilitySpec(
        name="echo", input=Question, output=Answer, model="m@champion",
        policy="mesh/echo", price=Price(per_call=0.01))],
        adapters={"serving": serving, "registry": StaticRegistry({"m@champion": "3"}),
                  "policy": StaticPolicy(deny={"globex"})})
    try:
        answered = await mesh.ainvoke("echo", {"text": "hello"}, tenant="acme")
        with pytest.raises(MeshError):
            await mesh.ainvoke("echo", {"text": "fail"}, tenant="acme")
        with pytest.raises(MeshError):
            await mesh.ainvoke("echo", {"text": "hello"}, tenant="globex")
    finally:
        await mesh.aclose()
    entries = [json.loads(line) for line in
               (tmp_path / "audit.jsonl").read_text(encoding="utf-8").splitlines()]
    records = [e["record"] for e in entries if "kind" not in e["record"]]
    assert [r["outcome"] for r in records] == ["ok", "error", "denied"]
    assert records[0]["record_id"] == answered.record.record_id
    events = [event for record in records for event in run_events_for(record)]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE", "START", "FAIL",
                                                "START", "FAIL"]
    for event in events:
        SCHEMAS.validate(event)
    assert check_custom_facets(events) == set(_published()["properties"])
