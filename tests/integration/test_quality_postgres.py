"""Quality from reviewers across replicas on a real PostgreSQL (the ``postgres`` launcher):
one replica answers the calls, another decides the reviews, and both read the same labels
from the shared state. With the audit log in the same database every replica matches each
label to its decision record; a replica that keeps its own audit file sees the labels but not
their records, and says so (``unmatched``), instead of dropping them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from aios_mesh import CapabilitySpec, Mesh
from aios_mesh.config import config_from_mapping
from aios_mesh.lifecycle.quality import quality
from aios_mesh.testing import launcher

pytestmark = pytest.mark.integration


class Ticket(BaseModel):
    text: str


class Triage(BaseModel):
    label: str
    confidence: float


def triage(ticket: Ticket) -> Triage:
    """The confidence is written in the ticket (``"c=0.35 ..."``)."""
    return Triage(label="billing", confidence=float(ticket.text.split()[0][2:]))


SPEC = CapabilitySpec(name="triage", input=Ticket, output=Triage, handler=triage,
                      review_threshold=0.8)


@pytest.fixture
def database() -> Iterator[str]:
    with launcher("postgres")(prefix="aios_mesh_quality") as url:
        yield url


def replica(folder: Path, state: str, audit: str | None) -> Mesh:
    backends = {"state": state, **({"audit": audit} if audit else {})}
    return Mesh(config_from_mapping({"state_dir": str(folder), "tenants": {"acme": {}},
                                     "telemetry": {"lineage": False,
                                                   "decision_events": False},
                                     "backends": backends}), capabilities=[SPEC])


def _numbers(mesh: Mesh) -> tuple[Any, ...]:
    report = mesh.run_sync(quality(mesh, "triage"))
    [v] = report.versions or [None]
    if v is None:
        return report.labels, report.unmatched, None
    cal = v.calibration
    return (report.labels, report.unmatched, v.calls, v.labelled, v.accuracy,
            v.override_rate, v.automation_rate, None if cal is None else round(cal.ece, 9))


def test_labels_from_shared_state_are_read_by_every_replica(tmp_path: Path,
                                                            database: str) -> None:
    with replica(tmp_path / "one", database, database) as one, \
            replica(tmp_path / "two", database, database) as two, \
            replica(tmp_path / "own", database, None) as own:
        decisions = {0.95: None, 0.35: False, 0.55: True, 0.65: True}
        ids = {}
        for conf in decisions:
            result = one.invoke("triage", {"text": f"c={conf} t"}, tenant="acme")
            ids[conf] = result.review_id
        for conf, approve in decisions.items():
            if approve is not None:  # another replica's reviewer decides
                two.resolve_review(ids[conf], approve=approve, reviewer="rita",
                                   output=None if conf != 0.65 else
                                   {"label": "sales", "confidence": conf})
        # 4 answered, 1 ok; 3 labelled: 0.55 kept, 0.35 rejected, 0.65 corrected
        ece = (abs(0.0 - 0.35) + abs(1.0 - 0.55) + abs(0.0 - 0.65)) / 3
        expected = (3, 0, 4, 3, pytest.approx(1 / 3), pytest.approx(2 / 3),
                    pytest.approx(1 / 4), pytest.approx(ece))
        assert _numbers(one) == expected
        assert _numbers(two) == expected
        # its own audit file holds none of these calls: three labels, none matched
        assert _numbers(own) == (3, 3, None)
        report = own.run_sync(quality(own))
        assert set(report.unmatched_record_ids) == {
            r.record_id for r in own.review_queue().labels()}
    assert not (tmp_path / "one" / "review.db").exists()  # the labels lived in PostgreSQL
