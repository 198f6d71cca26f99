"""The spine's shape, checked on the source: a small Mesh, nobody reaching into its private
members, and no import circle anywhere in ``aios_mesh/`` (TYPE_CHECKING and function-level
imports included: a circle hidden behind a late import is still a circle)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx
import pytest

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "aios_mesh"
#: where code that uses a mesh lives (tests may build fakes, but not poke the mesh's insides)
USERS = ["aios_mesh", "adapters", "examples", "benchmarks", "tests"]
_PRIVATE_USE = re.compile(r"\b(?:mesh|target|self\.mesh|ctx\.mesh)\._[a-z]\w*")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            targets = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def test_no_import_circle_in_the_core() -> None:
    files = list(CORE.rglob("*.py"))
    modules = {_module_name(f) for f in files}
    graph = nx.DiGraph()
    for f in files:
        graph.add_node(_module_name(f))
        graph.add_edges_from((_module_name(f), dep) for dep in _imports(f, modules))
    cycles = list(nx.simple_cycles(graph))
    assert cycles == [], f"import circles: {cycles[:5]}"


def test_the_mesh_is_a_thin_front() -> None:
    lines = (CORE / "mesh.py").read_text().splitlines()
    code = [line for line in lines if line.strip() and not line.strip().startswith("#")]
    assert len(code) < 550, f"mesh.py grew to {len(code)} lines of code; move the work into " \
                            "Ports, the pipeline's steps or the Recorder's processors"


@pytest.mark.parametrize("folder", USERS)
def test_nobody_reaches_into_the_mesh(folder: str) -> None:
    offenders = []
    for path in (REPO / folder).rglob("*.py"):
        if path == CORE / "mesh.py" or ".venv" in path.parts or ".nox" in path.parts:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if _PRIVATE_USE.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == [], "use the public parts (mesh.ports, mesh.pipeline, " \
                            "mesh.recorder, mesh.run_sync):\n" + "\n".join(offenders)
