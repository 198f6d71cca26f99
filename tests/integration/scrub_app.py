"""The mesh of the scrubbing test's gateway (``--app tests.integration.scrub_app:mesh``),
built from ``$SCRUB_TEST_CONFIG``; ``$SCRUB_NAMES_MODEL`` names the spaCy pipeline of the
opt-in names detector.

Capabilities: ``ok`` (answers without echoing), ``boom`` (its handler raises with the payload
in the message), ``strict`` (refuses unknown keys: the error names them), ``deny`` (its
policy denies with a reason that quotes the caller's attributes).
"""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict

from aios_mesh import Mesh
from aios_mesh.capabilities import capability
from aios_mesh.redaction import Scrubber
from aios_mesh.redaction.names import SpacyNames


class Text(BaseModel):
    text: str = ""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = ""


class Answer(BaseModel):
    answer: str


@capability("ok", policy="scrub/open")
def ok(payload: Text) -> Answer:
    return Answer(answer="done")


@capability("boom", policy="scrub/open")
def boom(payload: Text) -> Answer:
    raise RuntimeError(f"cannot bill {payload.text}")


@capability("strict")
def strict(payload: Strict) -> Answer:
    return Answer(answer="done")


@capability("deny", policy="scrub/deny")
def deny(payload: Text) -> Answer:
    return Answer(answer="never")


mesh = Mesh.from_config(os.environ["SCRUB_TEST_CONFIG"], capabilities=[ok, boom, strict, deny])
mesh.recorder.scrubber = Scrubber(detectors=[SpacyNames(os.environ["SCRUB_NAMES_MODEL"])])
