"""Who may call the gateway: API keys kept hashed on the shared state, and JWT bearer tokens
checked against a JWKS. See ``docs/guides/identity.md``.

    from aios_mesh.gateway import create_app
    from aios_mesh.gateway.auth import authenticator_from_config

    app = create_app(mesh, authenticator=authenticator_from_config(mesh))
"""

from aios_mesh.gateway.auth.api_keys import QUOTA_CAPABILITY, ApiKeyAuthenticator, quota_subject
from aios_mesh.gateway.auth.authenticator import (
           GatewayAuthenticator,
           authenticator_from_config,
           credential_of,
)
from aios_mesh.gateway.auth.jwks import JwksSource
from aios_mesh.gateway.auth.keys import KEY_PREFIX, ParsedKey, new_key, parse_key
from aios_mesh.gateway.auth.store import KEYS_STORE, ROLES, KeyRecord, KeyStore
from aios_mesh.gateway.auth.tokens import JwtAuthenticator

__all__ = ["KEYS_STORE", "KEY_PREFIX", "QUOTA_CAPABILITY", "ROLES", "ApiKeyAuthenticator",
           "GatewayAuthenticator", "JwksSource", "JwtAuthenticator", "KeyRecord", "KeyStore",
           "ParsedKey", "authenticator_from_config", "credential_of", "new_key", "parse_key",
           "quota_subject"]
