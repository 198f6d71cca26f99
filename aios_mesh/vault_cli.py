"""``aios-mesh vault``: keys of the token vault — make one, re-seal every entry under the
newest.

    aios-mesh vault keygen                      # print a fresh key
    aios-mesh vault keygen --key-file vault.keys  # put it first (newest) in the key file
    aios-mesh vault rotate [--json]             # re-seal every entry under the newest key

The vault is the one ``[redaction] vault`` names, with the keys of ``vault_key_file`` or
``$AIOS_MESH_VAULT_KEYS`` (see docs/governance/vault.md for the rotation procedure).
"""

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import orjson
import typer
from rich.console import Console

from aios_mesh.errors import MeshError

__all__ = ["vault_app"]

_console = Console()


def _prepend(path: Path, key: str) -> None:
    """Write ``key`` as the first line of the key file (created with mode 0600), keeping the
    older keys after it; the file is replaced whole, never left half-written."""
    old = path.read_text() if path.exists() else ""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"{key}\n{old}")
    tmp.replace(path)


def vault_app(make_mesh: Callable[[Path | None], Any], fail: Callable[[MeshError], None],
              config_opt: Any) -> typer.Typer:
    """The ``vault`` sub-app (``make_mesh``/``fail``/``config_opt`` come from the CLI)."""
    app = typer.Typer(help="Keys of the token vault: make one, re-seal every entry.",
                      no_args_is_help=True)

    @app.command()
    def keygen(key_file: Annotated[Optional[Path], typer.Option(  # noqa: UP045 - typer
            "--key-file", help="Put the key first (newest) in this key file instead of "
                               "printing it; older keys stay after it for reading.")] = None,
               ) -> None:
        """A fresh vault key (32 random bytes, URL-safe base64)."""
        from aios_mesh.redaction.vault import KeyRing, generate_key

        key = generate_key()
        if key_file is None:
            print(key)
            return
        _prepend(key_file, key)
        ring = KeyRing.from_file(key_file)
        _console.print(f"{key_file}: newest key {ring.ids[0]}, {len(ring.ids)} key(s) in all; "
                       "restart the meshes, then run `aios-mesh vault rotate`")

    @app.command()
    def rotate(config: config_opt = None,
               batch: Annotated[int, typer.Option(min=1, max=10_000,
                                                  help="entries per read")] = 500,
               as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
        """Re-seal every entry of the configured vault under the newest key (safe while
        meshes run: an entry changed meanwhile is left as it is and counted as skipped)."""
        from aios_mesh.vault_setup import vault_from_config

        try:
            with make_mesh(config) as mesh:
                conf = mesh.config
                vault = vault_from_config(conf.redaction, state=mesh.state,
                                          folder=conf.state_path, base_dir=conf.base_dir)

                async def run() -> Any:
                    try:
                        return await vault.rotate(batch=batch)
                    finally:
                        await vault.aclose()

                report = asyncio.run(run())
        except MeshError as exc:
            fail(exc)
            return
        done = {"resealed": report.resealed, "current": report.current,
                "skipped": report.skipped, "key": vault.keys.ids[0]}
        if as_json:
            print(orjson.dumps(done).decode())
        else:
            _console.print(f"re-sealed {report.resealed} entries under key {done['key']}; "
                           f"{report.current} already were; {report.skipped} changed "
                           "meanwhile (left as they are)")

    return app
