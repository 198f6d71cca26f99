"""A handler's nested call (``CallContext.invoke``) names the capability run that made it as
its parent, and the workflow run (or the outermost capability run) as its root — in the
record and in the OpenLineage parent facet, through the public Mesh API."""

from __future__ import annotations

import uuid
from pathlib import Path

from pydantic import BaseModel

from aios_mesh import Mesh
from aios_mesh.capabilities import capability
from aios_mesh.context import CallContext
from aios_mesh.lineage import run_events_for, run_uuid, workflow_run_events
from aios_mesh.record import DecisionRecord
from aios_mesh.testing.conformance.lineage import OpenLineageSchemas

SCHEMAS = OpenLineageSchemas()


class Text(BaseModel):
    text: str


class Seen(BaseModel):
    records: list[str] = []


@capability("embed", version="1")
async def embed(payload: Text, ctx: CallContext) -> Seen:
    return Seen(records=[ctx.record_id])


@capability("match", version="1")
async def match(payload: Text, ctx: CallContext) -> Seen:
    inner = await ctx.invoke("embed", {"text": payload.text})
    return Seen(records=[ctx.record_id, *inner.output.records])


@capability("route", version="1")
async def route(payload: Text, ctx: CallContext) -> Seen:
    inner = await ctx.invoke("match", {"text": payload.text})
    return Seen(records=[ctx.record_id, *inner.output.records])


def _invoke(mesh: Mesh, parent: dict[str, str] | None) -> dict[str, DecisionRecord]:
    seen: dict[str, DecisionRecord] = {}
    mesh.sinks.append(lambda record, _doc: seen.__setitem__(record.record_id, record))
    out = mesh.invoke("route", {"text": "acme gmbh"}, tenant="acme", parent=parent)
    mesh.flush()
    route_id, match_id, embed_id = out.output.records
    return {"route": seen[route_id], "match": seen[match_id], "embed": seen[embed_id]}


def test_nested_calls_name_the_calling_run_and_the_root(tmp_path: Path) -> None:
    with Mesh.local(tmp_path, capabilities=[embed, match, route], tenants=["acme"]) as mesh:
        runs = _invoke(mesh, parent=None)
    route_rec, match_rec, embed_rec = runs["route"], runs["match"], runs["embed"]
    assert route_rec.parent is None
    top = {"run_id": route_rec.record_id, "namespace": "aios-mesh", "name": "route"}
    assert match_rec.parent == {**top, "root": top}
    assert embed_rec.parent == {"run_id": match_rec.record_id, "namespace": "aios-mesh",
                                "name": "match", "root": top}
    start = run_events_for(embed_rec.to_dict())[0]
    SCHEMAS.validate(start)
    facet = start["run"]["facets"]["parent"]
    assert facet["run"]["runId"] == match_rec.record_id
    assert facet["job"] == {"namespace": "aios-mesh", "name": "match"}
    assert facet["root"]["run"]["runId"] == route_rec.record_id
    assert facet["root"]["job"] == {"namespace": "aios-mesh", "name": "route"}
    # the parent's runId and job are exactly those of the calling run's own events
    caller = run_events_for(match_rec.to_dict())[0]
    assert (facet["run"]["runId"], facet["job"]["name"]) == \
        (caller["run"]["runId"], caller["job"]["name"])


def test_inside_a_workflow_the_workflow_stays_the_root(tmp_path: Path) -> None:
    execution = f"f{uuid.uuid4().hex[:9]}"  # a Flyte execution name, not a UUID
    workflow = {"run_id": execution, "namespace": "flyte", "name": "pkg.flows.batch"}
    with Mesh.local(tmp_path, capabilities=[embed, match, route], tenants=["acme"]) as mesh:
        runs = _invoke(mesh, parent=workflow)
    assert runs["route"].parent == workflow
    assert runs["match"].parent == {"run_id": runs["route"].record_id,
                                    "namespace": "aios-mesh", "name": "route",
                                    "root": workflow}
    assert runs["embed"].parent is not None
    assert runs["embed"].parent["run_id"] == runs["match"].record_id
    assert runs["embed"].parent["root"] == workflow
    wf_run = workflow_run_events(execution, "pkg.flows:batch", status="running")[0]
    for name in ("match", "embed"):
        start = run_events_for(runs[name].to_dict())[0]
        SCHEMAS.validate(start)
        root = start["run"]["facets"]["parent"]["root"]
        assert root["run"]["runId"] == wf_run["run"]["runId"] == run_uuid(execution,
                                                                            namespace="flyte")
        assert root["job"] == {"namespace": "flyte", "name": "pkg.flows.batch"}
