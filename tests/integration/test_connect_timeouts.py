"""Event buses at an address where nothing listens fail fast: the first connection is bounded
by the URL's ``connect_timeout`` option (2 s by default), so neither a probe nor a CLI call
waits on a broker that is not there."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aios_mesh.backends import load_adapter
from aios_mesh.errors import BackendUnavailable, ConfigError

AIOS_MESH = Path(sys.executable).parent / "aios-mesh"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("scheme", ["nats", "kafka"])
def test_connect_timeout_bounds_the_first_connection(scheme: str, tmp_path: Path) -> None:
    bus = load_adapter("events", f"{scheme}://127.0.0.1:{closed_port()}?connect_timeout=300ms",
                       base_dir=tmp_path)
    assert bus.connect_timeout == pytest.approx(0.3)

    async def probe() -> float:
        started = time.monotonic()
        try:
            with pytest.raises(BackendUnavailable) as err:
                await bus.health()
            assert err.value.hint
            return time.monotonic() - started
        finally:
            await bus.aclose()

    assert asyncio.run(probe()) < 2.5  # the default would be 2 s, the old bound 5-10 s


@pytest.mark.parametrize("scheme", ["nats", "kafka"])
def test_a_bad_connect_timeout_is_a_config_error(scheme: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="connect_timeout"):
        load_adapter("events", f"{scheme}://127.0.0.1:1?connect_timeout=soon",
                     base_dir=tmp_path)


def test_invoke_with_nats_down_does_not_hang(tmp_path: Path) -> None:
    (tmp_path / "caps.py").write_text(
        "from pydantic import BaseModel\n"
        "class T(BaseModel):\n    text: str\n"
        "class R(BaseModel):\n    label: str\n"
        "def route(p: T) -> R:\n    return R(label='x')\n")
    (tmp_path / "aios-mesh.toml").write_text(f"""
state_dir = "state"
[tenants.acme]
[backends]
events = "nats://127.0.0.1:{closed_port()}"
[[capabilities]]
name = "route-ticket"
input = "caps:T"
output = "caps:R"
handler = "caps:route"
""")
    started = time.monotonic()
    done = subprocess.run([str(AIOS_MESH), "invoke", "route-ticket", "--tenant", "acme",
                           "--json", '{"text": "a"}'], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert '"label": "x"' in done.stdout
    assert took < 9, took  # it was 11 s: two 5 s connects; now each is bounded by 2 s
