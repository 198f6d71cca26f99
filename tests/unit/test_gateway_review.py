"""The review API (``/v1/review``) and the console (``/console``) in-process (httpx over
ASGI) on the embedded mesh, with test credentials: roles, tenant scoping, decisions and
labels, the session cookie, CSRF and the decision explorer."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aios_mesh import Mesh
from aios_mesh.gateway import create_app
from aios_mesh.gateway.console import COOKIE, SessionCodec
from aios_mesh.gateway.identity import Principal
from aios_mesh.gateway.routes import console, review
from tests.integration.console_app import KeyAuthenticator, make_mesh

ACME = {"Authorization": "Bearer acme-reviewer"}
GLOBEX = {"Authorization": "Bearer globex-reviewer"}
ROOT = {"Authorization": "Bearer root"}


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    built = make_mesh(tmp_path)
    yield built
    await built.aclose()


@pytest.fixture
async def client(mesh: Mesh) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(mesh, authenticator=KeyAuthenticator(),
                     modules=[review.routes, console.routes], close_mesh=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gw") as c:
        yield c


async def park(mesh: Mesh, tenant: str = "acme", text: str = "Acme mail bob@example.com",
               confidence: float = 0.4) -> str:
    result = await mesh.ainvoke("extract", {"text": text, "confidence": confidence},
                                tenant=tenant, caller="app")
    assert result.review_id is not None
    return result.review_id


async def test_the_queue_needs_a_reviewer_and_shows_only_the_own_tenant(
        mesh: Mesh, client: httpx.AsyncClient) -> None:
    mine, theirs = await park(mesh), await park(mesh, "globex")
    assert (await client.get("/v1/review")).status_code == 401
    denied = await client.get("/v1/review", headers={"Authorization": "Bearer acme-caller"})
    assert denied.status_code == 403 and denied.json()["code"] == "forbidden"
    listed = (await client.get("/v1/review?tenant=globex", headers=ACME)).json()["items"]
    assert [i["id"] for i in listed] == [mine]  # ?tenant= does not widen a reviewer's view
    item = listed[0]
    assert item["reason_kind"] == "confidence" and item["confidence"] == pytest.approx(0.4)
    assert item["input"]["text"] == "Acme mail [EMAIL]"  # the input is shown redacted
    assert item["proposed"]["vendor"] == "Acme" and "resume" not in item
    other = await client.get(f"/v1/review/{theirs}", headers=ACME)
    missing = await client.get("/v1/review/nope", headers=ACME)
    assert other.status_code == missing.status_code == 404
    assert other.json()["detail"].replace(theirs, "X") == \
        missing.json()["detail"].replace("nope", "X")  # no leak of existence
    both = (await client.get("/v1/review", headers=ROOT)).json()["items"]
    assert {i["id"] for i in both} == {mine, theirs}
    only = (await client.get("/v1/review?tenant=globex", headers=ROOT)).json()["items"]
    assert [i["id"] for i in only] == [theirs]
    assert (await client.get("/v1/review?capability=intake", headers=ACME)).json() == \
        {"items": []}
    assert (await client.get("/v1/review?status=bogus", headers=ACME)).status_code == 422
    assert (await client.get("/v1/review?limit=0", headers=ACME)).status_code == 422


async def test_approve_reject_and_correct_keep_labels_and_audit(
        mesh: Mesh, client: httpx.AsyncClient) -> None:
    a, r, c, g = await park(mesh), await park(mesh), await park(mesh), await park(mesh,
                                                                                 "globex")
    ok = await client.post(f"/v1/review/{a}/approve", headers=ACME)
    assert ok.status_code == 200 and ok.json()["status"] == "approved"
    assert ok.json()["decided_by"] == "ana"
    no = await client.post(f"/v1/review/{r}/reject", headers=ACME, json={"note": "spam"})
    assert no.json()["status"] == "rejected" and no.json()["note"] == "spam"
    bad = await client.post(f"/v1/review/{c}/correct", headers=ACME,
                            json={"output": {"vendor": "Acme"}})
    assert bad.status_code == 422 and "Extracted" in bad.json()["detail"]
    assert (await client.post(f"/v1/review/{c}/correct", headers=ACME,
                              json={"note": "x"})).status_code == 422
    fixed = {"vendor": "Acme Corp", "total": 12.0, "confidence": 1.0}
    done = await client.post(f"/v1/review/{c}/correct", headers=ACME, json={"output": fixed})
    assert done.json()["final_output"] == fixed
    again = await client.post(f"/v1/review/{a}/reject", headers=ACME)
    assert again.status_code == 422 and "already approved" in again.json()["detail"]
    cross = await client.post(f"/v1/review/{g}/approve", headers=ACME)
    assert cross.status_code == 404
    assert mesh.review_queue().get(g).status == "pending"  # nothing half-written
    labels = {x.review_id: x for x in mesh.review_queue().labels(tenant="acme")}
    assert {k: v.verdict for k, v in labels.items()} == {a: "approved", r: "rejected",
                                                         c: "corrected"}
    assert labels[c].output == fixed and labels[c].labelled_by == "ana"
    decisions = [e.record for e in await mesh.ports.audit.read()
                 if e.record.get("kind") == "review_decision"]
    assert [d["decision"] for d in decisions] == ["approved", "rejected", "approved"]


async def test_a_decision_body_must_be_json(mesh: Mesh, client: httpx.AsyncClient) -> None:
    item = await park(mesh)
    text = await client.post(f"/v1/review/{item}/correct", headers=ACME, content=b"x")
    assert text.status_code == 415
    broken = await client.post(f"/v1/review/{item}/correct",
                               headers={**ACME, "content-type": "application/json"},
                               content=b"{not json")
    assert broken.status_code == 422
    assert mesh.review_queue().get(item).status == "pending"


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


async def login(client: httpx.AsyncClient, key: str) -> httpx.Response:
    form = await client.get("/console/login")
    return await client.post("/console/login",
                             data={"csrf": _csrf(form.text), "api_key": key})


async def test_console_login_sets_a_strict_httponly_signed_cookie(
        mesh: Mesh, client: httpx.AsyncClient) -> None:
    first = await client.get("/console/")
    assert first.status_code == 303 and first.headers["location"] == "/console/login"
    wrong = await login(client, "nope")
    assert wrong.status_code == 401 and "unknown credential" in wrong.text
    caller = await login(client, "acme-caller")
    assert caller.status_code == 403 and "reviewer" in caller.text
    ok = await login(client, "acme-reviewer")
    assert ok.status_code == 303 and ok.headers["location"] == "/console/"
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert "acme-reviewer" not in cookie  # the key itself never goes into the cookie
    page = await client.get("/console/")
    assert page.status_code == 200 and "ana" in page.text
    assert page.headers["cache-control"] == "no-store"
    client.cookies.set(COOKIE, client.cookies[COOKIE][:-2] + "xx", path="/console")
    assert (await client.get("/console/")).status_code == 303  # tampered: log in again


async def test_a_post_without_the_csrf_token_is_refused(mesh: Mesh,
                                                        client: httpx.AsyncClient) -> None:
    item = await park(mesh)
    await login(client, "acme-reviewer")
    page = await client.get(f"/console/review/{item}")
    token = _csrf(page.text)
    for data in ({}, {"csrf": "forged"}, {"csrf": token[:-1]}):
        refused = await client.post(f"/console/review/{item}/approve", data=data)
        assert refused.status_code == 403
    json_post = await client.post(f"/console/review/{item}/approve", json={"csrf": token})
    assert json_post.status_code == 403
    assert mesh.review_queue().get(item).status == "pending"
    no_token_login = await client.post("/console/login", data={"api_key": "acme-reviewer"})
    assert no_token_login.status_code == 403
    done = await client.post(f"/console/review/{item}/approve", data={"csrf": token})
    assert done.status_code == 303
    assert mesh.review_queue().get(item).status == "approved"


async def test_console_item_page_and_correction(mesh: Mesh, client: httpx.AsyncClient) -> None:
    item, theirs = await park(mesh), await park(mesh, "globex")
    await login(client, "acme-reviewer")
    page = await client.get(f"/console/review/{item}")
    assert "confidence 0.400 below 0.8" in page.text and "[EMAIL]" in page.text
    assert "bob@example.com" not in page.text
    assert (await client.get(f"/console/review/{theirs}")).status_code == 404
    token = _csrf(page.text)
    broken = await client.post(f"/console/review/{item}/correct",
                               data={"csrf": token, "output": "{oops"})
    assert broken.status_code == 422 and "not valid JSON" in broken.text
    unfit = await client.post(f"/console/review/{item}/correct",
                              data={"csrf": token, "output": '{"vendor": "x"}'})
    assert unfit.status_code == 422 and "Extracted" in unfit.text
    fixed = await client.post(f"/console/review/{item}/correct", data={
        "csrf": token, "output": '{"vendor": "Acme Corp", "total": 3, "confidence": 1}',
        "note": "<script>x</script>"})
    assert fixed.status_code == 303
    after = await client.get(f"/console/review/{item}")
    assert "Acme Corp" in after.text and "approved by ana" in after.text
    assert mesh.review_queue().labels()[0].verdict == "corrected"
    queue = await client.get("/console/?status=all")
    assert item in queue.text and theirs not in queue.text


async def test_explorer_searches_records_and_shows_lineage(mesh: Mesh,
                                                           client: httpx.AsyncClient) -> None:
    parent = await mesh.ainvoke("intake", {"text": "Acme x", "confidence": 0.99},
                                tenant="acme")
    await mesh.ainvoke("extract", {"text": "Globex y"}, tenant="globex")
    child = next(e.record for e in await mesh.ports.audit.read()
                 if e.record.get("capability", {}).get("name") == "extract"
                 and e.record.get("tenant") == "acme")
    await login(client, "acme-reviewer")
    found = await client.get("/console/records?capability=extract&outcome=ok")
    assert child["record_id"] in found.text and "Globex" not in found.text
    assert found.text.count("data-record=") == 1
    globex = await client.get("/console/records?tenant=globex")
    assert "data-record=" in globex.text and "globex" not in globex.text.split("<tbody>")[1]
    none = await client.get("/console/records?since=2999-01-01")
    assert "No record matches" in none.text
    assert (await client.get("/console/records?since=yesterday")).status_code == 422
    assert (await client.get("/console/records?outcome=great")).status_code == 422
    one = await client.get(f"/console/records/{child['record_id']}")
    parents = one.text.split('id="parents"')[1].split("</ol>")[0]
    assert parent.record.record_id in parents
    assert (await client.get(f"/console/records/{parent.record.record_id}")).status_code == 200
    await login(client, "globex-reviewer")
    assert (await client.get(f"/console/records/{child['record_id']}")).status_code == 404


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tenant=st.text(min_size=1, max_size=12), caller=st.text(max_size=12),
       roles=st.frozensets(st.sampled_from(["reviewer", "admin", "x"])),
       scopes=st.none() | st.frozensets(st.text(max_size=6), max_size=3),
       other=st.text(min_size=8, max_size=40))
def test_a_session_survives_its_cookie_and_nothing_else_does(
        tenant: str, caller: str, roles: frozenset[str], scopes: frozenset[str] | None,
        other: str) -> None:
    codec = SessionCodec("s3cret")
    session = codec.new(Principal(tenant, caller, scopes=scopes, roles=roles, credential="k"))
    assert codec.loads(codec.dumps(session)) == session
    assert SessionCodec("other").loads(codec.dumps(session)) is None
    assert codec.loads(other) is None


def test_an_expired_session_is_refused() -> None:
    codec = SessionCodec("s3cret", max_age_s=1)
    value = codec.dumps(codec.new())
    time.sleep(2.1)
    assert codec.loads(value) is None
