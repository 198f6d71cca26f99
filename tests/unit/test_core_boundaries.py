"""The core holds no backend: no module of ``aios_mesh/`` imports an adapter package, and no
adapter imports the core's embedded defaults (adapters talk to the core through its ports).

Static imports at any depth count (inside functions too); the lazy scheme table of
``aios_mesh/backends.py`` and entry points name adapter modules by string only.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "aios_mesh"
ADAPTERS = ROOT / "adapters"


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, module)`` of every import statement in ``path``, however deeply nested."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            # ``from aios_mesh import embedded`` imports a module too
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_walk_sees_imports_inside_functions(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    if True:\n        from aios_mesh_x.y import z\n"
                      "    import aios_mesh_w\n")
    assert sorted(m for _, m in _imports(sample)) == ["aios_mesh_w", "aios_mesh_x.y",
                                                       "aios_mesh_x.y.z"]


def test_core_imports_no_adapter_package() -> None:
    files = _files(CORE)
    assert len(files) > 50  # the walk found the package
    offenders = [f"{path.relative_to(ROOT)}:{line}: import {module}"
                 for path in files for line, module in _imports(path)
                 if module.split(".")[0].startswith("aios_mesh_")]
    assert not offenders, ("the core imports adapter packages (use an entry point or the "
                           "lazy scheme table instead):\n" + "\n".join(offenders))


@pytest.mark.parametrize("adapter", sorted(p.name for p in ADAPTERS.iterdir()
                                           if (p / "__init__.py").is_file()))
def test_adapter_uses_ports_not_embedded_defaults(adapter: str) -> None:
    offenders = [f"{path.relative_to(ROOT)}:{line}: import {module}"
                 for path in _files(ADAPTERS / adapter) for line, module in _imports(path)
                 if module == "aios_mesh.embedded" or module.startswith("aios_mesh.embedded.")]
    assert not offenders, ("adapters import the core's contracts from aios_mesh.ports, not "
                           "from the embedded defaults:\n" + "\n".join(offenders))
