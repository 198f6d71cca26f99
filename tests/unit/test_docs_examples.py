"""Every complete program in the docs (a ```python block with a ``__main__`` guard) runs as
written, so the examples cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _programs() -> list[tuple[str, str]]:
    found = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for i, code in enumerate(_BLOCK.findall(page.read_text())):
            if '__name__ == "__main__"' in code:
                found.append((f"{page.relative_to(ROOT)}#{i}", code))
    return found


PROGRAMS = _programs()


def test_the_docs_have_programs() -> None:
    assert any(name.startswith("docs/guides/model-path.md") for name, _ in PROGRAMS)


@pytest.mark.parametrize(("name", "code"), PROGRAMS, ids=[n for n, _ in PROGRAMS])
def test_program_runs(name: str, code: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=None)
    assert done.returncode == 0, f"{name} failed:\n{done.stderr[-3000:]}"
    if name.startswith("docs/guides/model-path.md"):
        assert "second call: hit" in done.stdout
        assert "batches sent: [" in done.stdout
