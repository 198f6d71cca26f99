"""Ray Serve serving against a real Ray instance with Ray Serve (one per module, 2 CPUs).

* the Serving conformance suite on the echo-upper contract, over HTTP (Ray Serve's proxy)
  and over a deployment handle (this process is a Ray driver); ``@serve.batch`` batching,
  health, garbage answers, a route that does not exist;
* a scikit-learn model trained here, registered in an MLflow sqlite registry and deployed by
  ``aios-mesh serve rayserve``'s function, called through a full :class:`Mesh`: the record
  names the version that answered; a version the deployment does not serve is ``NotFound``;
* a replica killed (SIGKILL) mid-run under concurrent load: the mesh's retries carry every
  call to an answer, exactly one record each; Serve's proxy shut down: the breaker opens,
  Serve back on the same port: the breaker closes again (as on BentoML).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aios_mesh_rayserve import RayServeServing
from aios_mesh_rayserve.deployment import DeploymentOptions
from aios_mesh_rayserve.serve import deploy_registered
from aios_mesh_rayserve.testing import (
    BATCH_PROBE,
    ECHO_UPPER,
    GARBAGE,
    SLOW_PID,
    RayServeCluster,
    rayserve_cluster,
)
from pydantic import BaseModel

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
from aios_mesh.testing.processes import free_port
from tests.integration.served_model_checks import (
    INVOICE,
    Invoice,
    ServedModelChecks,
    Verdict,
    train_and_register,
)

pytestmark = pytest.mark.integration


def _serving(url: str, tmp_path: Path) -> RayServeServing:
    """The adapter from its URL, as a mesh builds it (the scheme table names it)."""
    serving = load_adapter("serving", url, base_dir=tmp_path)
    assert isinstance(serving, RayServeServing)
    return serving


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayServeCluster]:
    with rayserve_cluster(num_cpus=2) as running:
        running.deploy("echo", python_models={"echo-upper/1": ECHO_UPPER, "garbage/1": GARBAGE,
                                              "batch-probe/1": BATCH_PROBE},
                       options=DeploymentOptions(max_batch_size=16, batch_wait_timeout_s=0.02))
        yield running


# -- conformance: HTTP and handle ------------------------------------------------------------

class TestRayServeHTTP(ServingBasic, ServedModelChecks, ServingErrors):
    @pytest.fixture
    async def adapter(self, cluster: RayServeCluster,
                      tmp_path: Path) -> AsyncIterator[RayServeServing]:
        serving = _serving(f"{cluster.url('echo')}?timeout=20", tmp_path)
        yield serving
        await serving.aclose()

    @pytest.fixture
    def model_ref(self) -> ModelRef:
        return ModelRef(name="echo-upper", version="1")

    async def test_serve_batch_merges_concurrent_requests(self,
                                                          adapter: RayServeServing) -> None:
        probe = ModelRef("batch-probe", "1")
        answers = await asyncio.gather(*(adapter.infer(probe, {"i": i}) for i in range(48)))
        assert [a.output["i"] for a in answers] == list(range(48))  # each got its own
        assert max(a.output["batch"] for a in answers) > 1  # ... from merged batches
        assert max(a.output["batch"] for a in answers) <= 16  # max_batch_size holds

    @pytest.fixture
    async def small_batch_adapter(self, cluster: RayServeCluster,
                                  tmp_path: Path) -> AsyncIterator[RayServeServing]:
        small = _serving(f"{cluster.url('echo')}?max_batch=5", tmp_path)
        yield small
        await small.aclose()

    async def test_garbage_and_wrong_routes(self, adapter: RayServeServing,
                                            cluster: RayServeCluster, tmp_path: Path) -> None:
        with pytest.raises(InvalidOutput) as info:  # the model answers strings
            await adapter.infer(ModelRef("garbage", "1"), {"x": 1})
        assert info.value.hint
        no_app = _serving(cluster.url("no-such-app"), tmp_path)
        with pytest.raises(ConfigError) as missing:  # Serve's proxy: no route
            await no_app.infer(ModelRef("echo-upper", "1"), {"text": "a", "n": 1})
        assert missing.value.hint
        await no_app.aclose()


class TestRayServeHandle(ServingBasic, ServingErrors):
    """The same suite through ``rayserve+handle://echo`` (this test process is a driver of
    the Ray cluster): no HTTP, no JSON."""

    @pytest.fixture
    async def adapter(self, cluster: RayServeCluster,
                      tmp_path: Path) -> AsyncIterator[RayServeServing]:
        serving = _serving("rayserve+handle://echo?timeout=20", tmp_path)
        yield serving
        await serving.aclose()

    @pytest.fixture
    def model_ref(self) -> ModelRef:
        return ModelRef(name="echo-upper", version="1")

    async def test_unknown_application_is_not_found(self, cluster: RayServeCluster,
                                                    tmp_path: Path) -> None:
        with pytest.raises(NotFound) as info:
            await _serving("rayserve+handle://no-such-app", tmp_path).infer(
                ModelRef("echo-upper", "1"), {"text": "a", "n": 1})
        assert info.value.hint


def test_handle_mode_from_inside_a_ray_task(cluster: RayServeCluster) -> None:
    """A Ray task (a worker of the cluster, not this driver) calls the application through
    ``rayserve+handle://echo``."""
    import ray

    @ray.remote(num_cpus=0)
    def call() -> dict[str, object]:
        from aios_mesh_rayserve import RayServeServing as Serving

        from aios_mesh.ports.registry import ModelRef as Ref

        async def infer() -> dict[str, object]:
            serving = Serving(app="echo")
            return dict((await serving.infer(Ref("echo-upper", "1"),
                                             {"text": "in ray", "n": 2})).output)

        return asyncio.run(infer())

    output = ray.get(call.remote(), timeout=120)
    assert (output["text"], output["n"]) == ("IN RAY", 4)


