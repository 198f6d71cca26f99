"""The review console in the browser: server-rendered pages (Jinja2 templates in
``templates/``, no JavaScript) for the review queue and the decision explorer, served by the
gateway under ``/console`` (routes in :mod:`aios_mesh.gateway.routes.console`).

* :mod:`~aios_mesh.gateway.console.session`: the signed session cookie and its CSRF token;
* :mod:`~aios_mesh.gateway.console.explorer`: searching decision records in the audit log.
"""

from aios_mesh.gateway.console.explorer import RecordQuery, find_record, lineage, search_records
from aios_mesh.gateway.console.session import COOKIE, Session, SessionCodec, console_secret

__all__ = ["COOKIE", "RecordQuery", "Session", "SessionCodec", "console_secret", "find_record",
           "lineage", "search_records"]
