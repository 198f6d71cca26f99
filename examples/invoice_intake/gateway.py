"""Run the intake's capabilities behind ``aios-mesh gateway`` (the ``gateway`` profile).

:func:`local_gateway` makes the API keys on the mesh's shared state (the profile's
PostgreSQL: every worker and replica reads them there) — one per tenant for the intake's
calls, and one reviewer key per tenant for the review console — writes them to files only
their owner can read, and starts ``aios-mesh gateway --workers N`` serving the intake's
capabilities on the job's config (``--app examples.invoice_intake.replica:mesh``: each worker
with a read replica of the embedded vendor index, see :mod:`.replica`). The gateway stops when
the block ends; the keys stay valid, so a gateway started again on the same config
(:attr:`LocalGateway.command`) serves the console to the same reviewers.

Keys are never printed: the summary names the files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from aios_mesh.gateway.auth.store import KeyStore
from aios_mesh.gateway.identity import REVIEWER
from aios_mesh.gateway.testing import running_gateway
from aios_mesh.state import SharedState
from aios_mesh.testing.processes import free_port

__all__ = ["APP", "CONFIG_ENV", "LocalGateway", "local_gateway", "make_keys"]

#: What each gateway worker serves, as ``--app`` names it.
APP = "examples.invoice_intake.replica:mesh"
#: The job's config file, for :mod:`.replica` (not ``AIOS_MESH_CONFIG``: ``--app`` naming a
#: Mesh takes no config).
CONFIG_ENV = "INVOICE_INTAKE_CONFIG"
#: The checkout's root: ``--app`` imports the example from there.
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class LocalGateway:
    """A started gateway: its URL, the key files and how to start it again."""

    url: str
    workers: int
    keys: Path
    reviewer_keys: Path
    command: str

    @property
    def console(self) -> str:
        return f"{self.url}/console"


def _write_secret(path: Path, doc: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # created 0600, not chmod-ed after: the keys are never readable by others
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=1)


def make_keys(state: SharedState, tenants: Iterable[str], caller: str,
              capabilities: Iterable[str], folder: Path) -> tuple[Path, Path]:
    """Per tenant an intake key (``caller``, scoped to ``capabilities``) and a reviewer key
    (no capability, the ``reviewer`` role); returns the two key files."""
    store = KeyStore(state)
    scopes = sorted(capabilities)
    try:
        intake = {t: store.create(t, caller, scopes=scopes)[1] for t in tenants}
        review = {t: store.create(t, f"{t}-reviewer", scopes=(), roles=(REVIEWER,))[1]
                  for t in intake}
    finally:
        store.close()
    keys, reviewer_keys = folder / "keys.json", folder / "reviewer-keys.json"
    _write_secret(keys, intake)
    _write_secret(reviewer_keys, review)
    return keys, reviewer_keys


@contextlib.contextmanager
def local_gateway(config: Path, state: SharedState, folder: Path, *, tenants: Iterable[str],
                  caller: str, capabilities: Iterable[str], workers: int = 2,
                  port: int | None = None, private: bool = False) -> Iterator[LocalGateway]:
    """Make the keys, start the gateway on ``config``; yield it running (see the module)."""
    keys, reviewer_keys = make_keys(state, tenants, caller, capabilities, folder)
    port = free_port() if private or port is None else port
    command = f"cd {shlex.quote(str(ROOT))} && {CONFIG_ENV}={shlex.quote(str(config))} " + \
        shlex.join([str(Path(sys.executable).with_name("aios-mesh")), "gateway", "--app", APP,
                    "--workers", str(workers), "--port", str(port)])
    # the app brings its config: AIOS_MESH_CONFIG (the job's own) must not reach the workers
    env = {"AIOS_MESH_CONFIG": "", CONFIG_ENV: str(config)}
    with running_gateway(None, workers=workers, app=APP, port=port, cwd=ROOT, env=env,
                         timeout=120.0) as live:
        yield LocalGateway(live.url, workers, keys, reviewer_keys, command)
