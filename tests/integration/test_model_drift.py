"""Pinning made visible: a lock file pins ``clf@champion``; when the alias moves in the
registry (the embedded MLflow-on-sqlite registry of ``Mesh.local``), the pinned version still
answers and the record says ``model_drift``. Also pins the ``model.source`` form the MLflow
adapter writes into records (docs/adapters/mlflow.md): the version's download location
(``file:///…`` on sqlite), never a ``models:/`` indirection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from aios_mesh import Mesh
from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.lineage import run_events_for
from aios_mesh.testing.conformance.lineage import OpenLineageSchemas

pytestmark = pytest.mark.integration
SCHEMAS = OpenLineageSchemas()


class Ticket(BaseModel):
    text: str


class Label(BaseModel):
    label: str


def _model_folder(root: Path, version: int) -> Path:
    folder = root / f"model-v{version}"
    folder.mkdir(parents=True)
    (folder / "weights.txt").write_text(f"version {version}\n")
    return folder


def _publish(mesh: Mesh, folder: Path) -> str:
    registry: Any = mesh.ports.registry  # MlflowRegistry: publish_model is beyond the port
    ref = mesh.run_sync(registry.publish_model(folder, "clf", alias="champion"))
    version = str(ref.version)
    # served in this process under the registry's name and version
    mesh.ports.local_serving.register_function(
        "clf", version, lambda item, v=version: {"label": f"v{v}"})
    return version


def test_a_moved_alias_is_recorded_as_model_drift(tmp_path: Path) -> None:
    lock = tmp_path / "aios-mesh.lock"
    clf = CapabilitySpec(name="classify", input=Ticket, output=Label, model="clf@champion")
    with Mesh.local(tmp_path / "state", capabilities=[clf], tenants=["acme"],
                    lock_file=str(lock), cache={"alias_ttl_s": 0}) as mesh:
        assert mesh.ports.url("registry")[0].startswith("mlflow+sqlite://")
        first = _publish(mesh, _model_folder(tmp_path, 1))
        mesh.lock()
        assert json.loads(lock.read_text())["models"]["clf@champion"]["version"] == first
        before = mesh.invoke("classify", {"text": "x"}, tenant="acme")
        second = _publish(mesh, _model_folder(tmp_path, 2))  # moves champion to v2
        assert second != first
        after = mesh.invoke("classify", {"text": "x"}, tenant="acme")

    assert before.record.model_drift is None
    assert before.output == Label(label=f"v{first}")
    # the lock still decides who answers; the record says the registry moved on
    assert after.output == Label(label=f"v{first}")
    assert after.record.model is not None and after.record.model["version"] == first
    assert after.record.model_drift == {"clf@champion": {"pinned": first, "live": second}}
    doc = after.record.to_dict()
    assert doc["model_drift"] == after.record.model_drift

    # model.source is the download location of the version's files (what the adapter page
    # documents), not models:/ or runs:/
    source = str(after.record.model["source"])
    assert source.startswith("file:///"), source
    assert (tmp_path / "state" / "registry").resolve().as_uri() in source

    # the model is an input dataset named by the registry's file, its version a facet
    state = (tmp_path / "state").resolve().as_posix()
    assert doc["datasets"]["inputs"] == [{
        "namespace": "file", "name": f"{state}/registry/mlflow.db/clf", "type": "MODEL",
        "version": first}]
    for event in run_events_for(doc):
        SCHEMAS.validate(event)


def test_without_a_lock_there_is_no_drift(tmp_path: Path) -> None:
    clf = CapabilitySpec(name="classify", input=Ticket, output=Label, model="clf@champion")
    with Mesh.local(tmp_path / "state", capabilities=[clf], tenants=["acme"],
                    cache={"alias_ttl_s": 0}) as mesh:
        _publish(mesh, _model_folder(tmp_path, 1))
        second = _publish(mesh, _model_folder(tmp_path, 2))
        record = mesh.invoke("classify", {"text": "x"}, tenant="acme").record
    assert record.model is not None and record.model["version"] == second
    assert record.model_drift is None
