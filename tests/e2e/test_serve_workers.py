"""``serve --workers N`` as a PostHog proxy: whichever process takes a connection, the answer is the same.

The receiver workers proxy capture to PostHog themselves and pass everything else (flags, the operations API) to
the first process; PostHog sees the client's address in ``X-Forwarded-For`` either way, and the events PostHog
accepted reach the outbox once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import API_KEY, SITE_ID
from ..fake_posthog import FLAG_KEY, running_fake_posthog
from ..helpers import free_port, wait_for, wait_serving

pytestmark = pytest.mark.e2e

SRC = Path(__file__).resolve().parents[2] / "src"


def _workers(pid: int) -> list[int]:
    """Receiver workers of the ``serve`` process ``pid``: its children running multiprocessing's ``spawn_main``."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(int(child))
    return found


def test_workers_proxy_and_forward_as_one_process(tmp_path: Path) -> None:
    with running_fake_posthog() as (fake, posthog_url):
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(SRC),
            "CUSTOMERIO_SITE_ID": SITE_ID,
            "CUSTOMERIO_API_KEY": API_KEY,
            "CUSTOMERIO_TRACK_URL": "http://127.0.0.1:9",  # nothing delivered here: the outbox is what is checked
            "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "data"),
            "POSTHOG_HOST": posthog_url,
            "SQLITE_SYNCHRONOUS": "NORMAL",
            "OPS_TOKEN": "ops-token",
            "SHUTDOWN_GRACE_S": "1",  # Customer.io is unreachable here: no flush to wait for on stop
        }
        command = [sys.executable, "-m", "posthog_customerio", "serve", "--port", str(port), "--workers", "2"]
        log = tmp_path / "serve.log"
        with open(log, "w") as output:
            process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_serving(url, process)
            wait_for(lambda: len(_workers(process.pid)) == 1, "a receiver worker", 60, describe=log.read_text)
            ops = {"Authorization": "Bearer ops-token"}
            captured = 0
            by_process: dict[int, int] = {}

            def each_process_answered() -> bool:
                nonlocal captured
                for _ in range(4):  # fresh connections: each taken by whichever process accepts it
                    with httpx.Client(timeout=30) as client:
                        flags = client.post(f"{url}/flags?v=2", json={"token": "phc_x", "distinct_id": "u1"})
                        assert flags.status_code == 200 and FLAG_KEY in flags.json()["flags"], flags.text
                        event: dict[str, Any] = {"event": "clicked", "distinct_id": f"u{captured}"}
                        event["uuid"] = f"0190a0a0-0000-7000-8000-{captured:012d}"
                        capture = client.post(f"{url}/e", json={"api_key": "phc_x", **event})
                        assert capture.status_code == 200 and capture.json() == {"status": "Ok"}, capture.text
                        captured += 1
                        status = client.get(f"{url}/api/status", headers=ops)
                        assert status.status_code == 200, status.text
                by_process.clear()
                by_process.update({r["pid"]: r["events_received"] for r in status.json()["replicas"] if r["live"]})
                counted = status.json()["ingest"]["events_received"] == captured
                return counted and len(by_process) == 2 and all(by_process.values())

            wait_for(
                each_process_answered, "both processes to take captures, counted", 120, describe=lambda: by_process
            )
            assert set(by_process) == {process.pid, *_workers(process.pid)}
            forwarded = fake.recorded("/flags") + fake.recorded("/e")
            assert len(forwarded) == 2 * captured
            assert {request.headers.get("x-forwarded-for") for request in forwarded} == {"127.0.0.1"}
            assert httpx.get(f"{url}/api/status", timeout=10).status_code == 401  # the ops guard, wherever
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(120)
        assert process.returncode == 0, log.read_text()


def test_workers_stop_when_the_first_process_is_killed(tmp_path: Path) -> None:
    """``kill -9`` of the first process: its workers stop too, and the port is free for the next start."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(SRC), "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "data")}
    command = [sys.executable, "-m", "posthog_customerio", "serve", "--sandbox", "--port", str(port), "--workers", "3"]
    log = tmp_path / "serve.log"
    with open(log, "w") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_serving(f"http://127.0.0.1:{port}", process)
        wait_for(lambda: len(_workers(process.pid)) == 2, "two receiver workers", 60, describe=log.read_text)
        workers = _workers(process.pid)
        process.kill()
        process.wait(30)
        wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), "the workers to stop", 30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    with socket.socket() as sock:  # nothing listens on the port any more
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