async def test_nothing_listening_is_backend_unavailable(tmp_path: Path) -> None:
    serving = _serving(f"rayserve+http://127.0.0.1:{free_port()}/echo", tmp_path)
    with pytest.raises(BackendUnavailable) as info:
        await serving.infer(ModelRef("echo-upper", "1"), {"text": "a", "n": 1})
    assert info.value.retryable and info.value.hint
    with pytest.raises(BackendUnavailable):
        await serving.health()
    await serving.aclose()


@pytest.mark.parametrize("url", ["rayserve+http://127.0.0.1:9/x?bogus=1",
                                 "rayserve+http://u:p@127.0.0.1:9/x", "rayserve+handle://",
                                 "rayserve+http://127.0.0.1:9/x?timeout=-1"])
def test_bad_urls_are_config_errors(url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _serving(url, tmp_path)
    assert info.value.hint


# -- a registered model, deployed by `aios-mesh serve rayserve`'s function, in a Mesh ---------

@pytest.fixture(scope="module")
def registered(cluster: RayServeCluster,
               tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """(model name, registry URL, serving URL) of the champion deployed with 2 replicas."""
    workdir = tmp_path_factory.mktemp("rayserve-registered")
    name, registry_url = train_and_register(workdir, "rayserve-serving")
    done = deploy_registered(f"{name}@champion", port=cluster.http_port,
                             registry=registry_url, base_dir=workdir,
                             options=DeploymentOptions(num_replicas=2))
    assert (done.ref.name, done.ref.version, done.ref.alias) == (name, "1", "champion")
    assert done.url == cluster.url(name)
    return name, registry_url, done.url


def _mesh(state: Path, serving: object, registry: object, model: str,
          attempts: int = 1) -> Mesh:
    capability = CapabilitySpec(name="classify-invoice", input=Invoice, output=Verdict,
                                model=model)
    config = config_from_mapping({
        "state_dir": str(state), "tenants": {"acme": {}},
        "breaker": {"failure_threshold": 2, "reset_timeout_s": 0.5},
        "retry": {"max_attempts": attempts},
        "telemetry": {"lineage": False, "decision_events": False, "otel": False},
    })
    return Mesh(config, capabilities=[capability],
                adapters={"serving": serving, "registry": registry})


async def test_serve_rayserve_answers_with_the_registered_version(
        registered: tuple[str, str, str], tmp_path: Path) -> None:
    name, registry_url, url = registered
    async with _mesh(tmp_path, f"{url}?timeout=20", registry_url, f"{name}@champion") as mesh:
        refs = await mesh.aprepare()  # resolves the alias, checks the deployment serves it
        assert refs["classify-invoice"].version == "1"
        result = await mesh.ainvoke("classify-invoice", INVOICE, tenant="acme")
        assert result.output is not None
        assert result.output.label in {"approve", "review", "reject"}
        record = result.record
        assert record.outcome == "ok"
        assert record.model is not None
        assert (record.model["name"], record.model["version"]) == (name, "1")
        assert record.confidence is not None and 1 / 3 <= record.confidence <= 1
        assert record.serving == "rayserve+http"
    async with _mesh(tmp_path / "v2", url, registry_url,
                     f"{name}/2") as mesh:
        with pytest.raises(NotFound):  # v2 is registered, the deployment serves v1
            await mesh.ainvoke("classify-invoice", INVOICE, tenant="acme")
        (entry,) = [e.record for e in await mesh.port("audit").read()]
        assert entry["outcome"] == "rejected" and entry["model"]["version"] == "2"
        assert entry["attempts"] == 1  # NotFound is not retried


# -- a replica killed mid-run; Serve's proxy down and back ------------------------------------

class Probe(BaseModel):
    i: int
    delay: float


class Answer(BaseModel):
    pid: int
    i: int


async def test_killed_replica_is_absorbed_by_retries(cluster: RayServeCluster,
                                                     tmp_path: Path) -> None:
    url = cluster.deploy("slow", python_models={"slow-pid/1": SLOW_PID},
                         options=DeploymentOptions(num_replicas=2, max_batch_size=4,
                                                   batch_wait_timeout_s=0.01))
    registry = load_adapter("registry", "memory://", base_dir=tmp_path)
    await registry.register("slow-pid", f"python:{SLOW_PID}")
    serving = _serving(f"{url}?timeout=30", tmp_path)
    capability = CapabilitySpec(name="probe", input=Probe, output=Answer, model="slow-pid/1")
    config = config_from_mapping({
        "state_dir": str(tmp_path), "tenants": {"acme": {}},
        # one replica of two down is no outage: the calls in flight on it fail at once (about
        # a quarter of these), and a threshold below that would open the breaker (it did at 5)
        "breaker": {"failure_threshold": 20, "reset_timeout_s": 0.5},
        "retry": {"max_attempts": 4, "backoff_s": 0.2},
        "telemetry": {"lineage": False, "decision_events": False, "otel": False},
    })
    # both replicas' process ids (each answer names the replica that predicted it)
    warm = await asyncio.gather(*(serving.infer(ModelRef("slow-pid", "1"),
                                                {"i": i, "delay": 0.2}) for i in range(16)))
    pids = {p.output["pid"] for p in warm}
    assert len(pids) == 2, f"expected two replicas, saw {pids}"
    victim = min(pids)
    calls = 60
    async with Mesh(config, capabilities=[capability],
                    adapters={"serving": f"{url}?timeout=30", "registry": registry}) as mesh:
        async def one(i: int) -> Answer:
            await asyncio.sleep(i * 0.02)
            result = await mesh.ainvoke("probe", {"i": i, "delay": 0.3}, tenant="acme")
            assert result.output is not None
            return result.output

        async def kill_soon() -> None:
            await asyncio.sleep(0.4)  # requests are in flight on both replicas
            os.kill(victim, signal.SIGKILL)

        answers, _ = await asyncio.gather(asyncio.gather(*(one(i) for i in range(calls))),
                                          kill_soon())
        assert sorted(a.i for a in answers) == list(range(calls))  # every call answered
        records = [e.record for e in await mesh.port("audit").read()]
        assert len(records) == calls  # exactly one record per call
        assert all(r["outcome"] == "ok" for r in records)
        retried = sum(1 for r in records if r["attempts"] > 1)
        assert retried >= 1  # the kill hit calls in flight, and their retries answered
        assert mesh.breakers.states().get("rayserve+http/slow-pid/1#acme",
                                          "closed") == "closed"
    # Serve replaced the replica: a new process answers next to the survivor
    deadline = time.monotonic() + 60
    seen: set[int] = set()
    while time.monotonic() < deadline and len(seen - {victim}) < 2:
        got = await asyncio.gather(*(serving.infer(ModelRef("slow-pid", "1"),
                                                   {"i": 0, "delay": 0.1})
                                     for _ in range(8)))
        seen |= {p.output["pid"] for p in got}
    assert victim not in seen and len(seen) == 2
    print(f"replica {victim} killed mid-run: {calls} calls answered, {retried} retried")
    await serving.aclose()
    cluster.delete("slow")


async def test_proxy_down_opens_the_breaker_and_serve_back_closes_it(
        cluster: RayServeCluster, registered: tuple[str, str, str], tmp_path: Path) -> None:
    from ray import serve

    name, registry_url, url = registered
    async with _mesh(tmp_path, f"{url}?timeout=10", registry_url, f"{name}@champion") as mesh:
        assert (await mesh.ainvoke("classify-invoice", INVOICE, tenant="acme")).record.ok
        await asyncio.to_thread(serve.shutdown)  # proxy, controller and replicas gone
        for _ in range(2):
            with pytest.raises(BackendUnavailable):
                await mesh.ainvoke("classify-invoice", INVOICE, tenant="acme")
        with pytest.raises(CircuitOpen):  # fails fast, Serve is not even asked
            await mesh.ainvoke("classify-invoice", INVOICE, tenant="acme")
        # acme's compartment of the deployment's breaker
        key = f"rayserve+http/{name}/1#acme"
        assert mesh.breakers.states()[key] == "open"

        started = time.monotonic()
        # Serve back on the same port with the same version (what a restart of
        # `aios-mesh serve rayserve` does)
        await asyncio.to_thread(deploy_registered, f"{name}/1", port=cluster.http_port,
                                registry=registry_url, base_dir=tmp_path,
                                app=name, route=f"/{name}")
        if time.monotonic() - started < 0.6:
            await asyncio.sleep(0.6)
        assert mesh.breakers.states()[key] == "half_open"
        result = await mesh.ainvoke("classify-invoice", INVOICE, tenant="acme")
        assert result.record.model is not None and result.record.model["version"] == "1"
        assert mesh.breakers.states()[key] == "closed"
        breaker = mesh.breakers.get("rayserve+http", f"{name}/1", "acme")
        assert ("open", "half_open") in breaker.transitions
        assert ("half_open", "closed") in breaker.transitions


def test_a_ray_address_that_does_not_answer_is_named(tmp_path: Path) -> None:
    from aios_mesh_rayserve.serve import connect, main

    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        connect(address)
    assert address in info.value.message and "ray start" in (info.value.hint or "")
    assert time.monotonic() - started < 10
    # the CLI says it, with the fix, and exits 2 (the registry resolves first: no model)
    assert main(["nothing@champion", "--address", address, "--registry", "memory://",
                 "--state-dir", str(tmp_path)]) == 2
