"""``aios-mesh doctor`` tells the truth: every backend down (a closed port) is reported down
with a fix-it hint and a non-zero exit, within about one probe timeout; real running servers
(NATS, Redis, PostgreSQL, tansu, MLflow) are reported ok."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aios_mesh.cli import app
from aios_mesh.doctor import run_checks
from aios_mesh.mesh import Mesh
from aios_mesh.testing.servers import launcher

runner = CliRunner()
AIOS_MESH = Path(sys.executable).parent / "aios-mesh"


def closed_port() -> int:
    """A port nothing listens on: bound, then closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def down_config(tmp_path: Path, *, events: str, lineage: str) -> Path:
    p = closed_port
    path = tmp_path / "aios-mesh.toml"
    path.write_text(f"""
state_dir = "state"
[tenants.acme]
[telemetry]
lineage = false
decision_events = false
[backends]
serving = "bentoml+http://127.0.0.1:{p()}"
registry = "mlflow+http://127.0.0.1:{p()}"
retrieval = "qdrant://127.0.0.1:{p()}"
policy = "opa+http://127.0.0.1:{p()}"
events = "{events}"
orchestrator = "flyte://127.0.0.1:{p()}"
lineage = "{lineage}"
quota = "redis://127.0.0.1:{p()}"
audit = "postgresql://aios:s3cret@127.0.0.1:{p()}/aios"
[backends.serving_named]
gpu = "triton+grpc://127.0.0.1:{p()}"
""")
    return path


PORTS = ("serving", "registry", "retrieval", "policy", "events", "orchestrator", "lineage",
         "quota", "audit", "serving:gpu")


@pytest.mark.parametrize(("events", "lineage"), [
    ("nats://127.0.0.1:{}", "openlineage+http://127.0.0.1:{}"),
    ("kafka://127.0.0.1:{}", "openlineage+kafka://127.0.0.1:{}"),
], ids=["nats", "kafka"])
def test_every_backend_down_is_reported_down_with_a_hint(tmp_path: Path, events: str,
                                                         lineage: str) -> None:
    config = down_config(tmp_path, events=events.format(closed_port()),
                         lineage=lineage.format(closed_port()))
    with Mesh.from_config(config) as mesh:
        started = time.monotonic()
        checks = run_checks(mesh, timeout=2.0)
        took = time.monotonic() - started
    assert [c.port for c in checks] == list(PORTS)
    for check in checks:
        assert check.status == "down", check
        assert check.hint, check
    # probes run at once: about one timeout (plus the SDK imports), not ten
    assert took < 15, took
    assert all("s3cret" not in f"{c.url} {c.detail} {c.hint}" for c in checks)
    audit = next(c for c in checks if c.port == "audit")
    assert "under [backends]" in (audit.hint or "")

    result = runner.invoke(app, ["doctor", "--config", str(config), "--timeout", "2"])
    assert result.exit_code == 1, result.output
    assert result.output.count("fix:") == len(PORTS)
    assert "[backends]" in result.output  # markup escaped: the brackets survive
    assert "s3cret" not in result.output


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[dict[str, str]]:
    with ExitStack() as stack:
        nats = stack.enter_context(launcher("nats")(tmp_path / "nats"))
        redis = stack.enter_context(launcher("redis")(tmp_path / "redis"))
        kafka = stack.enter_context(launcher("kafka")())
        postgres = stack.enter_context(launcher("postgres")())
        mlflow = stack.enter_context(launcher("mlflow")(tmp_path / "mlflow"))
        yield {"nats": nats.address, "redis": redis.address, "kafka": kafka.address,
               "postgres": postgres, "mlflow": mlflow.removeprefix("http://")}


def test_real_servers_are_reported_ok(tmp_path: Path, servers: dict[str, str]) -> None:
    config = tmp_path / "aios-mesh.toml"
    config.write_text(f"""
state_dir = "state"
[tenants.acme]
[telemetry]
lineage = false
decision_events = false
[backends]
registry = "mlflow+http://{servers['mlflow']}"
events = "nats://{servers['nats']}"
lineage = "openlineage+kafka://{servers['kafka']}"
quota = "redis://{servers['redis']}"
audit = "{servers['postgres']}"
""")
    policies = tmp_path / "state" / "policies"
    policies.mkdir(parents=True)
    (policies / "p.rego").write_text("package p\n\ndefault allow := true\n")
    done = subprocess.run([str(AIOS_MESH), "doctor", "--config", str(config)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    for port in ("registry", "events", "lineage", "quota", "audit"):
        assert port in done.stdout
    assert "down" not in done.stdout

    with Mesh.from_config(config, events=f"kafka://{servers['kafka']}") as mesh:
        checks = {c.port: c for c in run_checks(mesh)}
    assert all(c.ok for c in checks.values()), checks
    assert "answered" in checks["events"].detail
    assert "answered" in checks["quota"].detail


SERVER_SCHEMES = [("serving", "bentoml+http"), ("serving", "triton+grpc"),
                  ("registry", "mlflow+http"), ("retrieval", "qdrant"), ("policy", "opa+http"),
                  ("events", "kafka"), ("events", "nats"), ("orchestrator", "flyte"),
                  ("lineage", "openlineage+http"), ("lineage", "openlineage+kafka"),
                  ("quota", "redis"), ("audit", "postgresql")]


@pytest.mark.parametrize(("port", "scheme"), SERVER_SCHEMES)
def test_every_server_adapter_offers_the_health_seam(port: str, scheme: str) -> None:
    from aios_mesh.backends import adapter_class

    cls = adapter_class(port, scheme)  # type: ignore[arg-type]
    assert asyncio.iscoroutinefunction(getattr(cls, "health", None)), cls
