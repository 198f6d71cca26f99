"""Capabilities called from Flyte tasks: the ticket_flow example, run by flytekit locally.

One prepared state (model registered, KB indexed, lock written) serves every test. The
in-process runs use a private Flyte local cache (``HOME`` and flytekit's cache folder point
into the temp dir); the ``pyflyte run`` test runs the README's command in a subprocess.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from aios_mesh.lineage import run_uuid
from aios_mesh.testing.conformance.lineage import OpenLineageSchemas
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

EXAMPLE = REPO_ROOT / "examples" / "ticket_flow"
WORKFLOW = "examples.ticket_flow.workflow.ticket_flow"


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A private config + state, prepared in-process, and a private flytekit local cache."""
    from aios_mesh_flyte.tasks import close_meshes, current_mesh
    from flytekit.core import local_cache

    from examples.ticket_flow.prepare import prepare

    root = tmp_path_factory.mktemp("ticket_flow")
    config = root / "aios-mesh.toml"
    shutil.copy(EXAMPLE / "aios-mesh.toml", config)
    home = root / "home"
    home.mkdir()
    cache = local_cache.LocalTaskCache
    before = local_cache.CACHE_LOCATION
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        if cache._initialized:
            cache._cache.close()
            cache._initialized = False
        local_cache.CACHE_LOCATION = str(home / ".flyte" / "local-cache")
        prepare(current_mesh(config))
        yield {"root": root, "config": config, "home": home, "state": root / "state"}
        close_meshes()
        if cache._initialized:
            cache._cache.close()
            cache._initialized = False
        local_cache.CACHE_LOCATION = before


@pytest.fixture
def env(state: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setenv("AIOS_MESH_CONFIG", str(state["config"]))
    monkeypatch.setenv("HOME", str(state["home"]))
    return state


def records(state: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line)["record"]
            for line in (state / "audit.jsonl").read_bytes().splitlines()]


def lineage(state: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line)
            for line in (state / "lineage" / "events.jsonl").read_bytes().splitlines()]


def of_run(state: Path, run_id: str) -> list[dict[str, Any]]:
    return [r for r in records(state) if (r.get("parent") or {}).get("run_id") == run_id]


def run_local(n: int = 20) -> Any:
    from aios_mesh_flyte.tasks import current_mesh

    from examples.ticket_flow.workflow import ticket_flow

    summary = ticket_flow(n=n)
    assert current_mesh().flush(20)
    return summary


@pytest.fixture(scope="module")
def schemas() -> OpenLineageSchemas:
    return OpenLineageSchemas()


def check_run_lineage(state: Path, run_id: str, workflow: str, calls: list[dict[str, Any]],
                      schemas: OpenLineageSchemas) -> None:
    events = lineage(state)
    wf_run = run_uuid(run_id, namespace="flyte")
    own = [e for e in events if e["run"]["runId"] == wf_run]
    assert [e["eventType"] for e in own] == ["START", "COMPLETE"]
    assert all(e["job"] == {**e["job"], "namespace": "flyte", "name": workflow} for e in own)
    by_run: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_run.setdefault(event["run"]["runId"], []).append(event)
    for record in calls:
        got = by_run[record["record_id"]]
        assert [e["eventType"] for e in got] in (["START", "COMPLETE"], ["START", "FAIL"])
        for event in got:
            parent = event["run"]["facets"]["parent"]
            assert parent["run"]["runId"] == wf_run
            assert parent["job"] == {"namespace": "flyte", "name": workflow}
    for event in [*own, *(e for r in calls for e in by_run[r["record_id"]])]:
        schemas.validate(event)


def test_local_run_links_every_record_and_event_to_the_workflow_run(
        env: dict[str, Path], schemas: OpenLineageSchemas) -> None:
    summary = run_local()
    assert (summary.total, summary.automated + summary.review + summary.denied) == (20, 20)
    assert summary.denied == 6 and summary.other == 0  # initech: every 3rd ticket, suspended
    assert summary.automated > 0 and summary.with_context == summary.automated
    assert summary.model_version == "ticket-classifier/1"
    calls = of_run(env["state"], summary.run_id)
    classify = [r for r in calls if r["capability"]["name"] == "classify-ticket"]
    retrieve = [r for r in calls if r["capability"]["name"] == "retrieve-context"]
    assert len(classify) == 20 and len(retrieve) == summary.automated
    outcomes = [r["outcome"] for r in classify]
    assert (outcomes.count("ok"), outcomes.count("review"), outcomes.count("denied")) == (
        summary.automated, summary.review, summary.denied)
    for record in calls:
        assert record["parent"] == {"run_id": summary.run_id, "namespace": "flyte",
                                    "name": WORKFLOW}
        assert record["caller"].startswith("flyte:examples.ticket_flow.workflow.")
    assert all(r["model"]["version"] == "1" for r in classify if r["outcome"] == "ok")
    check_run_lineage(env["state"], summary.run_id, WORKFLOW, calls, schemas)


