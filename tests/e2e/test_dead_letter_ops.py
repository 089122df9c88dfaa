"""Dead letters for the operator: each one logged (kind, reason, ids; never attribute values), and
viewed or re-queued one at a time over the authenticated operations API."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources import parse_event

from ..helpers import drain, hog, make_runtime, wait_for
from ..service import running_service
from .test_status_page import browser, chromium_path  # noqa: F401 - the Chromium fixtures

OPS = "ops-dl-5e1a"
#: over Customer.io's 100-byte event-name limit: the sandbox rejects it (207, per-item error)
LONG_NAME = "n" * 120
SECRET_VALUE = "plan-value-never-logged-77"


def _rejected(distinct_id: str, n: int = 0) -> dict[str, object]:
    return hog(distinct_id, LONG_NAME, n, plan=SECRET_VALUE)


def test_each_dead_letter_is_logged_with_kind_reason_and_ids(
    sandbox: SandboxServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with make_runtime(sandbox, tmp_path / "data", limits="dead-letter", anonymous_hold_s=0) as runtime:
        runtime.ingestor.ingest([parse_event(_rejected("ann")), parse_event(_rejected("bob"))])
        drain(runtime)
        letters = runtime.outbox.dead_letters()
    assert len(letters) == 2
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING and "dead-lettered" in r.getMessage()]
    for letter in letters:
        [record] = [r for r in logged if f"seq {letter.seq}" in r.getMessage()]
        message = record.getMessage()
        assert f"#{letter.id}" in message and letter.person_key in message
        assert f"kind {letter.kind}" in message and letter.reason[:40] in message
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert SECRET_VALUE not in everything


def test_one_dead_letter_viewed_and_requeued_alone(sandbox: SandboxServer, tmp_path: Path) -> None:
    runtime = make_runtime(sandbox, tmp_path / "data", limits="dead-letter", anonymous_hold_s=0, ops_token=OPS)
    auth = {"Authorization": f"Bearer {OPS}"}
    with running_service(runtime) as url:
        answer = httpx.post(f"{url}/webhook", json=[_rejected("ann"), _rejected("bob")], headers=auth, timeout=10)
        assert answer.status_code == 200, answer.text
        wait_for(lambda: len(runtime.outbox.dead_letters()) == 2, "two dead letters")
        first, second = runtime.outbox.dead_letters()

        assert httpx.get(f"{url}/api/dead-letters/{first.id}").status_code == 401
        assert httpx.post(f"{url}/api/dead-letters/{first.id}/retry").status_code == 401
        shown = httpx.get(f"{url}/api/dead-letters/{first.id}", headers=auth)
        assert shown.status_code == 200, shown.text
        body = shown.json()
        assert body["id"] == first.id and body["person_key"] == first.person_key
        assert body["payload"]["name"] == LONG_NAME and body["reason"] == first.reason
        missing = httpx.get(f"{url}/api/dead-letters/999999", headers=auth)
        assert missing.status_code == 404 and "999999" in missing.json()["error"]
        assert httpx.get(f"{url}/api/dead-letters/abc", headers=auth).status_code in (404, 422)

        retried = httpx.post(f"{url}/api/dead-letters/{first.id}/retry", headers=auth)
        assert retried.status_code == 200, retried.text
        assert retried.json() == {"requeued": 1}
        assert httpx.post(f"{url}/api/dead-letters/{first.id}/retry", headers=auth).status_code == 404
        # the re-queued one is rejected again (a new dead letter); the other was never touched
        wait_for(
            lambda: {d.id for d in runtime.outbox.dead_letters()} - {first.id, second.id},
            "the re-queued operation to be dead-lettered again",
        )
        ids = [d.id for d in runtime.outbox.dead_letters()]
        assert second.id in ids and first.id not in ids and len(ids) == 2


@pytest.mark.e2e
def test_status_page_views_and_retries_one_dead_letter(browser: Any, sandbox: SandboxServer, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    runtime = make_runtime(sandbox, tmp_path / "data", limits="dead-letter", anonymous_hold_s=0)
    with running_service(runtime) as url:
        assert httpx.post(f"{url}/webhook", json=[_rejected("ann"), _rejected("bob")], timeout=10).status_code == 200
        wait_for(lambda: len(runtime.outbox.dead_letters()) == 2, "two dead letters")
        first, second = runtime.outbox.dead_letters()
        page = browser.new_page()
        page.goto(f"{url}/status")
        row = page.locator(f'#dead-letters tr[data-id="{first.id}"]')
        row.locator("button.view-letter").click()
        expect(page.locator("#letter-payload")).to_contain_text(LONG_NAME)
        row.locator("button.retry-letter").click()
        expect(page.locator("#requeue-result")).to_have_text(f"Re-queued dead letter #{first.id}")
        wait_for(
            lambda: {d.id for d in runtime.outbox.dead_letters()} - {first.id, second.id},
            "the re-queued operation to be dead-lettered again",
        )
        assert second.id in {d.id for d in runtime.outbox.dead_letters()}
        page.close()
