"""The gateway server as a process: graceful shutdown under SIGTERM (in-flight calls finish,
then the outbox is shipped), ``--workers 2`` with one ``/metrics`` scrape covering both
workers, and a bad config refused before any worker starts."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from aios_mesh.gateway.testing import running_gateway
from aios_mesh.outbox import Outbox
from tests.integration.test_gateway_http import APP, REPO, gateway_env, metric, post


def test_sigterm_lets_the_call_in_flight_finish_then_ships_the_outbox(tmp_path: Path) -> None:
    _, env = gateway_env(tmp_path)
    answers: list[httpx.Response] = []
    with running_gateway(None, app=APP, env=env, cwd=REPO, args=["--graceful", "20"]) as gw:
        caller = threading.Thread(target=lambda: answers.append(
            post(gw, "slow", {"text": "last words", "seconds": 2.0})))
        caller.start()
        time.sleep(0.8)  # the call is in flight
        gw.process.popen.send_signal(signal.SIGTERM)
        caller.join(30)
        # uvicorn ends by re-raising the signal it shut down for
        assert gw.process.popen.wait(30) in (0, -signal.SIGTERM), gw.process.tail()
        assert "Application shutdown complete" in gw.process.tail()
        late = None
        try:
            late = httpx.get(f"{gw.url}/healthz", timeout=1)
        except httpx.TransportError:
            pass
        assert late is None  # it stopped listening
    assert [a.status_code for a in answers] == [200], gw.process.tail()
    record_id = answers[0].json()["record_id"]
    log = (tmp_path / "state" / "audit.jsonl").read_text()
    assert record_id in log  # recorded before the answer went out
    outbox = Outbox(tmp_path / "state" / "outbox.db")
    try:
        assert outbox.pending() == 0  # the event the call published was shipped at shutdown
    finally:
        outbox.close()


def test_one_scrape_covers_every_worker(tmp_path: Path) -> None:
    _, env = gateway_env(tmp_path)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")
    calls = 24
    with running_gateway(None, app=APP, env=env, cwd=REPO, workers=2) as gw:
        for i in range(calls):  # a fresh connection each: the kernel spreads them
            assert post(gw, "echo", {"text": f"n{i}"}).status_code == 200
        # both workers answered calls: each keeps its own counter file
        files = list((tmp_path / "metrics").glob("counter_*.db"))
        assert len(files) == 2, files
        scrapes = {metric(gw, "aios_mesh_gateway_calls_total", capability="echo")
                   for _ in range(10)}
        assert scrapes == {float(calls)}  # every scrape, whichever worker answers it
        assert metric(gw, "aios_mesh_gateway_workers") == 2


def test_a_bad_config_is_refused_before_any_worker_starts(tmp_path: Path) -> None:
    bad = tmp_path / "mesh.toml"
    bad.write_text("[tenants.acme]\nquota = { calls_per_minit = 3 }\n")
    done = subprocess.run([sys.executable, "-m", "aios_mesh.cli", "gateway", "--config",
                           str(bad), "--workers", "2", "--port", "1"], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2
    assert "calls_per_minit" in done.stderr and "hint" in done.stderr


def test_workers_below_one_is_a_config_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "aios_mesh.cli", "gateway", "--workers", "0"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and "--workers must be at least 1" in done.stderr
