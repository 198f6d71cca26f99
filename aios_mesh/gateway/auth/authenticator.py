"""The gateway's authenticator: an API key first, then a JWT bearer token; and
:func:`authenticator_from_config`, which builds it from ``[gateway.auth]``.

Where the credential goes::

    X-API-Key: amk_<id>_<secret>
    Authorization: Bearer amk_<id>_<secret>      # an API key (recognized by its prefix)
    Authorization: Bearer eyJhbGciOi...          # a JWT

A request with both headers, with no credential, or with one of neither kind gets
:class:`~aios_mesh.gateway.identity.Unauthenticated` (HTTP 401).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

from aios_mesh.errors import ConfigError
from aios_mesh.gateway.auth.api_keys import ApiKeyAuthenticator
from aios_mesh.gateway.auth.keys import KEY_PREFIX
from aios_mesh.gateway.auth.store import KeyStore
from aios_mesh.gateway.auth.tokens import JwtAuthenticator
from aios_mesh.gateway.identity import Principal, Unauthenticated
from aios_mesh.state import SharedState

if TYPE_CHECKING:
    from aios_mesh.mesh import Mesh

__all__ = ["GatewayAuthenticator", "authenticator_from_config", "credential_of"]

_HINT = ("send an API key (X-API-Key: amk_... or Authorization: Bearer amk_...) or a JWT "
         "(Authorization: Bearer <token>)")


def credential_of(request: HTTPConnection) -> str:
    """The one credential ``request`` carries; :class:`Unauthenticated` for none or two."""
    api_key = request.headers.get("x-api-key")
    authorization = request.headers.get("authorization")
    bearer: str | None = None
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthenticated("the Authorization header is not 'Bearer <credential>'",
                                  hint=_HINT)
        bearer = value.strip()
    if api_key is not None and bearer is not None:
        raise Unauthenticated("the request carries two credentials", hint="send one: " + _HINT)
    found = api_key if api_key is not None else bearer
    if not found:
        raise Unauthenticated("no credential", hint=_HINT)
    return found.strip()


class GatewayAuthenticator:
    """An API key (by its ``amk_`` prefix) or else a JWT; either may be switched off.

    Args:
        keys: checks API keys (``None``: API keys are refused).
        tokens: checks JWTs (``None``: bearer tokens other than API keys are refused).
    """

    def __init__(self, keys: ApiKeyAuthenticator | None,
                 tokens: JwtAuthenticator | None) -> None:
        if keys is None and tokens is None:
            raise ConfigError("the gateway would accept no credential",
                              hint="set [gateway.auth] api_keys = true or configure "
                                   "[gateway.auth.jwt]")
        self.keys = keys
        self.tokens = tokens

    async def authenticate(self, request: HTTPConnection) -> Principal:
        """The principal of ``request`` (see the module docstring)."""
        credential = credential_of(request)
        if credential.startswith(KEY_PREFIX) or "x-api-key" in request.headers:
            if self.keys is None:
                raise Unauthenticated("this gateway does not accept API keys",
                                      hint="send a JWT bearer token")
            return await self.keys.verify(credential)
        if self.tokens is None:
            raise Unauthenticated("the credential is not an API key, and this gateway "
                                  "accepts no JWTs", hint="send an API key (amk_...)")
        return await self.tokens.verify(credential)

    async def aclose(self) -> None:
        """Release the key store's connection and the JWKS client."""
        if self.keys is not None:
            self.keys.store.close()
        if self.tokens is not None:
            await self.tokens.aclose()


def authenticator_from_config(mesh: Mesh, *, state: SharedState | None = None,
                              store: KeyStore | None = None) -> GatewayAuthenticator:
    """The authenticator ``[gateway.auth]`` of ``mesh.config`` describes: API keys from
    ``store`` (default: the ``api_keys`` store on ``state``, itself by default
    ``mesh.state``; give the gateway's ``PostgresState`` so replicas share the keys), their
    limits counted on ``mesh.ports.quota``, and JWTs when ``[gateway.auth.jwt]`` is set."""
    auth = mesh.config.gateway.auth
    keys = None
    if auth.api_keys:
        keys = ApiKeyAuthenticator(store or KeyStore(state or mesh.state),
                                   quota=lambda: mesh.ports.quota, cache_s=auth.key_cache_s)
    tokens = None
    if auth.jwt is not None:
        tokens = JwtAuthenticator(auth.jwt, tenants=mesh.config.tenants,
                                  base_dir=mesh.config.base_dir)
    return GatewayAuthenticator(keys, tokens)
