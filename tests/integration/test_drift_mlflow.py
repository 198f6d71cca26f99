"""Drift references kept with the model in a real MLflow server (and on sqlite): as a run
artifact named by a model-version tag; a mesh on that server loads the reference of the
version that answers, raises the alarm on drifting calls, and the retraining hook runs a
real local Flyte workflow."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aios_mesh_mlflow import MlflowRegistry
from aios_mesh_mlflow.testing import shared_mlflow_servers, stop_shared_mlflow_servers
from mlflow import MlflowClient

from aios_mesh import Mesh
from aios_mesh.backends import load_adapter
from aios_mesh.config import load_config
from aios_mesh.embedded.serving import InProcessServing
from aios_mesh.lifecycle.drift import (
    DOCUMENT_KEY,
    DriftReference,
    DriftSettings,
    load_reference,
    log_reference,
)
from aios_mesh.lifecycle.drift_monitor import RetrainWorkflow, install_drift_monitor
from aios_mesh.ports.orchestrator import ExecutionStatus
from tests.unit.fakes import StaticPolicy
from tests.unit.test_drift import SPEC, calm, predict, shouting

pytestmark = pytest.mark.integration

WORKFLOW = "aios_mesh.testing.conformance.workflows:add_wf"


@pytest.fixture(scope="module")
def server_url(request: pytest.FixtureRequest) -> str:
    request.session.addfinalizer(stop_shared_mlflow_servers)
    return shared_mlflow_servers("sqlite")["sqlite"]


def _reference(version: str | None = "1", n: int = 300) -> DriftReference:
    rng = random.Random(5)
    payloads = [calm(rng) for _ in range(n)]
    return DriftReference.build(SPEC, calls=[(p, predict(p)) for p in payloads],
                                model_version=version)


@pytest.fixture(params=["server", "sqlite"])
async def registry(request: pytest.FixtureRequest,
                   tmp_path: Path) -> AsyncIterator[MlflowRegistry]:
    url = (f"mlflow+{request.getfixturevalue('server_url')}" if request.param == "server"
           else "mlflow+sqlite:///registry/mlflow.db")
    adapter = load_adapter("registry", url, base_dir=tmp_path)
    assert isinstance(adapter, MlflowRegistry)
    yield adapter
    await adapter.aclose()


async def test_reference_is_an_artifact_of_the_versions_run(registry: MlflowRegistry) -> None:
    name = f"drift-{uuid.uuid4().hex[:8]}"
    experiment = await registry.ensure_experiment("drift-tests")
    client = MlflowClient(tracking_uri=registry.tracking_uri,
                          registry_uri=registry.tracking_uri)
    run_id = await asyncio.to_thread(lambda: client.create_run(experiment).info.run_id)
    await registry.register(name, "s3://aios-mesh-drift/m/1", run_id=run_id)
    await registry.register(name, "s3://aios-mesh-drift/m/2")  # no run of its own
    await registry.set_alias(name, "champion", "1")

    ref = await log_reference(registry, f"{name}@champion", _reference("1"))
    assert ref.version == "1"
    tags = (await asyncio.to_thread(client.get_model_version, name, "1")).tags
    uri = tags[f"aios.doc.{DOCUMENT_KEY}"]
    assert uri == f"runs:/{run_id}/aios-mesh/{name}/1/{DOCUMENT_KEY}.json"
    listed = await asyncio.to_thread(client.list_artifacts, run_id, f"aios-mesh/{name}/1")
    assert [Path(a.path).name for a in listed] == [f"{DOCUMENT_KEY}.json"]

    # a version registered from a bare URI gets a run of its own in the aios-mesh experiment
    await log_reference(registry, f"{name}/2", _reference(None))
    tags = (await asyncio.to_thread(client.get_model_version, name, "2")).tags
    doc_run = await asyncio.to_thread(client.get_run, tags["aios.doc.run"])
    experiment_name = (await asyncio.to_thread(client.get_experiment,
                                               doc_run.info.experiment_id)).name
    assert experiment_name == "aios-mesh" and doc_run.info.run_id != run_id

    loaded = await load_reference(registry, f"{name}@champion")
    assert loaded is not None and loaded.model_version == "1" and loaded.model == name
    assert loaded.numeric == _reference("1").numeric
    second = await load_reference(registry, f"{name}/2")
    assert second is not None and second.model_version == "2"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """flytekit must never touch the real ~/.flyte in tests."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def test_mesh_on_the_server_alarms_and_runs_the_retraining_workflow(
        server_url: str, tmp_path: Path, home: Path) -> None:
    name = f"drift-clf-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "aios-mesh.toml"
    config.write_text(f"""
state_dir = "{tmp_path / 'state'}"
[tenants.acme]
[backends]
registry = "mlflow+{server_url}"
[telemetry]
lineage = false
[relay]
mode = "thread"
""")
    serving = InProcessServing()
    serving.register_function(name, "1", predict)
    spec = SPEC.model_copy(update={"model": f"{name}@champion"})
    mesh = Mesh(load_config(config), capabilities=[spec],
                adapters={"serving": serving, "policy": StaticPolicy()})
    try:
        async def publish() -> None:
            registry = mesh.ports.registry
            await registry.register(name, "s3://aios-mesh-drift/clf/1")
            await registry.set_alias(name, "champion", "1")
            await log_reference(mesh, f"{name}@champion", _reference("1"))

        mesh.run_sync(publish())
        hook = RetrainWorkflow(lambda: mesh.ports.orchestrator, WORKFLOW, run=mesh.run_sync,
                               inputs=lambda doc: {"a": doc["features_tested"],
                                                   "b": len(doc["drifted"])})
        monitor = install_drift_monitor(mesh, DriftSettings(window=100, check_every=20,
                                                            min_count=20), on_alarm=hook)
        rng = random.Random(6)
        for _ in range(150):
            mesh.invoke(spec.name, calm(rng), tenant="acme")
        assert mesh.flush(30)
        assert monitor.alarms == [] and monitor.failures == 0
        for _ in range(100):
            mesh.invoke(spec.name, shouting(rng), tenant="acme")
        assert mesh.flush(30)
        assert monitor.failures == 0
        (alarm,) = monitor.alarms
        assert (alarm.model, alarm.model_version) == (name, "1")
        assert hook.join(300)
        (execution,) = hook.finished
        assert execution.status is ExecutionStatus.SUCCEEDED, execution.error
        doc = alarm.to_dict()
        assert execution.outputs == {"o0": doc["features_tested"] + len(doc["drifted"])}
        entries = [json.loads(line)["record"] for line in
                   (tmp_path / "state" / "audit.jsonl").read_text().splitlines()]
        assert [e["alarm_id"] for e in entries if e.get("kind") == "drift_alarm"] == [alarm.id]
    finally:
        mesh.close()
