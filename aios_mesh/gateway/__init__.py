"""The capability gateway: the mesh over HTTP (``aios-mesh gateway``).

Apps in any language call capabilities under ``/v1`` with an API key or a JWT bearer token;
the tenant comes from the credential. See ``docs/guides/gateway.md``.
"""

from aios_mesh.gateway.app import ROUTE_MODULES, Gateway, GatewaySettings, RouteModule, create_app
from aios_mesh.gateway.identity import (
           ADMIN,
           REVIEWER,
           Authenticator,
           Forbidden,
           Principal,
           Unauthenticated,
)
from aios_mesh.gateway.problems import problem, status_for

__all__ = ["ADMIN", "REVIEWER", "ROUTE_MODULES", "Authenticator", "Forbidden", "Gateway",
           "GatewaySettings", "Principal", "RouteModule", "Unauthenticated", "create_app",
           "problem", "status_for"]
