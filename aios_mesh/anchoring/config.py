"""``[anchors]``: where anchors go, the keys, how often the relay writes one.

::

    [anchors]
    store = "file:////mnt/anchors/acme.jsonl"   # or postgresql://..., sqlite:///, bus://TOPIC
    key_file = "/etc/aios-mesh/anchor.key"      # or key_env (PEM text in a variable)
    public_key_file = "/etc/aios-mesh/anchor.pub"   # for verify; default: the signing key's
    every_records = 1000                        # a checkpoint after this many records ...
    every_s = 60                                # ... or this long after the first unanchored one

Paths are relative to the config file's folder; a ``file:///`` store is relative to the
state folder, like the audit log (``file:////abs/path`` is absolute).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from aios_mesh.anchoring.keys import AnchorSigner, AnchorVerifier
    from aios_mesh.ports.anchor import AnchorStore
    from aios_mesh.ports.events import EventBus

__all__ = ["DEFAULT_KEY_ENV", "AnchorConfig"]

#: The variable the signing key is read from when no key file is named.
DEFAULT_KEY_ENV = "AIOS_MESH_ANCHOR_KEY"


class AnchorConfig(BaseModel):
    """The ``[anchors]`` table (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: str = Field(min_length=1)
    key_file: Path | None = None
    key_env: str | None = DEFAULT_KEY_ENV
    public_key_file: Path | None = None
    public_key_env: str | None = None
    every_records: int = Field(1000, ge=1)
    every_s: float = Field(60.0, gt=0, allow_inf_nan=False)

    def resolved(self, base_dir: Path) -> AnchorConfig:
        """The same config with its key paths made absolute against ``base_dir``."""
        def absolute(p: Path | None) -> Path | None:
            return p if p is None or p.is_absolute() else base_dir / p

        return self.model_copy(update={"key_file": absolute(self.key_file),
                                       "public_key_file": absolute(self.public_key_file)})

    def signer(self) -> AnchorSigner:
        """The signing key (``ConfigError`` with a hint when it is missing or not Ed25519)."""
        from aios_mesh.anchoring.keys import AnchorSigner, load_private_key

        return AnchorSigner(load_private_key(self.key_file, None if self.key_file
                                             else self.key_env))

    def verifier(self) -> AnchorVerifier:
        """The public key anchors are checked with: the configured one, else the signing
        key's."""
        from aios_mesh.anchoring.keys import AnchorVerifier, load_public_key

        if self.public_key_file is not None or self.public_key_env:
            return AnchorVerifier(load_public_key(self.public_key_file, self.public_key_env))
        return AnchorVerifier(self.signer().public_key())

    def open_store(self, state_dir: Path,
                   bus: Callable[[], tuple[EventBus, bool]] | None = None) -> AnchorStore:
        """The store ``store`` names."""
        from aios_mesh.anchoring.stores import open_anchor_store

        return open_anchor_store(self.store, base_dir=state_dir, bus=bus)

    def to_spec(self) -> dict[str, Any]:
        """Plain data for the relay's child process."""
        return self.model_dump(mode="json")
