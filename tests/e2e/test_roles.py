"""``serve --role``: which routes each role registers and whether it delivers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources import parse_payload

from ..conftest import API_KEY, SITE_ID
from ..helpers import hog, make_settings, wait_for, wait_serving
from ..service import running_service

pytestmark = pytest.mark.e2e

INGEST_PATHS = ("/webhook", "/batch", "/batch/", "/capture", "/capture/", "/e", "/e/", "/i/v0/e", "/i/v0/e/")
ROLES = {"all": (True, True), "ingest": (True, False), "deliver": (False, True)}  # role: (ingest, deliver)
SCRIPT = Path(sys.executable).with_name("posthog-customerio")


def settings_for(sandbox: SandboxServer, data: Path) -> Any:
    return make_settings(data, sandbox, shutdown_grace_s=1)


def delivered_events(sandbox: SandboxServer) -> list[str]:
    return [e["name"] for e in sandbox.state.events()]


@pytest.mark.parametrize("role", list(ROLES))
def test_each_role_registers_its_routes_and_delivers_or_not(role: str, sandbox: SandboxServer, tmp_path: Path) -> None:
    ingest, deliver = ROLES[role]
    runtime = Runtime(settings_for(sandbox, tmp_path / "data"))
    if not ingest:  # something to deliver, stored by another (ingest) process earlier
        runtime.ingestor.ingest(parse_payload([hog("queued", n=n, person=False) for n in range(3)]), "webhook")
    with running_service(runtime, deliver=deliver, ingest=ingest) as url:
        for n, path in enumerate(INGEST_PATHS):
            answer = httpx.post(url + path, json=hog("route", n=n, person=False))
            assert answer.status_code == (200 if ingest else 404), (role, path, answer.text)
        spec_paths = set(httpx.get(f"{url}/openapi.json").json()["paths"])
        assert ("/webhook" in spec_paths) is ingest and ("/batch" in spec_paths) is ingest
        for path in ("/healthz", "/readyz", "/metrics", "/api/status", "/status"):  # every role has these
            assert httpx.get(url + path).status_code == 200, (role, path)
        health = httpx.get(f"{url}/healthz").json()
        assert (health["delivery"] != "off") is deliver and (runtime.current_deliverer is not None) is deliver
        if deliver:
            wait_for(lambda: runtime.outbox.depth() == 0 and len(delivered_events(sandbox)) >= 3, "delivery")
        else:
            assert runtime.outbox.depth() > 0  # stored, waiting for a deliver process
    if not deliver:
        assert delivered_events(sandbox) == []
        # a deliver-role process on the same data directory sends what the ingest role stored
        runtime = Runtime(settings_for(sandbox, tmp_path / "data"))
        with running_service(runtime, deliver=True, ingest=False):
            wait_for(lambda: runtime.outbox.depth() == 0, "the deliver role to drain the outbox")
        assert len(delivered_events(sandbox)) == len(INGEST_PATHS)


def test_serve_role_deliver_process_has_no_receivers(sandbox: SandboxServer, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "CUSTOMERIO_SITE_ID": SITE_ID,
        "CUSTOMERIO_API_KEY": API_KEY,
        "CUSTOMERIO_TRACK_URL": sandbox.url,
        "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "data"),
    }
    process = subprocess.Popen(
        [str(SCRIPT), "serve", "--port", str(port), "--role", "deliver"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_serving(url, process)
        assert httpx.get(f"{url}/healthz").json()["delivery"] == "running"
        for path in INGEST_PATHS:
            assert httpx.post(url + path, json=hog("cli", n=1, person=False)).status_code == 404, path
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
