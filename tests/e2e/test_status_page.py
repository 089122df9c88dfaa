"""The status page in a real headless Chromium against the service and an in-process sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from posthog_customerio.runtime import Runtime

from ..helpers import hog, make_settings, unavailable, wait_for
from ..service import running_service

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Over Customer.io's 100-byte event-name limit: the sandbox answers 207 with a per-item
# error and the operation is dead-lettered. The markup checks the page escapes text:
# inserted as HTML, the <img> would request a foreign host (caught below).
LONG_NAME = '<img src="http://evil.invalid/x.png">' + "n" * 80


@pytest.fixture
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is not installed (apt-get install chromium); the status page test needs it")
    return CHROMIUM


@pytest.fixture
def browser(chromium_path: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def status_of(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/api/status", timeout=5)
    response.raise_for_status()
    return response.json()


def wait_for_status(url: str, check: Any, what: str, timeout: float = 30) -> dict[str, Any]:
    """The service's ``/api/status`` once ``check(status)`` holds."""

    def ready() -> dict[str, Any] | None:
        status = status_of(url)
        return status if check(status) else None

    return wait_for(ready, what, timeout, describe=lambda: status_of(url))  # type: ignore[no-any-return]


def test_status_page_shows_figures_and_requeues_dead_letters(browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    settings = make_settings(tmp_path / "data", shutdown_grace_s=2, limits="dead-letter")
    runtime = Runtime(settings, sandbox=True)
    assert runtime.sandbox is not None
    # One transient outage first: a retry, and an entry in the page's recent errors.
    runtime.sandbox.state.add_fault(status=503, count=1, retry_after=1)
    with running_service(runtime) as url:
        events = [hog("ann", "clicked", n) for n in range(3)] + [hog("bob", "paid", n) for n in range(2)]
        events.append(hog("bob", LONG_NAME, 9))
        answer = httpx.post(f"{url}/webhook", json=events, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["accepted"] == 6
        status = wait_for_status(
            url, lambda s: s["outbox"]["depth"] == 0 and s["outbox"]["dead_letters"] == 1, "delivery"
        )
        assert status["ingest"]["events_received"] == 6
        delivered = status["delivery"]["delivered"]
        assert delivered >= 5
        assert status["delivery"]["retries"] >= 1 and status["delivery"]["requests_by_status"].get("503") == 1
        errors = status["recent_errors"]
        error = next(e for e in errors if "503" in e["message"])
        assert any("dead-lettered" in e["message"] for e in errors)
        [letter] = status["dead_letters"]
        assert letter["name"] == LONG_NAME and letter["reason"]

        page = browser.new_page(viewport={"width": 1280, "height": 900})
        requests: list[str] = []
        console_errors: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: console_errors.append(f"uncaught: {error}"))

        page.goto(f"{url}/status")
        expect(page.locator("#events-received")).to_have_text("6")
        expect(page.locator("#operations-delivered")).to_have_text(f"{delivered:,}")
        expect(page.locator("#outbox-depth")).to_have_text("0")
        expect(page.locator("#dead-letter-count")).to_have_text("1")
        expect(page.locator("#delivery-state")).to_have_text("running")
        # person work apart from anonymous events: these people's events were delivered, nothing anonymous
        expect(page.locator("#person-work-depth")).to_have_text("0")
        expect(page.locator("#person-latency")).to_contain_text(" s / ")
        expect(page.locator("#anonymous-backlog")).to_have_text("0")
        expect(page.locator("#anonymous-expired")).to_have_text("0 by age / 0 by count")
        rows = page.locator("#dead-letters tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text(letter["reason"])
        expect(rows.first).to_contain_text(LONG_NAME)  # shown as text, not markup
        expect(rows.first.locator("td").first).to_have_text(str(letter["id"]))
        assert page.locator("#dead-letters img").count() == 0
        expect(page.locator("#errors li")).to_have_count(len(errors))
        expect(page.locator("#errors li").filter(has_text="503")).to_contain_text(error["message"])
        page.screenshot(path=str(tmp_path / "status-before.png"), full_page=True)

        page.click("#requeue-all")
        expect(page.locator("#requeue-result")).to_have_text("Re-queued 1 dead letter")
        # The re-queued operation goes through the pipeline again and the sandbox
        # rejects it again: a new dead letter (new id) replaces the old one.
        after = wait_for_status(
            url,
            lambda s: s["outbox"]["depth"] == 0 and [d["id"] for d in s["dead_letters"]] not in ([], [letter["id"]]),
            "the re-queued operation to be dead-lettered again",
        )
        [again] = after["dead_letters"]
        assert again["id"] != letter["id"] and again["name"] == LONG_NAME
        assert after["delivery"]["dead_lettered"] == 2
        expect(page.locator("#dead-letters tr")).to_have_count(1)
        expect(page.locator("#dead-letters tr").first.locator("td").first).to_have_text(str(again["id"]))
        expect(page.locator("#dead-letter-count")).to_have_text("1")
        page.screenshot(path=str(tmp_path / "status-after.png"), full_page=True)

        page.set_viewport_size({"width": 390, "height": 844})
        page.screenshot(path=str(tmp_path / "status-phone.png"), full_page=True)
        page.emulate_media(color_scheme="dark")
        page.screenshot(path=str(tmp_path / "status-phone-dark.png"), full_page=True)
        page.close()

    foreign = [u for u in requests if urlsplit(u).scheme != "data" and urlsplit(u).hostname != "127.0.0.1"]
    assert not foreign, f"the page requested other hosts: {foreign}"
    assert any(urlsplit(u).path == "/api/status" for u in requests)
    assert not console_errors, console_errors


def test_status_page_shows_paused_delivery_with_the_auth_error(browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    settings = make_settings(tmp_path / "data", shutdown_grace_s=0)
    runtime = Runtime(settings, sandbox=True)
    assert runtime.sandbox is not None
    runtime.sandbox.state.set_credentials("another-site", "another-key")  # ours are now rejected
    with running_service(runtime) as url:
        assert httpx.post(f"{url}/webhook", json=hog("cy", "clicked", 1), timeout=10).status_code == 200
        status = wait_for_status(url, lambda s: s["delivery"]["state"] == "paused", "delivery to pause")
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        console_errors: list[str] = []
        page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)
        page.goto(f"{url}/status")
        expect(page.locator("#delivery-state")).to_have_text("paused")
        banner = page.locator("#auth-banner")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text(status["delivery"]["auth_error"])
        expect(page.locator("#outbox-depth")).not_to_have_text("0")
        page.screenshot(path=str(tmp_path / "status-paused.png"), full_page=True)
        page.close()
    assert not console_errors, console_errors


def test_status_page_behind_the_ops_token_with_basic_auth(browser: Any, tmp_path: Path) -> None:
    """With OPS_TOKEN set the browser is asked for it (Basic, any user name); with it the page works."""
    from playwright.sync_api import expect

    token = "ops-page-4d2f"
    settings = make_settings(tmp_path / "data", shutdown_grace_s=0, ops_token=token)
    runtime = Runtime(settings, sandbox=True)
    with running_service(runtime) as url:
        events = [hog("eve", "clicked", n) for n in range(4)]
        assert httpx.post(f"{url}/webhook", json=events, timeout=10).status_code == 200
        refused = httpx.get(f"{url}/status", timeout=5)
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic realm=")
        status = httpx.get(f"{url}/api/status", headers={"Authorization": f"Bearer {token}"}, timeout=5).json()
        assert status["ingest"]["events_received"] == 4

        from playwright.sync_api import Error as PlaywrightError

        anonymous = browser.new_context()
        with pytest.raises(PlaywrightError, match="AUTH"):  # headless cannot prompt: no page, no figures
            anonymous.new_page().goto(f"{url}/status")
        anonymous.close()

        context = browser.new_context(http_credentials={"username": "ops", "password": token})
        page = context.new_page()
        statuses: list[tuple[str, int]] = []
        page.on("response", lambda response: statuses.append((urlsplit(response.url).path, response.status)))
        assert page.goto(f"{url}/status").status == 200
        expect(page.locator("#events-received")).to_have_text("4")
        expect(page.locator("#outbox-depth")).to_have_text("0")
        assert ("/api/status", 200) in statuses  # the page's own requests carry the credentials
        context.close()


def test_status_page_shows_the_person_sync(browser: Any, tmp_path: Path) -> None:
    """``PERSON_SYNC_INTERVAL_S``: the service's passes of PostHog's persons (the stand-in) in their own panel."""
    from playwright.sync_api import expect

    from ..posthog_api_standin import STANDIN_KEY, PersonsStandin, running_persons_standin

    standin = PersonsStandin(12, default_limit=5)
    with running_persons_standin(standin) as posthog_url:
        settings = make_settings(
            tmp_path / "data",
            shutdown_grace_s=0,
            person_sync_interval_s=3600,
            posthog_api_host=posthog_url,
            posthog_project_id="1",
            posthog_personal_api_key=STANDIN_KEY,
        )
        runtime = Runtime(settings, sandbox=True)
        with running_service(runtime) as url:
            status = wait_for_status(url, lambda s: s["person_sync"]["passes"]["ok"] == 1, "the first pass")
            last = status["person_sync"]["last_pass"]
            assert last["persons_read"] == 12 and last["operations_enqueued"] > 0
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            console_errors: list[str] = []
            page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)
            page.goto(f"{url}/status")
            expect(page.locator("#person-sync-panel")).to_be_visible()
            expect(page.locator("#person-sync-interval")).to_have_text("1 h 00 m")
            expect(page.locator("#person-sync-passes")).to_have_text("1 ok / 0 failed / 0 skipped")
            expect(page.locator("#person-sync-read")).to_have_text("12")
            expect(page.locator("#person-sync-last")).to_contain_text("ok, 12 persons in ")
            expect(page.locator("#person-sync-error")).to_have_text("none")
            page.screenshot(path=str(tmp_path / "status-person-sync.png"), full_page=True)
            page.close()
    assert not console_errors, console_errors
