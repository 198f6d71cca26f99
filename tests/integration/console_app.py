"""The mesh the review-console tests serve (``--app tests.integration.console_app:mesh``),
built in each gateway worker on the state folder ``$CONSOLE_TEST_STATE``; also imported
in-process by the unit tests of the review API and the console.

Capabilities: ``extract`` answers with the confidence the input asks for (below 0.8 it goes
to a human), ``intake`` calls ``extract`` (so its record is ``extract``'s lineage parent).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from starlette.requests import HTTPConnection

from aios_mesh import Mesh
from aios_mesh.capabilities import capability
from aios_mesh.config import config_from_mapping
from aios_mesh.context import CallContext
from aios_mesh.gateway.identity import Principal, Unauthenticated


class Invoice(BaseModel):
    text: str
    confidence: float = 0.95


class Extracted(BaseModel):
    vendor: str
    total: float
    confidence: float


@capability("extract", review_threshold=0.8)
def extract(payload: Invoice) -> Extracted:
    """The vendor is the text's first word; the total its length."""
    return Extracted(vendor=payload.text.split()[0], total=float(len(payload.text)),
                     confidence=payload.confidence)


@capability("intake")
async def intake(payload: Invoice, ctx: CallContext) -> Extracted:
    """Extract through a nested call (lineage: intake is extract's parent)."""
    result = await ctx.invoke("extract", payload.model_dump())
    out: Extracted = result.output or Extracted(vendor="?", total=0.0, confidence=0.0)
    return out


def config(state: Path) -> dict[str, Any]:
    """The test mesh's config: tenants acme and globex, embedded backends under ``state``."""
    return {"state_dir": str(state), "tenants": {"acme": {}, "globex": {}},
            "backends": {"events": "sqlite:///events.db"},
            "retry": {"max_attempts": 1},
            "telemetry": {"lineage": False, "decision_events": False}}


def make_mesh(state: Path) -> Mesh:
    return Mesh(config_from_mapping(config(state)), capabilities=[extract, intake])


#: The test credentials: ``Authorization: Bearer <name>`` (a stand-in for API keys).
KEYS: dict[str, Principal] = {
    "acme-reviewer": Principal("acme", "ana", roles=frozenset({"reviewer"}), credential="k1"),
    "acme-caller": Principal("acme", "app", credential="k2"),
    "globex-reviewer": Principal("globex", "gil", roles=frozenset({"reviewer"}),
                                 credential="k3"),
    "root": Principal("acme", "root", roles=frozenset({"admin"}), credential="k4"),
}


class KeyAuthenticator:
    """Bearer names from :data:`KEYS`."""

    async def authenticate(self, request: HTTPConnection) -> Principal:
        header = request.headers.get("authorization", "")
        principal = KEYS.get(header.removeprefix("Bearer ").strip())
        if principal is None:
            raise Unauthenticated("unknown credential", hint="send a known test key")
        return principal


def authenticator(mesh: Mesh) -> KeyAuthenticator:
    """The ``--authenticator`` factory."""
    del mesh
    return KeyAuthenticator()


def __getattr__(name: str) -> Mesh:  # ``mesh`` is built on first use, in the worker
    if name == "mesh":
        built = make_mesh(Path(os.environ["CONSOLE_TEST_STATE"]))
        globals()["mesh"] = built
        return built
    raise AttributeError(name)