def test_second_identical_run_is_answered_by_the_flyte_cache(env: dict[str, Path]) -> None:
    first = run_local()
    count = len(records(env["state"]))
    again = run_local()
    assert again.run_id != first.run_id
    assert (again.automated, again.review, again.denied) == (
        first.automated, first.review, first.denied)
    assert len(records(env["state"])) == count  # every capability task was a cache hit
    assert of_run(env["state"], again.run_id) == []
    wf_events = [e for e in lineage(env["state"])
                 if e["run"]["runId"] == run_uuid(again.run_id, namespace="flyte")]
    assert [e["eventType"] for e in wf_events] == ["START", "COMPLETE"]


def test_new_model_version_changes_the_cache_key(env: dict[str, Path]) -> None:
    from aios_mesh_flyte.tasks import current_mesh

    from examples.ticket_flow.prepare import prepare

    before = run_local()
    ref = prepare(current_mesh(), index=False, seed=12)  # register v2, move alias, re-lock
    assert ref.version != "1"
    lock = orjson.loads((env["state"] / "aios-mesh.lock").read_bytes())
    assert lock["models"]["ticket-classifier@champion"]["version"] == ref.version
    after = run_local()
    assert after.model_version == f"ticket-classifier/{ref.version}" != before.model_version
    classify = [r for r in of_run(env["state"], after.run_id)
                if r["capability"]["name"] == "classify-ticket"]
    assert len(classify) == 20  # a new key: every ticket classified again
    assert {r["model"]["version"] for r in classify if r["model"]} == {ref.version}


def test_tasks_register_for_a_cluster(env: dict[str, Path]) -> None:
    """Serialised as for `pyflyte register`: our resolver, the config in the environment,
    the cache version, and the resolver finds the same task again."""
    from collections import OrderedDict

    from aios_mesh_flyte.tasks import capability_resolver
    from flytekit.configuration import ImageConfig, SerializationSettings
    from flytekit.tools.translator import get_serializable

    from examples.ticket_flow import workflow

    settings = SerializationSettings(image_config=ImageConfig.auto_default_image(),
                                     project="p", domain="d", version="v")
    spec = get_serializable(OrderedDict(), settings, workflow.classify)
    container = spec.template.container
    args = container.args
    at = args.index("--resolver")
    assert args[at + 1] == "aios_mesh_flyte.tasks.capability_resolver"
    loader = args[args.index("--", at) + 1:]
    assert loader == ["task-module", "examples.ticket_flow.workflow", "task-name", "classify"]
    assert capability_resolver.load_task(loader) is workflow.classify
    assert container.env["AIOS_MESH_CONFIG"] == "examples/ticket_flow/aios-mesh.toml"
    assert spec.template.metadata.discoverable
    assert spec.template.metadata.discovery_version == "1"  # the capability version
    assert list(spec.template.interface.inputs) == ["payload", "tenant", "model_version"]
    get_serializable(OrderedDict(), settings, workflow.ticket_flow)  # the whole workflow


def test_pyflyte_run_command(state: dict[str, Path], schemas: OpenLineageSchemas,
                             tmp_path: Path) -> None:
    """The README's command, in a subprocess with its own HOME (so its own Flyte cache)."""
    from aios_mesh_flyte.tasks import close_meshes

    close_meshes()  # the subprocess opens the same state folder
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "AIOS_MESH_CONFIG": str(state["config"]),
           "MLFLOW_DISABLE_TELEMETRY": "true", "COLUMNS": "200"}
    pyflyte = Path(sys.executable).with_name("pyflyte")
    run = subprocess.run([str(pyflyte), "run", "examples/ticket_flow/workflow.py",
                          "ticket_flow", "--n", "20"], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    found = re.search(r"TicketSummary\(run_id='([^']+)'.*total=(\d+), automated=(\d+), "
                      r"review=(\d+), denied=(\d+), other=(\d+)", run.stdout)
    assert found, run.stdout[-2000:]
    run_id = found.group(1)
    total, automated, review, denied, other = map(int, found.groups()[1:])
    assert (total, denied, other) == (20, 6, 0) and automated + review == 14
    calls = of_run(state["state"], run_id)  # pyflyte names it from the package root
    workflow = WORKFLOW  # the same job name as an in-process run: one job in lineage
    assert {r["parent"]["name"] for r in calls} == {workflow}
    assert len([r for r in calls if r["capability"]["name"] == "classify-ticket"]) == 20
    check_run_lineage(state["state"], run_id, workflow, calls, schemas)
