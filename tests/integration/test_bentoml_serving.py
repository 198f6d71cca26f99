"""BentoML serving against real ``bentoml serve`` processes (BentoML's own virtualenv).

* the Serving conformance suite on the echo-upper contract, plus adaptive batching, health,
  garbage answers;
* a scikit-learn model trained here, registered in an MLflow sqlite registry, served by
  ``aios-mesh serve bentoml NAME@ALIAS`` and called through a full :class:`Mesh`: the record
  names the version that answered; a version the server does not serve is ``NotFound``;
  killing the server opens the breaker, restarting it closes the breaker again.

The BentoML environment: ``$AIOS_MESH_BENTOML_PYTHON`` (default ``.nox/bentoml/bin/python``);
see :mod:`aios_mesh_bentoml.launch` for the commands that create it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aios_mesh_bentoml import BentoMLServing
from aios_mesh_bentoml.launch import bentoml_command, bentoml_python, server_env
from aios_mesh_bentoml.testing import (
    BATCH_PROBE,
    ECHO_UPPER,
    GARBAGE,
    BentoMLServer,
    bentoml_server,
    crash,
    is_ready,
    reaping,
)

from aios_mesh import CapabilitySpec, Mesh
from aios_mesh.backends import load_adapter
from aios_mesh.config import config_from_mapping
from aios_mesh.errors import (
    BackendUnavailable,
    CircuitOpen,
    ConfigError,
    InvalidOutput,
    NotFound,
)
from aios_mesh.ports.registry import ModelRef
from aios_mesh.testing.conformance.serving import ServingBasic, ServingErrors
from aios_mesh.testing.processes import LocalProcess, free_port, start_process, wait_until
from tests.integration.served_model_checks import (
    INVOICE,
    Invoice,
    ServedModelChecks,
    Verdict,
    train_and_register,
)

pytestmark = pytest.mark.integration

# read at import: the autouse fixture of tests/conftest.py clears AIOS_MESH_* per test
BENTOML_PYTHON = str(bentoml_python(os.environ.get("AIOS_MESH_BENTOML_PYTHON") or None))
REPO = Path(__file__).resolve().parents[2]


# -- the echo server: conformance, batching, garbage --------------------------------------------

@pytest.fixture(scope="module")
def echo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BentoMLServer]:
    with bentoml_server(tmp_path_factory.mktemp("bentoml-echo"), python=BENTOML_PYTHON,
                        python_models={"echo-upper/1": ECHO_UPPER, "garbage/1": GARBAGE,
                                       "batch-probe/1": BATCH_PROBE}) as server:
        yield server


class TestBentoMLServing(ServingBasic, ServedModelChecks, ServingErrors):
    @pytest.fixture
    async def adapter(self, echo_server: BentoMLServer,
                      tmp_path: Path) -> AsyncIterator[BentoMLServing]:
        serving = load_adapter("serving", f"bentoml+http://127.0.0.1:{echo_server.port}"
                                          "?timeout=20", base_dir=tmp_path)
        assert isinstance(serving, BentoMLServing)
        yield serving
        await serving.aclose()

    @pytest.fixture
    def model_ref(self) -> ModelRef:
        return ModelRef(name="echo-upper", version="1")

    async def test_adaptive_batching_merges_concurrent_requests(
            self, adapter: BentoMLServing) -> None:
        probe = ModelRef("batch-probe", "1")
        answers = await asyncio.gather(*(adapter.infer(probe, {"i": i}) for i in range(48)))
        assert [a.output["i"] for a in answers] == list(range(48))  # each got its own
        assert max(a.output["batch"] for a in answers) > 1  # ... from merged batches

    @pytest.fixture
    async def small_batch_adapter(self, echo_server: BentoMLServer
                                  ) -> AsyncIterator[BentoMLServing]:
        small = BentoMLServing(echo_server.url, max_batch=5)
        yield small
        await small.aclose()

    async def test_garbage_answers_are_invalid_output(self, adapter: BentoMLServing,
                                                      echo_server: BentoMLServer) -> None:
        with pytest.raises(InvalidOutput) as info:  # the model answers strings
            await adapter.infer(ModelRef("garbage", "1"), {"x": 1})
        assert info.value.hint
        wrong_api = BentoMLServing(echo_server.url, endpoint="/models")  # a JSON object
        with pytest.raises(InvalidOutput):
            await wrong_api.infer(ModelRef("echo-upper", "1"), {"text": "a", "n": 1})
        no_api = BentoMLServing(echo_server.url, endpoint="/nope")
        with pytest.raises(ConfigError):
            await no_api.infer(ModelRef("echo-upper", "1"), {"text": "a", "n": 1})
        await wrong_api.aclose()
        await no_api.aclose()


async def test_nothing_listening_is_backend_unavailable(tmp_path: Path) -> None:
    serving = BentoMLServing(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(BackendUnavailable) as info:
        await serving.infer(ModelRef("echo-upper", "1"), {"text": "a", "n": 1})
    assert info.value.retryable and info.value.hint
    with pytest.raises(BackendUnavailable):
        await serving.health()
    await serving.aclose()


# -- a registered model served by `aios-mesh serve bentoml`, through a full Mesh ---------------

@dataclass
class Served:
    """The `serve_bentoml` process of a registered model, restartable on the same port."""

    name: str
    registry_url: str
    port: int
    workdir: Path
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    process: LocalProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, direct: bool = False) -> None:
        """``aios-mesh serve bentoml NAME@champion`` (the CLI's function); ``direct`` restarts
        faster with ``bentoml serve`` itself and the version that command pinned."""
        home = self.workdir / "bentoml-home"
        if direct:
            cmd = bentoml_command(BENTOML_PYTHON, self.port)
            env = server_env(home=home, model=f"{self.name}/1", registry=self.registry_url,
                             base_dir=self.workdir)
        else:
            code = ("import sys; from aios_mesh_bentoml.serve import main; "
                    "sys.exit(main(sys.argv[1:]))")
            cmd = [sys.executable, "-c", code, f"{self.name}@champion", "--port",
                   str(self.port), "--registry", self.registry_url, "--python", BENTOML_PYTHON,
                   "--state-dir", str(self.workdir)]
            # this checkout's packages (aios_mesh, aios_mesh_bentoml) as pytest sees them
            path = [str(REPO), str(REPO / "adapters"), os.environ.get("PYTHONPATH", "")]
            env = {"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True",
                   "PYTHONPATH": os.pathsep.join(filter(None, path))}
        process = self.stack.enter_context(start_process(
            cmd, name="serve-bentoml", env=env, cwd=self.workdir, log_dir=self.workdir,
            ready=lambda: wait_until(lambda: is_ready(self.url), timeout=90, interval=0.1,
                                     what=f"aios-mesh serve bentoml on {self.url}")))
        self.process = self.stack.enter_context(reaping(process))


@pytest.fixture(scope="module", autouse=True)
def _registered_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Future[Served]]:
    """Train, register and start serving in the background while the echo tests run (both
    start-ups are seconds of imports); stopped at the end of the module whatever happened."""
    workdir = tmp_path_factory.mktemp("bentoml-registered")
    stack = contextlib.ExitStack()

    def build() -> Served:
        name, registry_url = train_and_register(workdir, "bentoml-serving")
        server = Served(name, registry_url, free_port(), workdir, stack)
        server.start()
        return server

    with stack, ThreadPoolExecutor(1) as pool:
        future = pool.submit(build)
        try:
            yield future
        finally:
            with contextlib.suppress(Exception):
                future.result()  # let a start in progress finish, so the stack stops it


@pytest.fixture(scope="module")
def served(_registered_server: Future[Served]) -> Served:
    return _registered_server.result()


def _mesh(served: Served, state: Path, model_spec: str | None = None) -> Mesh:
    capability = CapabilitySpec(name="classify-invoice", input=Invoice, output=Verdict,
                                model=model_spec or f"{served.name}@champion")
    config = config_from_mapping({
        "state_dir": str(state), "tenants": {"acme": {}},
        "breaker": {"failure_threshold": 2, "reset_timeout_s": 0.5},
        "retry": {"max_attempts": 1},
        "telemetry": {"lineage": False, "decision_events": False, "otel": False},
    })
    return Mesh(config, capabilities=[capability],
                adapters={"serving": f"bentoml+http://127.0.0.1:{served.port}?timeout=10",
                          "registry": served.registry_url})


async def test_serve_bentoml_answers_with_the_registered_version(served: Served,
                                                                 tmp_path: Path) -> None:
    log = served.process.log.read_text() if served.process else ""
    assert f"model    {served.name}" in log and "version  1  (alias champion)" in log
    async with _mesh(served, tmp_path) as mesh:
        refs = await mesh.aprepare()  # resolves the alias and checks the server serves it
        assert refs["classify-invoice"].version == "1"
        result = await mesh.ainvoke("classify-invoice", INVOICE, tenant="acme")
        assert result.output is not None
        assert result.output.label in {"approve", "review", "reject"}
        record = result.record
        assert record.outcome == "ok"
        assert record.model is not None
        assert (record.model["name"], record.model["version"]) == (served.name, "1")
        assert record.serving == "bentoml+http"
        assert record.confidence is not None and 1 / 3 <= record.confidence <= 1


async def test_a_version_the_server_does_not_serve_is_not_found(served: Served,
                                                                tmp_path: Path) -> None:
    serving = BentoMLServing(served.url)
    (ok,) = await serving.infer_batch(ModelRef(served.name, "1"), [INVOICE])
    assert "label" in ok.output
    with pytest.raises(NotFound) as info:  # v2 exists in the registry, the server has v1
        await serving.infer(ModelRef(served.name, "2"), INVOICE)
    assert not info.value.retryable and info.value.hint
    await serving.aclose()
    async with _mesh(served, tmp_path, model_spec=f"{served.name}/2") as mesh:
        with pytest.raises(NotFound):
            await mesh.ainvoke("classify-invoice", INVOICE, tenant="acme")
        (entry,) = [e.record for e in await mesh.port("audit").read()]
        assert entry["outcome"] == "rejected" and entry["model"]["version"] == "2"
        assert entry["attempts"] == 1  # NotFound is not retried


async def test_killed_server_opens_the_breaker_and_restart_closes_it(
        served: Served, tmp_path: Path) -> None:
    async with _mesh(served, tmp_path) as mesh:
        assert (await mesh.ainvoke("classify-invoice", INVOICE, tenant="acme")).record.ok
        assert served.process is not None
        crash(served.process)  # SIGKILL launcher, arbiter and workers, mid-run
        for _ in range(2):
            with pytest.raises(BackendUnavailable):
                await mesh.ainvoke("classify-invoice", INVOICE, tenant="acme")
        with pytest.raises(CircuitOpen):  # fails fast, the server is not even asked
            await mesh.ainvoke("classify-invoice", INVOICE, tenant="acme")
        # acme's compartment of the server's breaker (one tenant alone never opens the
        # shared one; the next call of any other tenant would probe the server itself)
        key = f"bentoml+http/{served.name}/1#acme"
        assert mesh.breakers.states()[key] == "open"

        started = time.monotonic()
        await asyncio.to_thread(served.start, direct=True)  # same port, same version
        if time.monotonic() - started < 0.6:
            await asyncio.sleep(0.6)
        assert mesh.breakers.states()[key] == "half_open"
        result = await mesh.ainvoke("classify-invoice", INVOICE, tenant="acme")
        assert result.record.model is not None and result.record.model["version"] == "1"
        assert mesh.breakers.states()[key] == "closed"
        breaker = mesh.breakers.get("bentoml+http", f"{served.name}/1", "acme")
        assert ("open", "half_open") in breaker.transitions
        assert ("half_open", "closed") in breaker.transitions
