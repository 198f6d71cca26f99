"""The Python example of docs/governance/vault.md runs as written, with a fresh key."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from aios_mesh.redaction.vault import generate_key

ROOT = Path(__file__).resolve().parents[2]


def test_the_docs_example_runs(tmp_path: Path) -> None:
    page = (ROOT / "docs" / "governance" / "vault.md").read_text()
    code = re.findall(r"```python\n(.*?)```", page, re.S)[0]
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {**os.environ, "AIOS_MESH_VAULT_KEYS": generate_key()}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    sent, acme, globex = done.stdout.splitlines()
    assert re.fullmatch(r"\{'text': 'write to <EMAIL_[0-9a-f]{16}>'\}", sent)
    assert acme == "{'reply': 'done: ann@acme.example'}"
    assert "ann@acme.example" not in globex and "<EMAIL_" in globex
