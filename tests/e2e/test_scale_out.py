"""Scaling out as docs/operations.md documents it: the steps of its "Scaling out" block run as a user types
them (a role and a database, the exports, each replica's command), against the test PostgreSQL and the
sandbox; and an unreachable database ends ``serve`` in seconds with one line naming it (no password)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from psycopg.conninfo import conninfo_to_dict

from posthog_customerio.cli.serve import unauthenticated_host
from posthog_customerio.config import load_settings
from posthog_customerio.sandbox import SandboxServer

from ..conftest import API_KEY, SITE_ID, TEST_POSTGRES_URL
from ..helpers import free_port, hog, sandbox_event_ids, unavailable, wait_for, wait_serving

pytestmark = pytest.mark.e2e

SCRIPT = Path(sys.executable).with_name("posthog-customerio")
README = Path(__file__).resolve().parents[2] / "docs" / "operations.md"  # "Scaling out" (moved from the README)


def test_an_unreachable_database_fails_fast_with_one_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://ops_user:s3cret-pw@127.0.0.1:{port}/posthog_customerio"
    env = {**os.environ, "OUTBOX_URL": url, "CUSTOMERIO_SITE_ID": "s", "CUSTOMERIO_API_KEY": "k"}
    env["POSTHOG_CUSTOMERIO_DATA_DIR"] = str(tmp_path / "data")
    started = time.monotonic()
    done = subprocess.run(
        [str(SCRIPT), "serve", "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=60
    )
    took = time.monotonic() - started
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"postgresql://ops_user@127.0.0.1:{port}/posthog_customerio" in lines[0]
    assert "s3cret-pw" not in done.stderr + done.stdout
    assert took < 12, f"took {took:.1f} s to give up"  # the pool alone used to retry for 15 s


def readme_block() -> list[str]:
    """The command lines of the "Scaling out" bash block in docs/operations.md (comments and blank lines left out)."""
    text = README.read_text()
    section = text[text.index("## Scaling out") :]
    block = section[section.index("```bash\n") + len("```bash\n") :]
    block = block[: block.index("```")]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def as_typed_here(line: str, name: str, host: str, port: int) -> str:
    """What a user of this machine types: our database server and names, the sandbox's credentials."""
    return (
        line.replace("@db.internal/", f"@{host}:{port}/")
        .replace("db.internal", host)
        .replace("posthog_customerio", name)
        .replace("your-site-id", SITE_ID)
        .replace("your-api-key", API_KEY)
        .replace("--host 0.0.0.0", "--host 127.0.0.1")  # tests bind loopback only (the tokens are checked below)
    )


@pytest.fixture
def database_name() -> Iterator[str]:
    """A role and database name of this test; both dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    name = f"pcio_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(TEST_POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        unavailable(f"PostgreSQL not reachable at {TEST_POSTGRES_URL} ({type(exc).__name__})")
    try:
        yield name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        admin.close()


def test_the_readme_scale_out_steps_work_as_typed(sandbox: SandboxServer, tmp_path: Path, database_name: str) -> None:
    info = conninfo_to_dict(TEST_POSTGRES_URL)
    host, port = str(info.get("host", "127.0.0.1")), int(info.get("port", 5432))
    lines = [as_typed_here(line, database_name, host, port) for line in readme_block()]
    setup = [line for line in lines if line.startswith("psql ")]
    exports = [line for line in lines if line.startswith("export ")]
    serves = [line for line in lines if line.startswith("posthog-customerio serve")]
    assert len(setup) == 2 and exports and len(serves) == 3, lines
    shell = {**os.environ, "PATH": f"{SCRIPT.parent}{os.pathsep}{os.environ['PATH']}", "PGPORT": str(port)}
    for line in setup:
        done = subprocess.run(["bash", "-c", line], env=shell, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (line, done.stderr)
    printed = subprocess.run(
        ["bash", "-c", "; ".join([*exports, "env -0"])], env=shell, capture_output=True, text=True, timeout=30
    )
    env = dict(item.split("=", 1) for item in printed.stdout.split("\0") if "=" in item)
    env["CUSTOMERIO_TRACK_URL"] = sandbox.url  # the sandbox stands in for Customer.io
    assert unauthenticated_host(load_settings({"webhook_token": env["WEBHOOK_TOKEN"]}), "0.0.0.0") is None

    processes: list[tuple[str, str, subprocess.Popen[bytes]]] = []
    try:
        for line in serves:
            free = free_port()
            typed = line.replace("--port 8080", f"--port {free}").replace("--port 8081", f"--port {free}")
            log = tmp_path / f"replica-{len(processes)}.log"
            with log.open("w") as output:  # a file, not a pipe nobody reads (a full pipe would block the replica)
                process = subprocess.Popen(
                    ["bash", "-c", f"exec {typed}"], env=env, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT
                )
            processes.append((typed, f"http://127.0.0.1:{free}", process))
        for index, (typed, url, process) in enumerate(processes):
            try:
                wait_serving(url, process)
            except AssertionError as exc:
                raise AssertionError(f"{typed}: {(tmp_path / f'replica-{index}.log').read_text()[-3000:]}") from exc
        receivers = [url for typed, url, _ in processes if "--role deliver" not in typed]
        auth = {"Authorization": f"Bearer {env['WEBHOOK_TOKEN']}"}
        events = [hog(f"scale-{n % 7}", "clicked", n) for n in range(60)]
        with httpx.Client(timeout=10) as client:
            for index, event in enumerate(events):
                answer = client.post(f"{receivers[index % len(receivers)]}/webhook", json=event, headers=auth)
                assert answer.status_code == 200, answer.text
        wait_for(lambda: len(sandbox_event_ids(sandbox)) >= len(events), "every event in Customer.io", 60)
        assert len(sandbox_event_ids(sandbox)) == len(set(sandbox_event_ids(sandbox))) == len(events)

        def summed() -> dict[str, Any] | None:  # `status` from any machine: every replica's counters, summed
            done = subprocess.run(
                [str(SCRIPT), "status", "--json"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, done.stderr
            report: dict[str, Any] = json.loads(done.stdout)
            return report if report["ingest"]["events_received"] == len(events) else None

        report = wait_for(summed, "status to sum the replicas' counters", 30)
        assert len([r for r in report["replicas"] if r["live"]]) == len(serves)
    finally:
        for _, _, process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, _, process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
