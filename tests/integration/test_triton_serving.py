"""Triton serving against a real ``tritonserver`` (PyTriton 0.7, its own environment).

One server for the module, started by ``aios-mesh serve triton NAME@champion``
(``python -m aios_mesh_triton.serve``): it serves the conformance echo model and a scikit-learn
classifier trained here on generated data and registered in an MLflow sqlite registry. The
Serving conformance suite runs over HTTP and gRPC; a full :class:`aios_mesh.Mesh` calls the
registered model over gRPC; the last test kills the server and restarts it.

Needs the Triton environment (``AIOS_MESH_TRITON_PYTHON``, default ``.nox/triton/bin/python``;
see serving/triton/requirements.txt).
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from aios_mesh_triton import TensorMap, TensorSpec, TritonServing
from aios_mesh_triton.testing import start_triton_server, triton_python, wait_triton_ready
from mlflow.models import infer_signature
from mlflow.tracking._tracking_service.utils import _use_tracking_uri
from pydantic import BaseModel
from sklearn.linear_model import LogisticRegression

from aios_mesh import CapabilitySpec, Mesh
from aios_mesh.backends import load_adapter
from aios_mesh.config import config_from_mapping
from aios_mesh.errors import (
    BackendUnavailable,
    CircuitOpen,
    InvalidInput,
    InvalidOutput,
    NotFound,
)
from aios_mesh.ports.registry import ModelRef
from aios_mesh.testing.conformance.serving import ServingBasic, ServingErrors
from aios_mesh.testing.processes import LocalProcess, free_port, start_process, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ["amount", "lines", "vendor_age"]


@dataclass
class Served:
    """The running ``serve_triton`` process and what it serves."""

    http_port: int
    grpc_port: int
    registry_url: str
    name: str
    version: str
    x: pd.DataFrame
    clf: LogisticRegression
    workdir: Path
    proc: LocalProcess | None = None
    server_pid: int | None = None
    folder: str = ""
    _ctx: Any = None
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        """Run ``serve_triton(NAME@champion)`` in a subprocess until both models are ready."""
        cmd = [sys.executable, "-m", "aios_mesh_triton.serve", f"{self.name}@champion",
               "--registry", self.registry_url, "--http-port", str(self.http_port),
               "--grpc-port", str(self.grpc_port), "--python", triton_python()]
        env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "adapters"),
                                              os.environ.get("PYTHONPATH", "")]),
               "PYTRITON_HOME": str(self.workdir / "pytriton"),
               "MLFLOW_DISABLE_TELEMETRY": "true"}

        def ready() -> None:
            wait_triton_ready(self.http_port, [("echo-upper", "1"), (self.name, self.version)],
                              timeout=120)

        started = time.perf_counter()
        ctx = start_process(cmd, ready=ready, name="serve-triton", env=env, cwd=self.workdir,
                            log_dir=self.workdir)
        proc = ctx.__enter__()
        self._ctx = ctx
        self.proc = proc

        def pid() -> bool:
            found = re.search(r"^pid\s+(\d+)", proc.log.read_text(errors="replace"), re.M)
            if found:
                self.server_pid = int(found.group(1))
            return found is not None

        wait_until(pid, timeout=10, what="serve_triton's pid line")
        folder = re.search(r"^folder\s+(.+)$", proc.log.read_text(errors="replace"), re.M)
        assert folder is not None
        self.folder = folder.group(1).strip()
        self.restarts.append(time.perf_counter() - started)

    def restart_server(self) -> None:
        """Start tritonserver again on the same ports, straight from the artifact folder
        serve_triton printed (no second registry lookup: that costs an MLflow import)."""
        self.stop()
        started = time.perf_counter()
        ctx = start_triton_server(http_port=self.http_port, grpc_port=self.grpc_port,
                                  model=(self.name, self.version, self.folder),
                                  pytriton_home=self.workdir / "pytriton",
                                  log_dir=self.workdir)
        self.proc = ctx.__enter__()
        self._ctx = ctx
        self.server_pid = self.proc.pid
        self.restarts.append(time.perf_counter() - started)

    def kill_server(self) -> None:
        """SIGKILL tritonserver's whole process group (what a crash looks like)."""
        assert self.server_pid is not None
        try:
            os.killpg(self.server_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc is not None:
            self.proc.popen.wait(30)  # serve_triton notices and exits

    def stop(self) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)  # SIGTERM: serve_triton stops the server
            self._ctx = None
            self.proc = None
        if self.server_pid is not None:  # belt and braces: never leave a server behind
            try:
                os.killpg(self.server_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _train_and_register(registry_url: str, workdir: Path) -> tuple[str, pd.DataFrame,
                                                                  LogisticRegression]:
    rng = np.random.default_rng(11)
    x = pd.DataFrame({"amount": rng.gamma(2.0, 300.0, 400),
                      "lines": rng.integers(1, 30, 400).astype(float),
                      "vendor_age": rng.uniform(0, 10, 400)})
    score = x["amount"] / 600 - x["vendor_age"] / 5
    y = np.where(score > 0.8, "reject", np.where(score > -0.5, "review", "approve"))
    clf = LogisticRegression(max_iter=2000).fit(x, y)
    registry = load_adapter("registry", registry_url, base_dir=workdir)
    name = f"invoice-clf-{uuid.uuid4().hex[:6]}"

    async def register() -> None:
        exp = await registry.ensure_experiment("triton-tests")
        with _use_tracking_uri(registry.tracking_uri), \
                mlflow.start_run(experiment_id=exp) as run:
            mlflow.sklearn.log_model(clf, name="clf",
                                     signature=infer_signature(x, clf.predict(x)),
                                     pip_requirements=["scikit-learn"])
        await registry.register(name, f"runs:/{run.info.run_id}/clf")  # version 1
        await registry.register(name, f"runs:/{run.info.run_id}/clf")  # version 2
        await registry.set_alias(name, "champion", "2")
        await registry.aclose()

    asyncio.run(register())
    return name, x, clf


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("triton")
    registry_url = f"mlflow+sqlite:///{workdir}/registry/mlflow.db"  # absolute path
    name, x, clf = _train_and_register(registry_url, workdir)
    s = Served(free_port(), free_port(), registry_url, name, "2", x, clf, workdir)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def _url(served: Served, protocol: str) -> str:
    port = served.grpc_port if protocol == "grpc" else served.http_port
    return f"triton+{protocol}://127.0.0.1:{port}"


# --------------------------------------------------------------------------- conformance
class _Fixtures:
    protocol = "grpc"

    @pytest.fixture
    async def adapter(self, served: Served, tmp_path: Path) -> AsyncIterator[TritonServing]:
        serving = load_adapter("serving", _url(served, self.protocol), base_dir=tmp_path)
        assert isinstance(serving, TritonServing)
        yield serving
        await serving.aclose()

    @pytest.fixture
    def model_ref(self) -> ModelRef:
        return ModelRef(name="echo-upper", version="1")


class TestTritonHTTP(ServingBasic, ServingErrors, _Fixtures):
    protocol = "http"


class TestTritonGRPC(ServingBasic, ServingErrors, _Fixtures):
    protocol = "grpc"


# --------------------------------------------------------------------------- tensor maps
ECHO = ModelRef(name="echo-upper", version="1")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
async def test_server_rejects_wrong_dtype_and_shape(served: Served, tmp_path: Path,
                                                    protocol: str) -> None:
    wrong_dtype = TensorMap(inputs=(TensorSpec("text", "BYTES"), TensorSpec("n", "FP32")),
                            max_batch_size=16)
    wrong_shape = TensorMap(inputs=(TensorSpec("text", "BYTES"),
                                    TensorSpec("n", "INT64", shape=(2,))), max_batch_size=16)
    for tmap, payload in ((wrong_dtype, {"text": "a", "n": 1.5}),
                          (wrong_shape, {"text": "a", "n": [1, 2]})):
        serving = load_adapter("serving", _url(served, protocol), base_dir=tmp_path,
                               tensor_maps={"echo-upper": tmap})
        with pytest.raises(InvalidInput) as info:
            await serving.infer(ECHO, payload)
        assert "echo-upper" in info.value.message and info.value.hint
        await serving.aclose()


async def test_answer_off_the_map_is_invalid_output(served: Served, tmp_path: Path) -> None:
    off = TensorMap(inputs=(TensorSpec("text", "BYTES"), TensorSpec("n", "INT64")),
                    outputs=(TensorSpec("n", "FP32"),), max_batch_size=16)
    serving = load_adapter("serving", _url(served, "grpc"), base_dir=tmp_path,
                           tensor_maps={"echo-upper": off})
    with pytest.raises(InvalidOutput):
        await serving.infer(ECHO, {"text": "a", "n": 1})
    await serving.aclose()


async def test_explicit_map_renames_fields_and_default_map(served: Served,
                                                           tmp_path: Path) -> None:
    renamed = {"inputs": [{"name": "text", "dtype": "BYTES", "field": "body"},
                          {"name": "n", "dtype": "INT64", "field": "count"}],
               "outputs": [{"name": "text", "dtype": "BYTES", "field": "shout"}],
               "max_batch_size": 16}
    serving = load_adapter("serving", _url(served, "http"), base_dir=tmp_path,
                           tensor_maps={"echo-upper": renamed})
    pred = await serving.infer(ECHO, {"body": "hey", "count": 2})
    assert pred.output == {"shout": "HEY"} and pred.confidence is None
    await serving.aclose()
    # no config lookup: one tensor per JSON field (str → BYTES, int → INT64)
    plain = load_adapter("serving", _url(served, "grpc") + "?model_config=false&max_batch_size=8",
                         base_dir=tmp_path)
    preds = await plain.infer_batch(ECHO, [{"text": f"t{i}", "n": i} for i in range(20)])
    assert [p.output["n"] for p in preds] == [2 * i for i in range(20)]
    await plain.aclose()


# --------------------------------------------------------------------------- the mesh
class Invoice(BaseModel):
    amount: float
    lines: float
    vendor_age: float


class Verdict(BaseModel):
    label: str
    confidence: float | None = None


def _mesh(served: Served, state: Path, model: str | None = None) -> Mesh:
    spec = CapabilitySpec(name="approve-invoice", input=Invoice, output=Verdict,
                          model=model or f"{served.name}@champion")
    config = config_from_mapping({
        "state_dir": str(state), "lock_file": None, "tenants": {"acme": {}},
        "telemetry": {"lineage": False, "decision_events": False},
        "breaker": {"failure_threshold": 2, "reset_timeout_s": 0.5},
        "retry": {"max_attempts": 1}}, base_dir=state)
    return Mesh(config, capabilities=[spec],
                adapters={"serving": _url(served, "grpc"), "registry": served.registry_url})


def _rows(served: Served, n: int = 8) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in row.items()}
            for row in served.x.head(n).to_dict("records")]


