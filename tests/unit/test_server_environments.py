"""The BentoML server's own environment (`.nox/bentoml`, built from
serving/bentoml/requirements.txt) installs aios-mesh with ``--no-deps``, so it must list every
core dependency itself: a new one missing there breaks every BentoML server at import (it
happened: jsonschema and detect-secrets)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def _names(lines: list[str]) -> set[str]:
    return {re.sub(r"[-_.]+", "-", Requirement(line).name).lower() for line in lines}


def test_the_bentoml_environment_lists_every_core_dependency() -> None:
    core = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    listed = [line.split("#")[0].strip()
              for line in (ROOT / "serving" / "bentoml" / "requirements.txt").read_text()
              .splitlines()]
    missing = _names(core) - _names([line for line in listed if line])
    assert not missing, f"add to serving/bentoml/requirements.txt: {sorted(missing)}"
