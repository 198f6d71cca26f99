"""Opening the token vault a config names (``[redaction] vault``, ``vault_key_file``,
``vault_key_env``; see :mod:`aios_mesh.redaction.vault` and docs/governance/vault.md).

Apart from :mod:`aios_mesh.redaction` because it reaches the shared state, which the
redaction package must not import (the state uses the redaction's exception masking).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from aios_mesh.errors import ConfigError
from aios_mesh.redaction.tokens import TokenizingRedactor, load_or_create_key
from aios_mesh.redaction.vault import (
    DEFAULT_KEY_ENV,
    KEYGEN_HINT,
    STATE_SCHEMES,
    VAULT_STORES,
    KeyRing,
    TokenVault,
    VaultKeyError,
    check_vault_url,
    load_keys,
)

if TYPE_CHECKING:
    from aios_mesh.config import RedactionConfig
    from aios_mesh.ports.vault import VaultStore
    from aios_mesh.state import SharedState

__all__ = ["open_vault", "tokenizer_from_config", "vault_from_config"]



def open_vault(url: str, *, state: SharedState, folder: Path, key_file: Path | None = None,
               key_env: str = DEFAULT_KEY_ENV) -> TokenVault:
    """The vault a config names. ``state`` is the mesh's shared state (``url == "state"``),
    ``folder`` the state folder (``sqlite://`` paths resolve against it). A durable vault
    without a key is a :class:`VaultKeyError`; the in-memory one gets an ephemeral key."""
    check_vault_url(url)
    keys = load_keys(key_file, key_env)
    if url == "memory":
        from aios_mesh.embedded.vault import MemoryVaultStore

        return TokenVault(MemoryVaultStore(), keys or KeyRing.random())
    if keys is None:
        raise VaultKeyError(f"the durable vault {_shown(url)} needs a key and none is "
                            f"configured (no vault_key_file, ${key_env} unset)",
                            hint=KEYGEN_HINT)
    return TokenVault(_store(url, state=state, folder=folder), keys)


def _shown(url: str) -> str:
    from aios_mesh.backends import redact_url

    return url if "://" not in url else redact_url(url)


def _store(url: str, *, state: SharedState, folder: Path) -> VaultStore:
    from aios_mesh.embedded.sql_vault import SqlVaultStore

    if url == "state":
        return SqlVaultStore(state)
    scheme = url.split("://", 1)[0].lower()
    if scheme in STATE_SCHEMES:
        from aios_mesh.state import open_state

        return SqlVaultStore(open_state(url, folder=folder), owned=True)
    target, extra = VAULT_STORES[scheme]
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"the {scheme} vault store is not installed ({exc.name})",
                          hint=f'pip install "aios-mesh[{extra}]"') from exc
    from aios_mesh.backends import parse_url

    store: VaultStore = getattr(module, attr).from_url(parse_url(url), base_dir=folder)
    return store


def vault_from_config(config: RedactionConfig, *, state: SharedState, folder: Path,
                      base_dir: Path) -> TokenVault:
    """The vault of ``[redaction]`` (``vault_key_file`` resolves against ``base_dir``)."""
    key_file = config.vault_key_file
    if key_file is not None and not key_file.is_absolute():
        key_file = base_dir / key_file
    return open_vault(config.vault, state=state, folder=folder, key_file=key_file,
                      key_env=config.vault_key_env)


def tokenizer_from_config(config: RedactionConfig, *, state: SharedState, folder: Path,
                          base_dir: Path) -> TokenizingRedactor:
    """The tokenizing redactor of ``[redaction]``: its vault (``vault``, keys from
    ``vault_key_file`` or ``$vault_key_env``) and its token key — the key ring's when one is
    configured (replicas then mint the same tokens), else the state folder's
    ``redaction.key``."""
    vault = vault_from_config(config, state=state, folder=folder, base_dir=base_dir)
    key = load_or_create_key(folder / "redaction.key") if vault.keys.ephemeral else None
    return TokenizingRedactor(key, vault=vault)
