"""The embedded Rego adapter (regopy) passes the whole Policy conformance suite."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from aios_mesh_regopy import RegoPolicy

from aios_mesh.testing.conformance.policy import PolicyBasic, PolicyErrors, PolicyObligations


class TestRegoPolicy(PolicyBasic, PolicyObligations, PolicyErrors):
    @pytest.fixture
    def make_adapter(self) -> Callable[[Path], RegoPolicy]:
        return RegoPolicy.from_path
