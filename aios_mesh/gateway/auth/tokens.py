"""JWT bearer tokens: checked against the issuer's JWKS, mapped onto a :class:`Principal`.

Built on PyJWT (``jwt.decode`` checks the signature, ``exp``, ``nbf``, ``iat``, ``iss`` and
``aud`` with a leeway). What this module adds on top:

* **algorithms are pinned**: the token's ``alg`` must be one of the configured ones, all
  asymmetric (``none`` and ``HS*`` cannot be configured), and the key must be of that
  algorithm's type (an RSA key for ``RS*``/``PS*``, the matching EC curve for ``ES*``, an
  OKP key for ``EdDSA``) and agree with the key's own ``alg`` when the JWKS names one — so
  an RSA public key can never serve as an HMAC secret (the HS/RS confusion attack);
* ``exp``, ``iss`` and ``aud`` are required, not just checked when present;
* claims → principal: the tenant, the caller, the roles and the capabilities come from
  configured claims (dotted paths), with optional value maps. The tenant must be one the
  mesh declares; a caller claim that holds personal data (an e-mail address) is recorded
  as a pseudonym (``jwt:<hash>``), never as written.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection
from pathlib import Path
from typing import Any, Final

import jwt

from aios_mesh.config import JwtConfig
from aios_mesh.errors import ConfigError
from aios_mesh.gateway.auth.jwks import JwksSource
from aios_mesh.gateway.auth.store import ROLES
from aios_mesh.gateway.identity import Forbidden, Principal, Unauthenticated
from aios_mesh.redaction import describe_exception
from aios_mesh.redaction.redactor import RuleRedactor
from aios_mesh.redaction.rules import DEFAULT_RULES

__all__ = ["JwtAuthenticator", "claim"]

# the key type (and EC curve) each algorithm needs
_KEY_TYPE: Final[dict[str, tuple[str, str | None]]] = {
    **{f"{p}{n}": ("RSA", None) for p in ("RS", "PS") for n in ("256", "384", "512")},
    "ES256": ("EC", "P-256"), "ES384": ("EC", "P-384"), "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None),
}
_HINT: Final = "get a new token from the identity provider"

# PyJWT's reasons, in our words (the token's content never goes into a message)
_REASONS: Final[tuple[tuple[type[Exception], str], ...]] = (
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet (nbf or iat in the future)"),
    (jwt.InvalidAudienceError, "the token is not meant for this gateway (audience)"),
    (jwt.InvalidIssuerError, "the token comes from an issuer this gateway does not trust"),
    (jwt.MissingRequiredClaimError, "the token lacks a required claim (exp, iss, aud)"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
    (jwt.InvalidAlgorithmError, "the token's algorithm is not allowed"),
)


def claim(claims: dict[str, Any], path: str) -> Any:
    """The value at the dotted ``path`` (``org.id``) of ``claims``, or ``None``."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _names(value: Any) -> list[str] | None:
    """A claim holding names: a list of strings or one space-separated string."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _pseudonym(value: str) -> str:
    """``value`` when it holds no personal data the mesh's rules find, else a stable
    pseudonym (the caller goes into every decision record)."""
    counts: Counter[str] = Counter()
    RuleRedactor.redact_text(value, DEFAULT_RULES, counts)
    if not counts and len(value) <= 200 and value.isprintable():
        return value
    return "jwt:" + hashlib.sha256(value.encode()).hexdigest()[:16]


class JwtAuthenticator:
    """Proves a principal from a JWT bearer token (see the module docstring).

    Args:
        config: the ``[gateway.auth.jwt]`` section.
        tenants: the tenants the mesh declares (a token for another one is refused).
        base_dir: where a relative JWKS path starts (the config file's folder).
        keys: the JWKS source (default: from ``config``).
    """

    def __init__(self, config: JwtConfig, *, tenants: Collection[str], base_dir: Path,
                 keys: JwksSource | None = None) -> None:
        self.config = config
        self.tenants = frozenset(tenants)
        self.source = keys or JwksSource(config.jwks, base_dir=base_dir,
                                         ttl_s=config.jwks_ttl_s,
                                         timeout_s=config.jwks_timeout_s)
        self._pinned = frozenset(config.algorithms)
        for mapped in config.tenants.values():
            if mapped not in self.tenants:
                raise ConfigError(f"[gateway.auth.jwt.tenants] maps to tenant {mapped!r}, "
                                  "which is not declared",
                                  hint="declare it under [tenants] or fix the map")
        unknown = sorted(set(config.roles.values()) - ROLES)
        if unknown:
            raise ConfigError(f"[gateway.auth.jwt.roles] maps to unknown role {unknown[0]!r}",
                              hint=f"roles are: {', '.join(sorted(ROLES))}")

    async def verify(self, token: str) -> Principal:
        """The principal of ``token``; :class:`Unauthenticated` when it is not a valid
        token from the configured issuer for this audience, :class:`Forbidden` when it is
        valid but names no tenant of this mesh."""
        claims = await self._claims(token)
        return self._principal(claims)

    async def _claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("the bearer token is not a JWT", hint=_HINT) from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self._pinned:
            raise Unauthenticated(
                f"the token's algorithm {str(alg)[:20]!r} is not allowed",
                hint=f"this gateway accepts {', '.join(sorted(self._pinned))} "
                     "([gateway.auth.jwt] algorithms)")
        if kid is not None and not isinstance(kid, str):
            raise Unauthenticated("the token's key id is not a string", hint=_HINT)
        key = self._key_for(alg, kid, await self.source.keys(kid=kid))
        cfg = self.config
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key=key, algorithms=[alg], audience=list(cfg.audience),
                issuer=cfg.issuer, leeway=cfg.leeway_s,
                options={"require": ["exp", "iss", "aud"], "verify_signature": True})
        except jwt.PyJWTError as exc:
            reason = next((text for cls, text in _REASONS if isinstance(exc, cls)),
                          "the token is not valid")
            raise Unauthenticated(reason, hint=_HINT) from None
        return claims

    def _key_for(self, alg: str, kid: str | None, keys: list[dict[str, Any]]) -> Any:
        kty, crv = _KEY_TYPE[alg]
        fits = [k for k in keys
                if (kid is None or k.get("kid") == kid) and k.get("kty") == kty
                and (crv is None or k.get("crv") == crv) and k.get("alg", alg) == alg]
        if len(fits) != 1:
            # no key (or, without a kid, more than one that could be meant)
            raise Unauthenticated(
                "no key of the issuer's JWKS fits the token" if not fits else
                "the token names no key id and the JWKS holds several fitting keys",
                hint=_HINT + " (its key id, 'kid', must name a key of the JWKS at "
                             f"{self.source.shown})")
        try:
            return jwt.PyJWK(fits[0], algorithm=alg).key
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the JWKS key for the token is not usable "
                                  f"({describe_exception(exc, limit=120)})",
                                  hint="fix the JWKS") from None

    def _principal(self, claims: dict[str, Any]) -> Principal:
        cfg = self.config
        raw_tenant = claim(claims, cfg.tenant_claim)
        if not isinstance(raw_tenant, str):
            raise Forbidden(f"the token has no {cfg.tenant_claim!r} claim naming a tenant",
                            hint="have the identity provider add it, or set "
                                 "[gateway.auth.jwt] tenant_claim")
        tenant = cfg.tenants.get(raw_tenant) if cfg.tenants else raw_tenant
        if tenant is None or tenant not in self.tenants:
            raise Forbidden("the token's tenant is not a tenant of this gateway",
                            hint="declare the tenant under [tenants], or map the claim's "
                                 "value in [gateway.auth.jwt.tenants]")
        caller = claim(claims, cfg.caller_claim)
        if not isinstance(caller, str) or not caller:
            raise Unauthenticated(f"the token has no {cfg.caller_claim!r} claim",
                                  hint="set [gateway.auth.jwt] caller_claim to a claim "
                                       "every token holds (sub)")
        roles: frozenset[str] = frozenset()
        if cfg.roles_claim:
            names = _names(claim(claims, cfg.roles_claim)) or []
            roles = frozenset(cfg.roles[n] for n in names if n in cfg.roles) if cfg.roles \
                else frozenset(n for n in names if n in ROLES)
        scopes: frozenset[str] | None = None
        if cfg.scopes_claim:
            # a token without the claim may call nothing: scopes are opt-in, never implied
            scopes = frozenset(_names(claim(claims, cfg.scopes_claim)) or ())
        jti = claims.get("jti")
        credential = f"jwt:{jti}" if isinstance(jti, str) and jti.isprintable() \
            and len(jti) <= 100 else "jwt"
        return Principal(tenant=tenant, caller=_pseudonym(caller), scopes=scopes,
                         roles=roles, credential=credential)

    async def aclose(self) -> None:
        """Close the JWKS client."""
        await self.source.aclose()
