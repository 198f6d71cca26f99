"""Ed25519 keys of the anchors: load them from a key file or an environment variable, make a
pair, sign and check anchors.

Keys are PEM: the private key PKCS#8 (``-----BEGIN PRIVATE KEY-----``), the public key
SubjectPublicKeyInfo (``-----BEGIN PUBLIC KEY-----``), as ``openssl genpkey -algorithm
ed25519`` writes them. An environment variable holds the same PEM text. The signing key
stays with whoever writes anchors (the relay, an operator); whoever verifies needs only the
public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aios_mesh.anchoring.config import AnchorConfig
from aios_mesh.errors import ConfigError
from aios_mesh.ports.anchor import Anchor, AnchorKind, AnchorSignatureError

__all__ = ["AnchorSigner", "AnchorVerifier", "generate_keypair", "key_id",
           "load_private_key", "load_public_key", "signer_for", "verifier_for"]


def key_id(public: Ed25519PublicKey) -> str:
    """A short name of a public key: 16 hex digits of the SHA-256 of its raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _pem(file: Path | None, env: str | None, what: str) -> bytes:
    if file is not None:
        try:
            return file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the anchor {what} file {file}: "
                              f"{exc.strerror or exc}",
                              hint="make one with `aios-mesh audit keygen DIR`, or fix the "
                                   "path in [anchors]") from exc
    if env:
        text = os.environ.get(env)
        if text:
            return text.encode()
        raise ConfigError(f"the anchor {what} variable ${env} is not set",
                          hint=f"export {env}=\"$(cat anchor.key)\" (PEM text), or name a "
                               "key file in [anchors]")
    raise ConfigError(f"no anchor {what} configured",
                      hint="set key_file (or key_env) in [anchors]; `aios-mesh audit keygen "
                           "DIR` makes a pair")


def load_private_key(file: Path | None = None, env: str | None = None) -> Ed25519PrivateKey:
    """The Ed25519 signing key from a PEM file, else the PEM text in ``$env``."""
    raw = _pem(file, env, "signing key")
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError("the anchor signing key is not an unencrypted PEM private key",
                          hint="make one with `aios-mesh audit keygen DIR` (or `openssl "
                               "genpkey -algorithm ed25519`)") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError("the anchor signing key is not an Ed25519 key",
                          hint="anchors are signed with Ed25519: `openssl genpkey "
                               "-algorithm ed25519`")
    return key


def load_public_key(file: Path | None = None, env: str | None = None) -> Ed25519PublicKey:
    """The Ed25519 verification key from a PEM file, else the PEM text in ``$env``."""
    raw = _pem(file, env, "public key")
    try:
        key = serialization.load_pem_public_key(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError("the anchor public key is not a PEM public key",
                          hint="use the anchor.pub that `aios-mesh audit keygen` wrote") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError("the anchor public key is not an Ed25519 key",
                          hint="use the public half of the Ed25519 signing key")
    return key


def generate_keypair(folder: Path, *, name: str = "anchor") -> tuple[Path, Path]:
    """Write ``<name>.key`` (private, mode 0600) and ``<name>.pub`` in ``folder``; refuses to
    overwrite (a lost signing key cannot be replaced without a rebaseline)."""
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    for path in (private, public):
        if path.exists():
            raise ConfigError(f"{path} exists already",
                              hint="pick another folder or name; an anchor key is never "
                                   "overwritten")
    folder.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


class AnchorSigner:
    """Makes signed anchors with one private key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.key_id = key_id(key.public_key())

    def public_key(self) -> Ed25519PublicKey:
        """The key that verifies this signer's anchors."""
        return self._key.public_key()

    def sign(self, kind: AnchorKind, seq: int, head: str, *, reason: str = "",
             supersedes: Anchor | None = None) -> Anchor:
        """A signed anchor of ``(seq, head)``, dated now."""
        unsigned = Anchor(kind=kind, seq=seq, head=head,
                          at=datetime.now(UTC).isoformat(timespec="microseconds"),
                          key_id=self.key_id, reason=reason,
                          supersedes_seq=supersedes.seq if supersedes else None,
                          supersedes_head=supersedes.head if supersedes else None)
        signature = base64.b64encode(self._key.sign(unsigned.payload())).decode()
        return Anchor(**{**unsigned.to_dict(), "signature": signature})


class AnchorVerifier:
    """Checks anchors against one public key."""

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key
        self.key_id = key_id(key)

    def check(self, anchor: Anchor) -> Anchor:
        """``anchor`` if this key signed it; else ``AnchorSignatureError``."""
        try:
            signature = base64.b64decode(anchor.signature, validate=True)
            self._key.verify(signature, anchor.payload())
        except (InvalidSignature, binascii.Error, ValueError) as exc:
            other = (f"signed by key {anchor.key_id}" if anchor.key_id != self.key_id
                     else "its signature does not match its content")
            raise AnchorSignatureError(
                f"the {anchor.kind} anchor of seq {anchor.seq} ({anchor.at}) is not signed by "
                f"the configured key {self.key_id}: {other}",
                hint="configure the public key of the key that signs the anchors "
                     "([anchors] public_key_file); if it is the right key, the anchor store "
                     "was written by someone else", seq=anchor.seq) from exc
        return anchor


def signer_for(config: AnchorConfig) -> AnchorSigner:
    """The signing key ``[anchors]`` names (``ConfigError`` with a hint when it is missing
    or not Ed25519)."""
    return AnchorSigner(load_private_key(config.key_file,
                                         None if config.key_file else config.key_env))


def verifier_for(config: AnchorConfig) -> AnchorVerifier:
    """The public key anchors are checked with: the configured one, else the signing key's."""
    if config.public_key_file is not None or config.public_key_env:
        return AnchorVerifier(load_public_key(config.public_key_file, config.public_key_env))
    return AnchorVerifier(signer_for(config).public_key())
