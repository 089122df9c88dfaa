"""posthog-js (npm, pinned in tests/js/package.json) in Debian Chromium, on a page served from another origin
than ``serve``, with ``api_host`` = the service: standalone, and as a reverse proxy in front of a fake PostHog.

Everything must reach the Customer.io sandbox while the page is still open (no reliance on the unload beacon).
"""

from __future__ import annotations

import json
import threading
import uuid as uuidlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from posthog_customerio.runtime import Runtime

from ..fake_posthog import FLAG_KEY, running_fake_posthog
from ..helpers import make_settings, npm_install, unavailable, wait_for
from ..service import running_service
from .test_status_page import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.e2e

JS_DIR = Path(__file__).resolve().parents[1] / "js"
TOKEN = "phc_browser_test_token"
CAPTURE_PATHS = ("/e/", "/i/v0/e/", "/batch/", "/capture/")


@pytest.fixture(scope="session")
def posthog_js() -> Path:
    """posthog-js's browser bundle, installed from npm at the version tests/js/package.json pins."""
    npm_install(JS_DIR, "posthog-js", "ci", "--ignore-scripts")
    bundle = JS_DIR / "node_modules" / "posthog-js" / "dist" / "array.full.js"
    assert bundle.exists(), f"{bundle} missing after npm ci"
    return bundle


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is not installed (apt-get install chromium); the posthog-js browser test needs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>shop</title>
<script src="/posthog.js"></script>
<script>
  window.phLoaded = false;
  posthog.init(%(token)s, {
    api_host: %(api_host)s, ui_host: "https://us.posthog.com", request_batching: %(batching)s,
    autocapture: false, capture_pageleave: false, disable_surveys: true, persistence: "localStorage",
    // an automated browser (navigator.webdriver) is dropped as a bot otherwise, as posthog-js documents for e2e tests
    opt_out_useragent_filter: true,
    loaded: function () { window.phLoaded = true; }
  });
