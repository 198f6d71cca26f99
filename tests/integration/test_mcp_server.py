"""Capabilities as MCP tools (issue 20, item 4): any MCP client — here the `mcp` SDK's own
client — lists a mesh's capabilities as tools with their JSON schemas and calls them; each
call is a governed capability call with its own decision record, for the tenant and caller
the transport establishes: given on the command line for a local stdio server, proven by an
API key over streamable HTTP (no credential: 401; a key's scopes limit the tools)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from aios_mesh.testing.processes import free_port, start_process, wait_for_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.integration.mcp_app"


def config(tmp_path: Path) -> Path:
    path = tmp_path / "aios-mesh.toml"
    path.write_text(f"""
state_dir = "{tmp_path / 'state'}"
[tenants.acme]
[tenants.globex]
[telemetry]
lineage = false
decision_events = false
[gateway.auth]
api_keys = true
[[capabilities]]
name = "route-ticket"
description = "Route a support ticket to a queue."
input = "{APP}:Ticket"
output = "{APP}:Route"
handler = "{APP}:route"
[[capabilities]]
name = "double"
input = "{APP}:Amount"
output = "{APP}:Doubled"
handler = "{APP}:double"
""")
    return path


def records(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "state" / "audit.jsonl").read_text().splitlines()
    return [json.loads(x)["record"] for x in lines if "kind" not in json.loads(x)["record"]]


def env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'adapters'}"}


async def test_a_local_client_uses_the_capabilities_over_stdio(tmp_path: Path) -> None:
    path = config(tmp_path)
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "aios_mesh.cli", "mcp", "--tenant", "acme",
                                      "--caller", "ide", "--config", str(path)],
        env=env(), cwd=str(ROOT))
    async with Client(server, read_timeout_seconds=60) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {"route-ticket", "double"}
        assert tools["route-ticket"].description == "Route a support ticket to a queue."
        assert tools["route-ticket"].input_schema["required"] == ["text"]
        assert set(tools["route-ticket"].output_schema["properties"]) == {"queue", "urgent"}

        answer = await client.call_tool("route-ticket", {"text": "My invoice is wrong!"})
        assert not answer.is_error
        assert answer.structured_content == {"queue": "billing", "urgent": True}
        record_id = (answer.meta or {})["record_id"]

        refused = await client.call_tool("route-ticket", {"text": ""})  # fails the schema
        assert refused.is_error
        problem = json.loads(refused.content[0].text)
        assert problem["type"] == "InvalidInput" and problem["record_id"]
        assert "My invoice" not in refused.content[0].text

        unknown = await client.call_tool("teleport", {})
        assert unknown.is_error and "UnknownCapability" in unknown.content[0].text
    calls = records(tmp_path)
    mine = [r for r in calls if r["record_id"] == record_id]
    assert mine and (mine[0]["tenant"], mine[0]["caller"]) == ("acme", "ide")
    assert {r["outcome"] for r in calls} == {"ok", "rejected"}


def test_a_stdio_server_needs_a_tenant(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "aios_mesh.cli", "mcp", "--config",
                           str(config(tmp_path))], capture_output=True, text=True, env=env(),
                          cwd=ROOT, timeout=120)
    assert done.returncode == 2 and "pass --tenant" in done.stdout + done.stderr


async def test_a_shared_server_over_http_requires_credentials_and_honours_scopes(
        tmp_path: Path) -> None:
    path = config(tmp_path)
    created = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "aios_mesh.cli", "keys", "create", "globex",
                         "agent-7", "--scope", "double", "--config", str(path), "--json"],
        capture_output=True, text=True, env=env(), cwd=ROOT, timeout=120)
    assert created.returncode == 0, created.stdout + created.stderr
    secret = json.loads(created.stdout)["key"]
    port = free_port()
    cmd = [sys.executable, "-m", "aios_mesh.cli", "mcp", "--transport", "http", "--port",
           str(port), "--config", str(path)]
    with start_process(cmd, name="mcp-http", cwd=ROOT, env=env(),
                       ready=lambda: wait_for_port(port, timeout=60)):
        url = f"http://127.0.0.1:{port}/mcp"
        async with httpx.AsyncClient() as plain:
            anonymous = await plain.post(url, json={"jsonrpc": "2.0", "id": 1,
                                                    "method": "tools/list"},
                                         headers={"Accept": "application/json, "
                                                            "text/event-stream"})
        assert anonymous.status_code == 401
        assert anonymous.headers["content-type"].startswith("application/problem+json")

        from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

        http = create_mcp_http_client(headers={"Authorization": f"Bearer {secret}"})
        async with http, Client(streamable_http_client(url, http_client=http)) as client:
            tools = [t.name for t in (await client.list_tools()).tools]
            assert tools == ["double"]  # the key's scope: route-ticket is not listed
            answer = await client.call_tool("double", {"value": 21})
            assert answer.structured_content == {"value": 42.0}
            hidden = await client.call_tool("route-ticket", {"text": "invoice"})
            assert hidden.is_error and "no tool named" in hidden.content[0].text
    mine = [r for r in records(tmp_path) if r["capability"]["name"] == "double"]
    assert [(r["tenant"], r["caller"], r["outcome"]) for r in mine] == \
        [("globex", "agent-7", "ok")]
