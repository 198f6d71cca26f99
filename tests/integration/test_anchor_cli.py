"""``aios-mesh audit verify|anchor|rebaseline|keygen`` on a mesh config, with the JSONL and
the PostgreSQL audit store (the machine's server) and a file anchor store on another path."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aios_mesh.backends import load_adapter
from aios_mesh.cli import app
from aios_mesh.testing.conformance.audit import JsonlTamperer

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    from aios_mesh_postgres.testing import postgres_database

    with postgres_database(prefix="aios_mesh_anchor_cli") as url:
        yield url


def _cli(*args: str) -> Any:
    return runner.invoke(app, list(args))


def _setup(tmp_path: Path, audit_url: str | None) -> tuple[Path, Any, Any]:
    assert _cli("audit", "keygen", str(tmp_path / "keys")).exit_code == 0
    backends = f'[backends]\naudit = "{audit_url}"\n' if audit_url else ""
    config = tmp_path / "aios-mesh.toml"
    config.write_text(
        f'state_dir = "state"\n[tenants.acme]\n[telemetry]\notel = false\nlog = false\n'
        f'lineage = false\ndecision_events = false\n{backends}'
        f'[anchors]\nstore = "file:///{tmp_path}/elsewhere/anchors.jsonl"\n'
        f'key_file = "keys/anchor.key"\npublic_key_file = "keys/anchor.pub"\n')
    if audit_url:
        from aios_mesh_postgres.testing import PostgresTamperer

        audit = load_adapter("audit", audit_url, base_dir=tmp_path)
        return config, audit, PostgresTamperer(audit.conninfo, audit.table)
    audit = load_adapter("audit", "jsonl:///state/audit.jsonl", base_dir=tmp_path)
    return config, audit, JsonlTamperer(audit.path)


async def _fill(audit: Any, n: int) -> None:
    for i in range(n):
        await audit.append({"record_id": f"r-{i}", "tenant": "acme", "outcome": "ok"})
    await audit.aclose()


def _do(result: Any) -> None:
    if inspect.isawaitable(result):
        asyncio.run(result)


@pytest.mark.parametrize("store", ["jsonl", "postgres"])
def test_anchor_verify_tamper_rebaseline(tmp_path: Path, store: str,
                                         request: pytest.FixtureRequest) -> None:
    url = None
    if store == "postgres":
        url = f"{request.getfixturevalue('database')}?table=audit_{uuid.uuid4().hex[:8]}"
    config, audit, tamper = _setup(tmp_path, url)
    asyncio.run(_fill(audit, 30))
    got = _cli("audit", "anchor", "--config", str(config))
    assert got.exit_code == 0, got.output
    assert "anchored: seq 30" in got.output
    got = _cli("audit", "verify", "--config", str(config), "--strict")
    assert got.exit_code == 0, got.output
    assert "records 1..30 match" in got.output

    _do(tamper.insert(30))  # a forged append: not vouched for
    got = _cli("audit", "verify", "--config", str(config))
    assert got.exit_code == 0 and "unanchored: records 31..31" in got.output
    assert _cli("audit", "verify", "--config", str(config), "--strict").exit_code == 1

    _do(tamper.truncate(20))  # ten records cut
    got = _cli("audit", "verify", "--config", str(config))
    assert got.exit_code == 1 and "truncated" in got.output, got.output
    got = _cli("audit", "anchor", "--config", str(config))
    assert got.exit_code == 2 and "AnchorAheadError" in got.output  # never signs over a cut

    got = _cli("audit", "rebaseline", "--config", str(config), "--reason",
               "restored from the nightly copy")
    assert got.exit_code == 0 and "seq 20" in got.output, got.output
    assert _cli("audit", "verify", "--config", str(config), "--strict").exit_code == 0

    _do(tamper.truncate(0))
    got = _cli("audit", "verify", "--config", str(config))
    assert got.exit_code == 1 and "emptied" in got.output


def test_a_verifier_with_another_key_refuses(tmp_path: Path) -> None:
    config, audit, _tamper = _setup(tmp_path, None)
    asyncio.run(_fill(audit, 3))
    assert _cli("audit", "anchor", "--config", str(config)).exit_code == 0
    assert _cli("audit", "keygen", str(tmp_path / "other")).exit_code == 0
    config.write_text(config.read_text().replace("keys/anchor.pub", "other/anchor.pub"))
    got = _cli("audit", "verify", "--config", str(config))
    assert got.exit_code == 2 and "AnchorSignatureError" in got.output
    assert "not signed by the configured key" in got.output


def test_keygen_never_overwrites_and_rebaseline_needs_a_reason(tmp_path: Path) -> None:
    config, audit, _tamper = _setup(tmp_path, None)
    got = _cli("audit", "keygen", str(tmp_path / "keys"))
    assert got.exit_code == 2 and "exists already" in got.output
    assert (tmp_path / "keys" / "anchor.key").stat().st_mode & 0o077 == 0
    asyncio.run(_fill(audit, 2))
    got = _cli("audit", "rebaseline", "--config", str(config), "--reason", " ")
    assert got.exit_code == 2 and "needs a reason" in got.output
