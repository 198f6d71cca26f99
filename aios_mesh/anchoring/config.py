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

Plain data only (the config loads it before anything else): the keys come from
:func:`aios_mesh.anchoring.keys.signer_for`/``verifier_for``, the store from
:func:`aios_mesh.anchoring.stores.store_for`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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

    def to_spec(self) -> dict[str, Any]:
        """Plain data for the relay's child process."""
        return self.model_dump(mode="json")