async def test_registered_model_through_the_mesh(served: Served, tmp_path: Path) -> None:
    rows = _rows(served)
    async with _mesh(served, tmp_path) as mesh:
        results = [await mesh.ainvoke("approve-invoice", row, tenant="acme") for row in rows]
        frame = pd.DataFrame(rows)
        expected = served.clf.predict(frame)
        proba = served.clf.predict_proba(frame).max(axis=1)
        for result, label, conf in zip(results, expected, proba, strict=True):
            assert result.output.label == str(label)
            assert result.output.confidence is not None
            assert math.isclose(result.output.confidence, float(conf), rel_tol=1e-9)
            model = result.record.model
            assert model is not None
            assert (model["name"], model["version"], model["alias"]) == \
                (served.name, "2", "champion")
            assert result.record.serving == "triton+grpc"
            assert result.record.outcome == "ok"
        # a batch through the adapter is one request with a batch dimension
        serving = mesh.port("serving")
        ref = ModelRef(served.name, "2")
        preds = await serving.infer_batch(ref, rows)
        assert [p.output["label"] for p in preds] == [str(v) for v in expected]
        # version 1 exists in the registry but is not served: NotFound, never version 2
        with pytest.raises(NotFound):
            await serving.infer(ModelRef(served.name, "1"), rows[0])
    async with _mesh(served, tmp_path / "v1", model=f"{served.name}/1") as pinned:
        with pytest.raises(NotFound):
            await pinned.ainvoke("approve-invoice", rows[0], tenant="acme")


