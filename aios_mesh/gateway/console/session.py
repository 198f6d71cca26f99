"""The console's session: who logged in, carried in a signed cookie, and the CSRF token that
every form of the session must send back.

The cookie holds the :class:`~aios_mesh.gateway.identity.Principal` the login's credential
proved (tenant, caller, roles, scopes, the key's id — never the key), a random CSRF token
and the login time, signed with itsdangerous (HMAC-SHA1 over a key derived from the
console secret) and refused after ``max_age_s``. It is ``HttpOnly`` (no script reads it),
``SameSite=Strict`` (no other site's page sends it) and ``Secure`` behind HTTPS.

The secret is shared by every worker and replica: ``AIOS_MESH_CONSOLE_SECRET`` if set, else
one made at random the first time and kept in the shared state (store ``console``), so a
session made on one replica is good on the others.
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass
from typing import Any, Final

from itsdangerous import BadSignature, URLSafeTimedSerializer

from aios_mesh.gateway.identity import Forbidden, Principal
from aios_mesh.state import Database, Migration, SharedState

__all__ = ["COOKIE", "MIGRATIONS", "SECRET_ENV", "Session", "SessionCodec", "console_secret"]

#: The session cookie's name.
COOKIE: Final = "aios_console"
#: The environment variable that may hold the console secret.
SECRET_ENV: Final = "AIOS_MESH_CONSOLE_SECRET"

#: The console store: one row holding the signing secret.
MIGRATIONS: Final = (Migration(1, (
    "CREATE TABLE IF NOT EXISTS console_secret (id INTEGER PRIMARY KEY, secret TEXT NOT NULL)",
)),)


def console_secret(state: SharedState) -> str:
    """The console's signing secret (see the module docstring)."""
    configured = os.environ.get(SECRET_ENV)
    if configured:
        return configured
    db = Database(state, "console", MIGRATIONS, what="the console store")
    try:
        # the first replica's insert wins; the others read the row it wrote
        db.execute("INSERT INTO console_secret (id, secret) VALUES (1, ?) "
                   "ON CONFLICT (id) DO NOTHING", (secrets.token_urlsafe(32),))
        return str(db.execute("SELECT secret FROM console_secret WHERE id = 1")[0][0])
    finally:
        db.close()


@dataclass(frozen=True, slots=True)
class Session:
    """A console session: the logged-in principal (``None`` before login) and the CSRF
    token of its forms."""

    csrf: str
    principal: Principal | None = None

    def check_csrf(self, sent: object) -> None:
        """Raise :class:`Forbidden` unless ``sent`` is this session's CSRF token."""
        if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(),
                                                                self.csrf.encode()):
            raise Forbidden("the form's CSRF token is missing or wrong",
                            hint="reload the page and submit the form again")


class SessionCodec:
    """Turns a :class:`Session` into a cookie value and back (signed, time-limited)."""

    def __init__(self, secret: str, *, max_age_s: float = 3600.0) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="aios-mesh-console")
        self.max_age_s = max_age_s

    @staticmethod
    def new(principal: Principal | None = None) -> Session:
        """A fresh session (a new CSRF token) for ``principal``."""
        return Session(csrf=secrets.token_urlsafe(24), principal=principal)

    def dumps(self, session: Session) -> str:
        p = session.principal
        doc: dict[str, Any] = {"x": session.csrf}
        if p is not None:
            doc["p"] = {"t": p.tenant, "c": p.caller, "r": sorted(p.roles),
                        "s": None if p.scopes is None else sorted(p.scopes),
                        "k": p.credential}
        return self._serializer.dumps(doc)

    def loads(self, value: str | None) -> Session | None:
        """The session in ``value``; ``None`` when absent, tampered with or expired."""
        if not value:
            return None
        try:
            doc = self._serializer.loads(value, max_age=max(1, round(self.max_age_s)))
        except BadSignature:  # also SignatureExpired
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("x"), str):
            return None
        p = doc.get("p")
        principal = None if not isinstance(p, dict) else Principal(
            tenant=p["t"], caller=p["c"], roles=frozenset(p["r"]),
            scopes=None if p["s"] is None else frozenset(p["s"]), credential=p["k"])
        return Session(csrf=doc["x"], principal=principal)
