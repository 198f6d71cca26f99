"""Pause and resume on a real PostgreSQL shared state (the ``postgres`` launcher): two meshes on
different state folders, standing for two replicas, honour one pause — the one that pauses at
once, the other within its controller's ``refresh_s`` (its clock is moved by hand)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from aios_mesh_postgres import PostgresState

from aios_mesh import Mesh
from aios_mesh.config import config_from_mapping
from aios_mesh.lifecycle.pause import (
    PauseControl,
    list_pauses,
    pause,
    pause_control,
    resume,
)
from aios_mesh.testing import launcher
from tests.unit.test_pause import CAPABILITIES, FALLBACK, Triage, ask

pytestmark = pytest.mark.integration


@pytest.fixture
def database() -> Iterator[str]:
    """A database of its own for each test on the machine's PostgreSQL."""
    with launcher("postgres")(prefix="aios_mesh_pause") as url:
        yield url


def replica(folder: Path, state: str, clock: list[float] | None = None) -> Mesh:
    config = config_from_mapping({"state_dir": str(folder), "tenants": {"acme": {}, "globex": {}},
                                  "backends": {"state": state}})
    admission = [] if clock is None else [PauseControl(clock=lambda: clock[0])]
    return Mesh(config, capabilities=CAPABILITIES, admission=admission)


def test_two_replicas_honour_one_pause(tmp_path: Path, database: str) -> None:
    clock = [0.0]
    with replica(tmp_path / "one", database) as one, \
            replica(tmp_path / "two", database, clock) as two:
        assert isinstance(one.state, PostgresState) and isinstance(two.state, PostgresState)
        assert ask(two).record.outcome == "ok"  # two has read the (empty) table
        one.run_sync(pause(one, "triage", tenant="acme", mode="fallback", reason="INC-9",
                           actor="ana"))
        held = ask(one)  # the replica that paused holds it at once
        assert held.record.outcome == "degraded" and held.record.fallback == FALLBACK
        assert ask(two).record.outcome == "ok"  # two's snapshot is younger than refresh_s
        clock[0] = 1.01
        seen = ask(two)
        assert seen.output == Triage(label="rules") and seen.record.outcome == "degraded"
        assert seen.record.error is not None and "INC-9" in seen.record.error["message"]
        assert ask(two, "globex").record.outcome == "ok"
        assert [(p.capability, p.tenant, p.actor) for p in two.run_sync(list_pauses(two))] == [
            ("triage", "acme", "ana")]
        # two resumes; one sees it on its next read (its own clock is the real one: force it)
        assert two.run_sync(resume(two, "triage", tenant="acme", actor="bo")) is not None
        assert ask(two).record.outcome == "ok"
        control = pause_control(one)
        assert control is not None and control.reload() == []
        assert ask(one).record.outcome == "ok"
    # each replica audited what it did, in its own audit log
    kinds = {}
    for name in ("one", "two"):
        lines = (tmp_path / name / "audit.jsonl").read_text().splitlines()
        kinds[name] = [json.loads(x)["record"].get("kind") for x in lines]
    assert "pause" in kinds["one"] and "resume" not in kinds["one"]
    assert "resume" in kinds["two"] and "pause" not in kinds["two"]
