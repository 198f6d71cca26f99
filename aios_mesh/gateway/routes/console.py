"""``/console``: the review console in the browser — log in with an API key, work the review
queue (approve, reject, correct), search decision records and open one with its lineage.

Server-rendered (Jinja2, autoescaped; no JavaScript). Authenticated by a signed, HttpOnly,
SameSite=Strict session cookie made at login from a credential the gateway's authenticator
accepts (:mod:`aios_mesh.gateway.console.session`); every form carries the session's CSRF
token and a POST without it is refused with 403. Tenant-scoped like ``/v1/review``: a
reviewer sees only their tenant; an admin every tenant. A page that needs login redirects to
``/console/login``; other errors are shown as a page with the error's status.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import orjson
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from aios_mesh.errors import InvalidInput, MeshError, NotFound
from aios_mesh.gateway.app import Gateway
from aios_mesh.gateway.console.explorer import RecordQuery, find_record, lineage, search_records
from aios_mesh.gateway.console.session import COOKIE, Session, SessionCodec, console_secret
from aios_mesh.gateway.identity import ADMIN, REVIEWER, Principal, Unauthenticated
from aios_mesh.gateway.problems import status_for
from aios_mesh.gateway.routes.review import Decision, decide, item_json, visible_item, visible_items
from aios_mesh.record import Outcome

__all__ = ["SESSION_MAX_AGE_S", "routes"]

#: How long a console login lasts (a revoked key's session ends at the latest then).
SESSION_MAX_AGE_S: Final = 3600.0
_FORM_LIMIT: Final = 256 << 10

_templates = Environment(loader=PackageLoader("aios_mesh.gateway.console", "templates"),
                         autoescape=select_autoescape(default=True), auto_reload=False)


class _NeedsLogin(Exception):
    """The page needs a logged-in session."""


def routes(gateway: Gateway) -> Sequence[BaseRoute]:
    """The console's pages."""
    codec: SessionCodec | None = None

    def sessions() -> SessionCodec:
        nonlocal codec
        if codec is None:  # the secret is read (or made) on first use, not at import
            codec = SessionCodec(console_secret(gateway.state), max_age_s=SESSION_MAX_AGE_S)
        return codec

    def page(request: Request, template: str, session: Session, code: int = 200,
             **context: Any) -> Response:
        principal = session.principal
        html = _templates.get_template(template).render(
            principal=principal, admin=principal is not None and ADMIN in principal.roles,
            csrf=session.csrf, **context)
        response = HTMLResponse(html, status_code=code, headers={
            "Cache-Control": "no-store", "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                       "form-action 'self'; frame-ancestors 'none'"})
        set_cookie(request, response, session)
        return response

    def set_cookie(request: Request, response: Response, session: Session) -> None:
        response.set_cookie(COOKIE, sessions().dumps(session), max_age=int(SESSION_MAX_AGE_S),
                            path="/console", httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")

    def current(request: Request) -> Session:
        return sessions().loads(request.cookies.get(COOKIE)) or sessions().new()

    def logged_in(request: Request) -> tuple[Session, Principal]:
        session = current(request)
        if session.principal is None:
            raise _NeedsLogin
        session.principal.require_role(REVIEWER)
        return session, session.principal

    async def form(request: Request, session: Session) -> FormData:
        """The POSTed form, after its CSRF token is checked (403 when it is wrong)."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            session.check_csrf(None)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > _FORM_LIMIT:
            raise InvalidInput("the form is too large", hint="send less")
        data = await request.form(max_files=0, max_fields=20)
        session.check_csrf(data.get("csrf"))
        return data

    def guarded(handler: Callable[[Request], Awaitable[Response]]
                ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except _NeedsLogin:
                return RedirectResponse("/console/login", status_code=303)
            except MeshError as exc:
                return page(request, "error.html", current(request), status_for(exc),
                            status=status_for(exc), title=type(exc).__name__,
                            detail=exc.message, hint=exc.hint)
        return run

    async def to_queue(request: Request) -> Response:
        return RedirectResponse("/console/", status_code=307)

    @guarded
    async def login_form(request: Request) -> Response:
        return page(request, "login.html", current(request))

    @guarded
    async def login(request: Request) -> Response:
        session = current(request)
        data = await form(request, session)
        key = str(data.get("api_key") or "").strip()
        # the key is checked by the gateway's own authenticator, as on every API call
        scope = {"type": "http", "method": "GET", "path": "/console/login", "headers": [
            (b"authorization", f"Bearer {key}".encode("latin-1", "replace"))]}
        try:
            principal = await gateway.principal(Request(scope))
            principal.require_role(REVIEWER)
        except MeshError as exc:
            status = 401 if isinstance(exc, Unauthenticated) else status_for(exc)
            return page(request, "login.html", session, status, error=exc.message)
        response = RedirectResponse("/console/", status_code=303)
        set_cookie(request, response, sessions().new(principal))  # a new CSRF token too
        return response

    @guarded
    async def logout(request: Request) -> Response:
        await form(request, current(request))
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict")
        return response

    @guarded
    async def queue(request: Request) -> Response:
        session, principal = logged_in(request)
        q = request.query_params
        filters = {"tenant": q.get("tenant"), "capability": q.get("capability"),
                   "status": q.get("status") or "pending"}
        items = visible_items(gateway, principal, status=filters["status"],
                              capability=filters["capability"], tenant=filters["tenant"])
        return page(request, "queue.html", session, filters=filters,
                    items=[item_json(i) for i in items])

    @guarded
    async def item(request: Request) -> Response:
        session, principal = logged_in(request)
        found = item_json(visible_item(gateway, principal, request.path_params["item_id"]))
        return page(request, "item.html", session, item=found,
                    correction_text=_pretty(found["proposed"]))

    def deciding(decision: Decision) -> Callable[[Request], Awaitable[Response]]:
        @guarded
        async def handler(request: Request) -> Response:
            session, principal = logged_in(request)
            item_id = request.path_params["item_id"]
            data = await form(request, session)
            note = str(data.get("note") or "")
            output: Any = None
            if decision == "correct":
                text = str(data.get("output") or "")
                try:
                    output = orjson.loads(text)
                except orjson.JSONDecodeError as exc:
                    found = item_json(visible_item(gateway, principal, item_id))
                    return page(request, "item.html", session, 422, item=found,
                                correction_text=text,
                                error=f"the correction is not valid JSON ({exc.msg})")
            try:
                await decide(gateway, principal, item_id, decision, output=output, note=note)
            except InvalidInput as exc:  # a correction that does not fit, a decided item
                found = item_json(visible_item(gateway, principal, item_id))
                return page(request, "item.html", session, 422, item=found,
                            correction_text=str(data.get("output") or "")
                            or _pretty(found["proposed"]), error=exc.message)
            return RedirectResponse(f"/console/review/{item_id}", status_code=303)
        return handler

    @guarded
    async def records(request: Request) -> Response:
        session, principal = logged_in(request)
        q = request.query_params
        tenant = q.get("tenant") if ADMIN in principal.roles else principal.tenant
        query = RecordQuery(tenant=tenant or None, capability=q.get("capability") or None,
                            outcome=q.get("outcome") or None, since=q.get("since") or None,
                            until=q.get("until") or None)
        found = await search_records(gateway.mesh.ports.audit, query)
        return page(request, "records.html", session, query=query, records=found,
                    outcomes=[str(o) for o in Outcome])

    @guarded
    async def record(request: Request) -> Response:
        session, principal = logged_in(request)
        record_id = request.path_params["record_id"]
        audit = gateway.mesh.ports.audit
        found = await find_record(audit, record_id)
        if found is None or (found.get("tenant") != principal.tenant
                             and ADMIN not in principal.roles):
            raise NotFound(f"no record {record_id!r}",
                           hint="search the decision explorer for your tenant's records")
        parents = [p for p in await lineage(audit, found)
                   if p.get("tenant") == principal.tenant or ADMIN in principal.roles]
        return page(request, "record.html", session, record=found, parents=parents)

    return [Route("/console/login", login_form, methods=["GET"]),
            Route("/console/login", login, methods=["POST"]),
            Route("/console/logout", logout, methods=["POST"]),
            Route("/console/", queue, methods=["GET"]),
            Route("/console/review/{item_id}", item, methods=["GET"]),
            *(Route(f"/console/review/{{item_id}}/{d}", deciding(d), methods=["POST"])
              for d in ("approve", "reject", "correct")),
            Route("/console/records", records, methods=["GET"]),
            Route("/console/records/{record_id}", record, methods=["GET"]),
            Route("/console", to_queue, methods=["GET"])]


def _pretty(value: Any) -> str:
    with contextlib.suppress(TypeError):
        return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    return ""
