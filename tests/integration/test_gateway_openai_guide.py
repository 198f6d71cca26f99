"""docs/guides/openai-compatible.md, run as written: its ``caps.py``, ``aios-mesh.toml`` and
``register.py``, a key made with ``aios-mesh keys create``, a real gateway whose chat model is
llama.cpp in process (Gemma 3 270M), and each client file (the ``openai`` SDK, LangChain,
LlamaIndex) run as a script against it; every call they make leaves a record for the key's
tenant."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from aios_mesh.gateway.testing import running_gateway

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guides" / "openai-compatible.md"
_BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)
CLIENTS = ("openai_sdk.py", "langchain_chat.py", "llamaindex_chat.py")


def _files() -> dict[str, str]:
    """The blocks whose first line names a file (``# caps.py``)."""
    out = {}
    for _, code in _BLOCK.findall(GUIDE.read_text()):
        first = code.splitlines()[0]
        if re.fullmatch(r"# [\w.-]+\.(py|toml)", first):
            out[first[2:]] = code
    return out


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done


def test_the_guides_clients_run_against_a_real_gateway(tmp_path: Path) -> None:
    files = _files()
    assert set(files) == {"caps.py", "aios-mesh.toml", "register.py", *CLIENTS}
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    _run([sys.executable, "register.py"], tmp_path)
    created = _run([sys.executable, "-m", "aios_mesh.cli", "keys", "create", "acme",
                    "chat-app", "--json"], tmp_path)
    key = json.loads(created.stdout)["key"]
    with running_gateway(tmp_path / "aios-mesh.toml", app="caps:capabilities",
                         cwd=tmp_path) as gw:
        env = {**os.environ, "GW": gw.url, "AIOS_MESH_KEY": key}
        outputs = {name: _run([sys.executable, name], tmp_path, env).stdout
                   for name in CLIENTS}
    first = outputs["openai_sdk.py"].splitlines()
    assert first[0] == "['assistant', 'embed-text']"
    assert re.fullmatch(r"[0-9a-f-]{20,}", first[1])  # the record id header
    assert "completion_tokens=" in outputs["openai_sdk.py"]
    assert "2 16 " in outputs["openai_sdk.py"]  # two vectors of 16 floats
    audit = tmp_path / ".aios-mesh" / "audit.jsonl"
    records = [json.loads(line)["record"] for line in audit.read_text().splitlines()]
    calls = [(r["capability"]["name"], r["mode"], r["outcome"]) for r in records
             if r["tenant"] == "acme"]
    # the SDK: one chat, one stream, two embeddings; LangChain and LlamaIndex: one of each
    assert sorted(calls) == sorted([("assistant", "invoke", "ok"), ("assistant", "stream", "ok"),
                                    ("embed-text", "bulk", "ok"), ("embed-text", "bulk", "ok"),
                                    ("assistant", "invoke", "ok"), ("assistant", "stream", "ok"),
                                    ("assistant", "invoke", "ok"), ("assistant", "stream", "ok")])
    assert all(r["usage"]["output_tokens"] > 0 for r in records
               if r["capability"]["name"] == "assistant")
