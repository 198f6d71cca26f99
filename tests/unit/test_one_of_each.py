"""One definition of each shared thing (issue 14, "one of each thing"): a guard against the
copies coming back.

* option parsing: adapters read query options only through :class:`BackendURL`'s accessors
  (never ``url.options`` directly, never their own ``float(...)``/``int(...)`` of an option);
* secret masking: :func:`aios_mesh.backends.redact_url` is the only code that writes a mask;
* the prediction shape: one ``BatchPredictor`` and one ``as_prediction``
  (:mod:`aios_mesh.ports.serving`), which the other modules re-export;
* the Qdrant translation: both Qdrant adapters take filters, upsert preparation and hits
  from :mod:`aios_mesh.ports.retrieval_scope`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*ROOT.joinpath("adapters").rglob("*.py"),
                  *ROOT.joinpath("aios_mesh").rglob("*.py")])


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("pattern", [
    r"\burl\.options\b",                                # raw query options
    r"(float|int)\(\s*(url\.option|merged\.get|opts\.get|options\.get)\(",  # hand parsing
    r"\.replace\(f\":\{[a-z_.]*password\}@\"",          # a hand-written password mask
    r"re\.sub\([^)]*(token|api_key)=",                  # a hand-written query mask
])
def test_no_hand_written_option_parsing_or_masking(pattern: str) -> None:
    found = [f"{p.relative_to(ROOT)}:{n}" for p in SOURCES if p.name != "backends.py"
             for n, line in enumerate(_read(p).splitlines(), 1) if re.search(pattern, line)]
    assert not found, f"use BackendURL's accessors / redact_url instead: {found}"


def test_one_batch_predictor_and_one_as_prediction() -> None:
    from aios_mesh.embedded import serving as embedded
    from aios_mesh.ports import serving as port

    assert embedded.BatchPredictor is port.BatchPredictor
    assert embedded.as_prediction is port.as_prediction
    defined = [f"{p.relative_to(ROOT)}" for p in SOURCES
               if re.search(r"^(BatchPredictor|Predictor)\b.*=", _read(p), re.MULTILINE)
               or re.search(r"^def as_prediction\(", _read(p), re.MULTILINE)]
    assert defined == ["aios_mesh/ports/serving.py"]


def test_both_qdrant_adapters_use_the_shared_translation() -> None:
    for name in ("aios_mesh_qdrant", "aios_mesh_qdrant_edge"):
        text = _read(ROOT / "adapters" / name / "retrieval.py")
        for shared in ("check_filter", "prepare_points", "scored_points", "index_options",
                       "parse_indexes", "check_config", "delete_op", "snapshot_label"):
            assert shared in text, (name, shared)
        for copy in ("def _parse_indexes", "def _match_any", "def _range(", "def _is_number"):
            assert copy not in text, (name, copy)
