"""The gateway guide's quick start and curl examples, run as written against a real gateway:
its ``caps.py`` and ``aios-mesh.toml``, a key made with ``aios-mesh keys create``, and every
``curl`` example followed by ``# => STATUS`` answering that status."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from aios_mesh.gateway.testing import running_gateway

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guides" / "gateway.md"
_BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


def _files() -> dict[str, str]:
    """The blocks whose first line names a file (``# caps.py``)."""
    out = {}
    for _, code in _BLOCK.findall(GUIDE.read_text()):
        first = code.splitlines()[0]
        if re.fullmatch(r"# [\w.-]+\.(py|toml)", first):
            out[first[2:]] = code
    return out


def _examples() -> list[tuple[str, int]]:
    """Each shell example (the commands up to a ``# => STATUS`` line) and its status."""
    out: list[tuple[str, int]] = []
    for lang, code in _BLOCK.findall(GUIDE.read_text()):
        if lang != "sh":
            continue
        commands: list[str] = []
        for line in code.splitlines():
            if match := re.fullmatch(r"# => (\d{3})", line):
                out.append(("\n".join(commands), int(match.group(1))))
                commands = []
            elif not line.startswith("#"):
                commands.append(line)
    return out


def test_the_guide_has_files_and_examples() -> None:
    assert set(_files()) == {"caps.py", "aios-mesh.toml"}
    assert len(_examples()) >= 8


def test_the_guides_curl_examples_answer_as_documented(tmp_path: Path) -> None:
    for name, code in _files().items():
        (tmp_path / name).write_text(code)
    created = subprocess.run([sys.executable, "-m", "aios_mesh.cli", "keys", "create", "acme",
                              "support-bot", "--json"], cwd=tmp_path, capture_output=True,
                             text=True, check=True, timeout=120)
    key = json.loads(created.stdout)["key"]
    with running_gateway(tmp_path / "aios-mesh.toml", app="caps:capabilities",
                         cwd=tmp_path) as gw:
        env = {**os.environ, "GW": gw.url, "AIOS_MESH_KEY": key,
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        for commands, status in _examples():
            # the last curl of the example: print only its status
            script = commands.rstrip() + " -o /dev/null -w '%{http_code}'"
            done = subprocess.run(["bash", "-c", "set -eo pipefail\n" + script], env=env,
                                  capture_output=True, text=True, timeout=60, cwd=tmp_path)
            assert done.returncode == 0, f"{commands}\n{done.stderr}"
            assert done.stdout.strip()[-3:] == str(status), f"{commands}\n{done.stdout}"
