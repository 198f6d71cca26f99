"""Every TOML snippet in README.md and docs/**/*.md parses, and every config snippet (all
but ``pyproject.toml`` ones) is a valid mesh config, so the docs cannot show keys the config
rejects."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from aios_mesh.config import config_from_mapping

ROOT = Path(__file__).resolve().parents[2]
_BLOCK = re.compile(r"^([ \t]*)```toml\n(.*?)^\1```", re.S | re.M)
#: top-level tables of a pyproject.toml: such a snippet is parsed, not loaded as a config
_PYPROJECT = {"project", "tool", "build-system"}


def _snippets() -> list[tuple[str, str]]:
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for i, (indent, body) in enumerate(_BLOCK.findall(page.read_text())):
            text = "\n".join(line.removeprefix(indent) for line in body.splitlines())
            found.append((f"{page.relative_to(ROOT)}#{i}", text))
    return found


def _plugin_schemes(page: str) -> set[str]:
    """The ``port:scheme`` names a page's own pyproject snippets register (a guide that
    writes an adapter package configures the scheme that package adds)."""
    names = set()
    for name, text in SNIPPETS:
        if name.startswith(f"{page}#"):
            points = tomllib.loads(text).get("project", {}).get("entry-points", {})
            names |= set(points.get("aios_mesh.adapters", {}))
    return names


SNIPPETS = _snippets()


def test_the_docs_have_config_snippets() -> None:
    names = [name for name, _ in SNIPPETS]
    for page in ("README.md", "docs/configuration.md", "docs/adapters/postgres.md",
                 "docs/adapters/redis.md"):
        assert any(n.startswith(f"{page}#") for n in names), page


@pytest.mark.parametrize(("name", "text"), SNIPPETS, ids=[n for n, _ in SNIPPETS])
def test_snippet_parses_and_configs_validate(name: str, text: str, tmp_path: Path) -> None:
    doc = tomllib.loads(text)
    if _PYPROJECT & set(doc):
        return
    plugins = _plugin_schemes(name.split("#")[0])
    backends = dict(doc.get("backends", {}))
    for port, url in list(backends.items()):
        if isinstance(url, str) and f"{port}:{url.split('://')[0]}" in plugins:
            del backends[port]  # that package is not installed here; its scheme is declared
    config_from_mapping({**doc, "backends": backends} if "backends" in doc else doc,
                        base_dir=tmp_path, source=name)
