"""Who is calling: the :class:`Principal` a credential proves, and the :class:`Authenticator`
seam that proves it.

The tenant of every gateway call comes from the credential, never from the request body. A
principal may be limited to some capabilities (``scopes``) and may hold roles (``reviewer``
for the review console and queue, ``admin`` for key management and every tenant's records).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from starlette.requests import HTTPConnection

from aios_mesh.errors import Forbidden, Unauthenticated

__all__ = ["ADMIN", "REVIEWER", "Authenticator", "Forbidden", "Principal", "Unauthenticated"]

REVIEWER = "reviewer"
ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """What a credential proves.

    Args:
        tenant: the tenant every call is made for.
        caller: who is calling (a key's name, a token's subject), recorded on each call.
        scopes: the capabilities this principal may call; ``None`` means all of them.
        roles: ``reviewer``, ``admin``, ...
        credential: the id of the key or token (never its secret), for audit.
    """

    tenant: str
    caller: str
    scopes: frozenset[str] | None = None
    roles: frozenset[str] = field(default_factory=frozenset)
    credential: str = ""

    def may_call(self, capability: str) -> bool:
        """A scope names a capability (every version: ``NAME``) or one major (``NAME@2``);
        ``capability`` is what the caller asked for (``NAME``, ``NAME@2``, ``NAME@2.1``)."""
        if self.scopes is None or capability in self.scopes:
            return True
        name, _, version = capability.partition("@")
        return name in self.scopes or (bool(version) and
                                       f"{name}@{version.split('.', 1)[0]}" in self.scopes)

    def require_call(self, capability: str) -> None:
        """Raise :class:`Forbidden` unless this principal may call ``capability``."""
        if not self.may_call(capability):
            raise Forbidden(f"this credential may not call {capability!r}",
                            hint="ask an admin for a key whose scopes include it")

    def has_role(self, role: str) -> bool:
        return role in self.roles or ADMIN in self.roles

    def require_role(self, role: str) -> None:
        """Raise :class:`Forbidden` unless this principal holds ``role`` (admin holds all)."""
        if not self.has_role(role):
            raise Forbidden(f"this needs the {role!r} role",
                            hint="ask an admin for a credential with that role")


@runtime_checkable
class Authenticator(Protocol):
    """Proves who a request comes from (API key, JWT bearer token, ...)."""

    async def authenticate(self, request: HTTPConnection) -> Principal:
        """The principal of ``request``; raises :class:`Unauthenticated` when there is no
        credential or it is not valid."""
        ...