</script></head><body><h1>shop</h1></body></html>
"""


class _Site(ThreadingHTTPServer):
    page: bytes
    bundle: bytes


class _Handler(BaseHTTPRequestHandler):
    server: _Site

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        body, kind = (
            (self.server.bundle, "application/javascript") if path == "/posthog.js" else (self.server.page, "text/html")
        )
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def serve_site(page: str, bundle: Path) -> tuple[_Site, str]:
    site = _Site(("127.0.0.1", 0), _Handler)
    site.page, site.bundle = page.encode(), bundle.read_bytes()
    threading.Thread(target=site.serve_forever, name="site", daemon=True).start()
    return site, f"http://127.0.0.1:{site.server_address[1]}"


SCENARIO = """([userId, email, company]) => {
  posthog.capture("viewed_product", {sku: "sku-1"});
  posthog.identify(userId, {email: email, plan: "pro"});
  posthog.capture("added_to_cart", {sku: "sku-1"});
  posthog.capture("checkout_started");
  posthog.group("company", company, {name: "Acme"});
  posthog.capture("paid", {amount: 42});
}"""


@pytest.mark.parametrize("batching", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("mode", ["standalone", "proxy"])
def test_posthog_js_in_chromium_reaches_customerio_while_the_page_is_open(
    browser: Any,
    posthog_js: Path,
    tmp_path: Path,
    mode: str,
    batching: bool,
) -> None:
    suffix = uuidlib.uuid4().hex[:8]
    user_id, email, company = f"user-{suffix}", f"ann-{suffix}@example.com", f"acme-{suffix}"
    with running_fake_posthog() as (fake, posthog_url):
        settings = make_settings(
            tmp_path / "data",
            shutdown_grace_s=1,
            webhook_token=TOKEN,
            group_type_map="company=1",
            posthog_host=posthog_url if mode == "proxy" else None,
        )
        runtime = Runtime(settings, sandbox=True)
        sandbox = runtime.sandbox
        assert sandbox is not None
        with running_service(runtime) as api_host:
            page_html = PAGE % {
                "token": json.dumps(TOKEN),
                "api_host": json.dumps(api_host),
                "batching": "true" if batching else "false",
            }
            site, origin = serve_site(page_html, posthog_js)
            assert urlsplit(origin).port != urlsplit(api_host).port  # another origin than serve
            context = browser.new_context()
            page = context.new_page()
            sent: list[tuple[str, str, bytes]] = []
            bad: list[str] = []
            errors: list[str] = []

            def started(request: Any) -> None:
                if (
                    request.url.startswith(api_host)
                    and request.method == "POST"
                    and urlsplit(request.url).path in CAPTURE_PATHS
                ):
                    sent.append(
                        (urlsplit(request.url).path, urlsplit(request.url).query, request.post_data_buffer or b"")
                    )

            def answered(response: Any) -> None:
                if response.url.startswith(api_host) and response.status >= 400:
                    bad.append(f"{response.request.method} {response.url} -> {response.status}")

            page.on("request", started)
            page.on("response", answered)
            page.on(
                "requestfailed", lambda request: bad.append(f"failed {request.method} {request.url}: {request.failure}")
            )
            page.on("pageerror", lambda error: errors.append(str(error)))
            try:
                page.goto(origin + "/shop")
                page.wait_for_function("() => window.phLoaded === true", timeout=30_000)
                page.evaluate(SCENARIO, [user_id, email, company])

                def delivered() -> bool:
                    person = sandbox.state.person(email)
                    if person is None or person["attributes"].get("plan") != "pro":
                        return False
                    names = {e["name"] for e in sandbox.state.events()} | {
                        e["name"] for e in sandbox.state.anonymous_events()
                    }
                    wanted = {"viewed_product", "added_to_cart", "checkout_started", "paid", origin + "/shop"}
                    return wanted <= names and company in json.dumps(sandbox.state.objects())

                # while the page is still open: no unload beacon involved
                wait_for(
                    delivered,
                    f"posthog-js events in Customer.io ({mode}, batching={batching})",
                    45,
                    describe=lambda: {
                        "people": sandbox.state.people(),
                        "events": [e["name"] for e in sandbox.state.events()],
                        "anonymous": [e["name"] for e in sandbox.state.anonymous_events()],
                        "objects": sandbox.state.objects(),
                        "sent": [(p, q, len(b)) for p, q, b in sent],
                        "bad": bad,
                        "errors": errors,
                        "status": runtime.outbox.depth(),
                    },
                )
                person = sandbox.state.person(email)
                assert person is not None and person["email"] == email
                mine = {e["name"] for e in sandbox.state.events(email)}
                assert {"added_to_cart", "checkout_started", "paid"} <= mine
                flag = page.evaluate(f"() => posthog.isFeatureEnabled({json.dumps(FLAG_KEY)})")
                if mode == "proxy":
                    # /flags answered by PostHog through the proxy: its flag reaches the SDK
                    page.wait_for_function(
                        f"() => posthog.isFeatureEnabled({json.dumps(FLAG_KEY)}) === true", timeout=30_000
                    )

                    def forwarded() -> list[tuple[str, str, bytes]]:
                        return sorted(
                            (r.path, r.query, r.body)
                            for r in fake.recorded()
                            if r.method == "POST" and r.path in CAPTURE_PATHS
                        )

                    # byte-identical bodies, same paths and queries (a request may still be in flight: wait for it)
                    wait_for(
                        lambda: sent and forwarded() == sorted(sent),
                        "every capture request forwarded as sent",
                        45,
                        describe=lambda: (
                            [(p, q, len(b)) for p, q, b in forwarded()],
                            [(p, q, len(b)) for p, q, b in sent],
                        ),
                    )
                    assert any(r.path.startswith("/flags") for r in fake.recorded())
                    assert any(r.body.startswith(b"\x1f\x8b") for r in fake.recorded("/e"))  # posthog-js's native gzip
                else:
                    assert not fake.recorded() and flag is not True
                    assert any(body.startswith(b"\x1f\x8b") for _, _, body in sent)  # the native-gzip $pageview path
                assert not bad, bad
                assert not errors, errors
            finally:
                context.close()
                site.shutdown()
                site.server_close()