async def test_health(served: Served, tmp_path: Path) -> None:
    for protocol in ("http", "grpc"):
        serving = load_adapter("serving", _url(served, protocol), base_dir=tmp_path)
        await serving.health()
        await serving.aclose()
    dead = TritonServing(f"127.0.0.1:{free_port()}", protocol="grpc")
    with pytest.raises(BackendUnavailable):
        await dead.health()
    await dead.aclose()


async def test_kill_opens_the_breaker_restart_closes_it(served: Served,
                                                        tmp_path: Path) -> None:
    """Runs last in this module: it kills the shared server and starts it again."""
    row = _rows(served, 1)[0]
    async with _mesh(served, tmp_path) as mesh:
        ok = await mesh.ainvoke("approve-invoice", row, tenant="acme")
        assert ok.record.outcome == "ok"
        await asyncio.to_thread(served.kill_server)
        for _ in range(2):
            with pytest.raises(BackendUnavailable):
                await mesh.ainvoke("approve-invoice", row, tenant="acme")
        with pytest.raises(CircuitOpen):
            await mesh.ainvoke("approve-invoice", row, tenant="acme")
        assert "open" in mesh.breakers.states().values()
        await asyncio.to_thread(served.restart_server)
        await asyncio.sleep(0.6)  # past reset_timeout_s: the breaker half-opens
        again = await mesh.ainvoke("approve-invoice", row, tenant="acme")
        assert again.output.label == ok.output.label
        assert again.record.model is not None and again.record.model["version"] == "2"
        assert set(mesh.breakers.states().values()) == {"closed"}


def test_no_server_left_behind_on_bad_start(tmp_path: Path) -> None:
    """A server that cannot start fails fast with its log in the hint, and leaves nothing."""
    port = free_port()
    with pytest.raises(BackendUnavailable) as info, start_triton_server(
            http_port=port, grpc_port=free_port(),
            model=("broken", "1", str(tmp_path)), pytriton_home=tmp_path / "pt", timeout=60):
        pass
    assert "MLmodel" in (info.value.hint or "")
    out = subprocess.run(["pgrep", "-f", f"--http-port {port}"], capture_output=True,
                         text=True, check=False).stdout.strip()
    assert out == ""
