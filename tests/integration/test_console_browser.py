"""The review console in a real headless Chromium (Debian's ``chromium``, driven by
Playwright) against a real gateway process (uvicorn) with real API keys: a reviewer logs in,
approves one review item and corrects another; the effect is checked through the API, the
review store (labels), the audit log, and the result topic the waiting workflow listens on.

Needs ``/usr/bin/chromium`` (``make test`` installs it: see the Makefile).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from aios_mesh.gateway.auth import KeyStore
from aios_mesh.gateway.testing import running_gateway
from aios_mesh.review import ReviewQueue
from aios_mesh.state import SqliteState
from aios_mesh.testing.conformance.events import receive
from tests.integration.console_app import make_mesh

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOPIC = "invoices.done"
T = TypeVar("T")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: run `make test` (it installs Debian's chromium) "
                    "or apt-get install -y --no-install-recommends chromium")
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


async def _park(state: Path) -> list[str]:
    """Two calls from an event route wait for a human (their answers go to TOPIC)."""
    mesh = make_mesh(state)
    ids = []
    for n, text in enumerate(["Acme invoice mail bob@example.com", "Initech invoice 7"]):
        result = await mesh.ainvoke("extract", {"text": text, "confidence": 0.3},
                                    tenant="acme", caller="intake",
                                    resume={"topic": TOPIC, "key": f"inv-{n}",
                                            "capability": "extract"})
        assert result.review_id is not None
        ids.append(result.review_id)
    await mesh.ainvoke("extract", {"text": "Globex x", "confidence": 0.3}, tenant="globex")
    await mesh.aclose()
    return ids


async def _answers(state: Path, n: int) -> list[dict[str, object]]:
    mesh = make_mesh(state)
    try:
        sub = await mesh.ports.events.subscribe(TOPIC, group="test")
        return [d.event.data for d in await receive(sub, n, timeout=30)]
    finally:
        await mesh.aclose()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    # Playwright's sync API keeps an event loop on this thread: run ours on another one
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _open_item(page: Page, url: str, item_id: str) -> None:
    page.goto(f"{url}/console/")
    page.click(f"a[href='/console/review/{item_id}']")
    expect(page.locator("#reason")).to_contain_text("confidence 0.300 below 0.8")


def test_a_reviewer_approves_and_corrects_in_the_browser(tmp_path: Path,
                                                         browser: Browser) -> None:
    first, second = _run(_park(tmp_path))
    keys = KeyStore(SqliteState(tmp_path))
    _, reviewer = keys.create("acme", "ana", roles=["reviewer"])
    _, caller = keys.create("acme", "app")
    keys.close()
    _run(_answers(tmp_path, 0))  # the group exists before anything is published

    with running_gateway(None, app="tests.integration.console_app:mesh", cwd=REPO,
                         env={"CONSOLE_TEST_STATE": str(tmp_path)}) as gw:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{gw.url}/console/")
        expect(page).to_have_url(f"{gw.url}/console/login")
        page.fill("input[name=api_key]", caller)  # no reviewer role
        page.click("button[type=submit]")
        expect(page.locator(".error")).to_contain_text("reviewer")
        page.fill("input[name=api_key]", reviewer)
        page.click("button[type=submit]")
        expect(page.locator("#queue tbody tr")).to_have_count(2)  # acme's only
        cookie = next(c for c in context.cookies() if c["name"] == "aios_console")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

        _open_item(page, gw.url, first)
        expect(page.locator("#input")).to_contain_text("[EMAIL]")
        expect(page.locator("#input")).not_to_contain_text("bob@example.com")
        expect(page.locator("#confidence")).to_have_text("0.300")
        page.click("#approve")
        expect(page.locator("#status")).to_contain_text("approved by ana")

        _open_item(page, gw.url, second)
        page.fill("#output", '{"vendor": "Initech", "total": 7, "confidence": 1}')
        page.fill("form[action$='/correct'] input[name=note]", "total is 7")
        page.click("#correct")
        expect(page.locator("#status")).to_contain_text("approved by ana")
        expect(page.locator("#final")).to_contain_text("Initech")

        page.goto(f"{gw.url}/console/records?capability=extract")
        expect(page.locator("#records tbody tr")).to_have_count(2)
        context.close()

        headers = {"Authorization": f"Bearer {reviewer}"}
        seen = httpx.get(f"{gw.url}/v1/review/{second}", headers=headers).json()
        assert seen["status"] == "approved" and seen["note"] == "total is 7"
        assert seen["final_output"] == {"vendor": "Initech", "total": 7.0, "confidence": 1.0}
        assert httpx.get(f"{gw.url}/v1/review", headers=headers).json() == {"items": []}

    queue = ReviewQueue(tmp_path / "review.db")
    labels = {label.review_id: label for label in queue.labels(tenant="acme")}
    queue.close()
    assert {k: (v.verdict, v.labelled_by) for k, v in labels.items()} == {
        first: ("approved", "ana"), second: ("corrected", "ana")}
    assert labels[second].proposed == {"vendor": "Initech", "total": 17.0, "confidence": 0.3}
    # the workflow resumes: each answer is published to the route's result topic
    answers = _run(_answers(tmp_path, 2))
    by_review = {a["review_id"]: a for a in answers}
    assert by_review[second]["output"] == {"vendor": "Initech", "total": 7.0,
                                           "confidence": 1.0}
    assert by_review[first]["output"]["vendor"] == "Acme"  # type: ignore[index]
    assert {a["reviewed_by"] for a in answers} == {"ana"}
