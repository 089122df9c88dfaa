"""The operator's view (issue 16): /healthz that tells the truth, exits that say why, counters that agree."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from posthog_customerio.cli.render import delivering_progress, status_text
from posthog_customerio.config import ConfigError, load_settings
from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.service import create_app
from posthog_customerio.service.health import DeliveryWatch
from posthog_customerio.sources.files import FileProgress, send_file
from posthog_customerio.sources.kafka import RepeatThrottle

from ..conftest import API_KEY, SAMPLE_FILE, SITE_ID, Cli, write_jsonl
from ..helpers import HangingServer, free_port, make_runtime, make_settings, wait_for
from ..integration.test_delivery import events_for
from ..service import running_service
from .test_service_process import SCRIPT, post_all, service, webhook_events


def _health(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/healthz", timeout=10).json()


# -- /healthz ---------------------------------------------------------------------------------------
def test_healthz_clears_the_credentials_error_once_delivery_succeeds(sandbox: SandboxServer, tmp_path: Path) -> None:
    sandbox.state.add_fault(status=401, count=1)  # the first request is refused, the re-check passes
    runtime = make_runtime(sandbox, tmp_path / "data", auth_retry_s=0.2, anonymous_hold_s=0)
    with running_service(runtime) as url:
        runtime.ingestor.ingest(events_for(3, 2))
        runtime.current_deliverer.notify()  # type: ignore[union-attr]
        wait_for(lambda: runtime.outbox.depth() == 0, "the outbox to drain", timeout=30)
        wait_for(lambda: _health(url)["delivery"] == "running", "delivery to run again", timeout=30)
        health = _health(url)
    assert health["customerio"]["credentials"] == "ok"
    assert health["customerio"]["last_error"] is None
    assert health["customerio"]["last_error_at"] is not None  # when it was (aged, not forgotten)


def test_healthz_reports_retrying_during_a_retry_after_zero_storm(sandbox: SandboxServer, tmp_path: Path) -> None:
    """429 with Retry-After: 0 keeps the limiter free ("running" before): nothing settles, so it is retrying."""
    sandbox.state.add_fault(status=429, duration_s=600, retry_after=0)
    runtime = make_runtime(sandbox, tmp_path / "data", customerio_timeout_s=1, anonymous_hold_s=0)
    with running_service(runtime) as url:
        runtime.ingestor.ingest(events_for(3, 2))
        runtime.current_deliverer.notify()  # type: ignore[union-attr]
        wait_for(lambda: _health(url)["delivery"] == "retrying", "/healthz to say retrying", timeout=30)
        health = _health(url)
        assert health["delivery_settled_age_s"] >= 1.0
        assert health["customerio"]["last_error"] == "HTTP 429"
        sandbox.state.clear_faults()
        wait_for(lambda: runtime.outbox.depth() == 0, "the outbox to drain", timeout=30)
        wait_for(lambda: _health(url)["delivery"] == "running", "/healthz to say running again", timeout=30)
        assert _health(url)["customerio"]["last_error"] is None


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _deliverer(state: str = "running", delivered: int = 0, requests: int = 0) -> Any:
    return SimpleNamespace(state=state, stats=SimpleNamespace(delivered=delivered, requests=requests))


def test_delivery_watch_says_stalled_when_queued_work_waits_and_no_request_ends() -> None:
    clock = _Clock()
    watch = DeliveryWatch(stall_s=10, clock=clock)
    deliverer = _deliverer(delivered=5, requests=3)
    assert watch.state(deliverer, dead_lettered=0, oldest_age_s=0) == ("running", 0.0)
    clock.now += 11
    # a hung Customer.io: no request ends, nothing settles, the oldest operation waits
    assert watch.state(deliverer, dead_lettered=0, oldest_age_s=11) == ("stalled", 11.0)
    deliverer.stats.requests = 9  # answers come back, nothing settles: retrying
    assert watch.state(deliverer, dead_lettered=0, oldest_age_s=12)[0] == "retrying"
    deliverer.stats.delivered = 6  # one settled: running again
    assert watch.state(deliverer, dead_lettered=0, oldest_age_s=12) == ("running", 0.0)


def test_delivery_watch_is_running_when_idle_or_the_queue_is_young() -> None:
    clock = _Clock()
    watch = DeliveryWatch(stall_s=10, clock=clock)
    deliverer = _deliverer()
    watch.state(deliverer, dead_lettered=0, oldest_age_s=0)
    clock.now += 100
    assert watch.state(deliverer, dead_lettered=0, oldest_age_s=0)[0] == "running"  # nothing queued
    assert watch.state(deliverer, dead_lettered=0, oldest_age_s=3)[0] == "running"  # just queued
    assert watch.state(deliverer, dead_lettered=1, oldest_age_s=30)[0] == "running"  # a dead letter settles
    assert watch.state(_deliverer("paused"), dead_lettered=1, oldest_age_s=300)[0] == "paused"


# -- SIGTERM within the grace -------------------------------------------------------------------------
def test_sigterm_exits_within_the_grace_while_customerio_hangs(tmp_path: Path) -> None:
    grace = 3.0
    with HangingServer() as hung:
        env = {
            "CUSTOMERIO_SITE_ID": SITE_ID,
            "CUSTOMERIO_API_KEY": API_KEY,
            "CUSTOMERIO_TRACK_URL": hung.url,
            "CUSTOMERIO_TIMEOUT_S": "120",
            "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "data"),
            "SHUTDOWN_GRACE_S": str(grace),
            "SQLITE_SYNCHRONOUS": "NORMAL",
            "ANONYMOUS_HOLD_S": "0",
        }
        with service(env) as (url, process):
            post_all(url, webhook_events(20))
            wait_for(lambda: hung.received >= 1, "a request to the hung Customer.io", timeout=30)
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            process.wait(60)
            elapsed = time.monotonic() - started
            output = process.stdout.read() if process.stdout else ""
    assert process.returncode == 0, output
    assert elapsed < grace + 2.0, f"took {elapsed:.1f}s with SHUTDOWN_GRACE_S={grace}"
    assert "operations kept for the next start" in output


# -- a malformed Customer.io URL --------------------------------------------------------------------
BAD_URLS = ["htp:/x", "http://", "not a url", "http://[::1", "https://host:99999", "http://exa mple.com", "http://:80"]


@pytest.mark.parametrize("value", BAD_URLS)
@pytest.mark.parametrize("variable", ["CUSTOMERIO_TRACK_URL", "CUSTOMERIO_PIPELINES_URL"])
def test_a_malformed_customerio_url_is_a_configuration_error(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({variable.lower(): value})
    assert str(caught.value).startswith(f"{variable}:")


@pytest.mark.parametrize("value", ["http://", "http://[::1"])
def test_send_with_a_malformed_track_url_exits_2_in_one_line(cli: Cli, tmp_path: Path, value: str) -> None:
    events = write_jsonl(tmp_path / "events.jsonl", [{"event": "x", "distinct_id": "a", "properties": {}}])
    env = {"CUSTOMERIO_SITE_ID": SITE_ID, "CUSTOMERIO_API_KEY": API_KEY, "CUSTOMERIO_TRACK_URL": value}
    result = cli("send", str(events), "--data-dir", str(tmp_path / "data"), env=env)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "CUSTOMERIO_TRACK_URL" in result.stderr and "Traceback" not in result.output


def test_serve_with_a_malformed_track_url_exits_2_in_one_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CUSTOMERIO_SITE_ID": SITE_ID,
        "CUSTOMERIO_API_KEY": API_KEY,
        "CUSTOMERIO_TRACK_URL": "http://[::1",
        "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "data"),
    }
    done = subprocess.run(
        [str(SCRIPT), "serve", "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().startswith("error: CUSTOMERIO_TRACK_URL:") and len(done.stderr.strip().splitlines()) == 1


# -- a pre-created data dir -------------------------------------------------------------------------
def test_a_pre_created_empty_data_dir_is_private_from_the_first_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)  # as `mkdir` or a volume mount leaves it
    previous = os.umask(0o022)
    try:
        with Runtime(load_settings({"posthog_customerio_data_dir": data}), sandbox=True):
            assert stat.S_IMODE(data.stat().st_mode) == 0o700
    finally:
        os.umask(previous)


def test_a_data_dir_holding_other_files_keeps_its_mode(tmp_path: Path) -> None:
    """Not ours (e.g. ``--data-dir .``): only our files in it are made private."""
    data = tmp_path / "project"
    data.mkdir()
    (data / "notes.txt").write_text("someone else's")
    os.chmod(data, 0o755)
    with Runtime(load_settings({"posthog_customerio_data_dir": data}), sandbox=True) as runtime:
        assert stat.S_IMODE(data.stat().st_mode) == 0o755
        assert stat.S_IMODE(runtime.settings.database_path.stat().st_mode) == 0o600


# -- memory of a wide event -------------------------------------------------------------------------
SEMANTICS = Path(__file__).resolve().parents[2] / "docs" / "semantics.md"  # "Wide events" (was the README's)


def _readme_wide_send_bound_mb() -> int:
    """The documented bound (docs/semantics.md) for ``send`` of one event with 200,000 ``$set`` attributes."""
    text = " ".join(SEMANTICS.read_text().split())
    found = re.search(r"200,000 `\$set` attributes .*? peaks at about \d+ MB RSS, under (\d+) MB", text)
    assert found, "docs/semantics.md states no memory bound for a 200,000-attribute event"
    return int(found.group(1))


@pytest.mark.reliability
def test_send_of_200k_set_attributes_stays_under_the_readme_bound(env: dict[str, str], tmp_path: Path) -> None:
    """Issue 16.8: measured as the process's own peak (ru_maxrss of a fresh child), the sandbox elsewhere."""
    wide = {
        "event": "$identify",
        "distinct_id": "wide",
        "properties": {"$set": {f"attr_{i}": f"value {i}" for i in range(200_000)}},
    }
    events = write_jsonl(tmp_path / "wide.jsonl", [wide])
    measure = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", measure, str(SCRIPT), "send", "--json", str(events)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    code, peak_kb = (int(word) for word in done.stdout.split())
    assert code == 0, done.stderr
    assert peak_kb / 1024 < _readme_wide_send_bound_mb(), f"peak RSS {peak_kb / 1024:.0f} MB"


# -- counters that agree ----------------------------------------------------------------------------
def test_send_counts_settled_operations_and_names_failed_requests(
    cli: Cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path
) -> None:
    sandbox.state.add_fault(status=500, count=2)
    events = write_jsonl(
        tmp_path / "e.jsonl", [{"event": "x", "distinct_id": f"p{n}", "properties": {}} for n in range(5)]
    )
    text = cli("send", str(events), env=env)
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    enqueued = next(line for line in lines if line.startswith("operations ")).split()[1]
    sent = next(line for line in lines if line.startswith("operations sent"))
    assert sandbox.state.stats()["requests_by_status"] == {"500": 2, "200": 1}
    # every operation went out once settled; the two failed requests each carried all of them
    assert sent == f"operations sent    {enqueued} in 3 requests (2 failed; {2 * int(enqueued)} operation retries)"


def test_sandbox_people_count_is_the_same_in_text_and_json(cli: Cli) -> None:
    text = cli("send", "--sandbox", str(SAMPLE_FILE)).stdout
    box = json.loads(cli("send", "--sandbox", "--json", str(SAMPLE_FILE)).stdout)["sandbox"]
    line = next(line for line in text.splitlines() if line.startswith("sandbox "))
    assert f" {box['people']} people identified, {box['visitors_never_identified']} visitors never identified" in line


def test_status_received_counts_like_send_events_read() -> None:
    """send says "events read N (M invalid)" with the invalid ones in N: status's "received" does the same."""
    report: dict[str, Any] = {
        "outbox": {"depth": 0, "oldest_age_s": 0.0, "dead_letters": 0},
        "persons": 1,
        "delivery": {"state": "running", "delivered": 1, "requests": 1},
        "ingest": {"events_received": 997, "events_invalid": 3},
        "service": {"snapshot_age_s": 1.0},
        "dead_letters": [],
    }
    assert "received           1000 events (3 invalid)" in status_text(report).splitlines()


def test_the_delivering_percentage_never_goes_backwards(env: dict[str, str], tmp_path: Path) -> None:
    """Operations are added while reading: a percentage of a growing total went back (50 % -> 33 %)."""
    events = [{"event": "x", "distinct_id": f"p{n % 7}", "properties": {}} for n in range(120)]
    seen: list[FileProgress] = []
    runtime = Runtime(load_settings({name.lower(): value for name, value in env.items()}))

    def on_progress(where: FileProgress) -> None:
        seen.append(where)
        if len(seen) == 5:  # let delivery catch up while reading: what was queued so far is all delivered
            stats = runtime.current_deliverer.stats  # type: ignore[union-attr]
            wait_for(lambda: stats.delivered >= where.operations, "delivery to catch up", timeout=30)
            seen.append(FileProgress(where.read, where.events, where.operations, stats.delivered))

    with runtime, open(write_jsonl(tmp_path / "e.jsonl", events)) as lines:
        send_file(runtime, lines, chunk_events=3, on_progress=on_progress)
    percentages = []
    for where in seen:
        total, completed = delivering_progress(where)
        if total:
            percentages.append(completed / total)
    assert percentages and percentages[-1] == 1.0
    assert percentages == sorted(percentages)


# -- Ctrl-C during send -----------------------------------------------------------------------------
def test_ctrl_c_during_send_says_what_stays_queued_and_how_to_continue(tmp_path: Path) -> None:
    events = write_jsonl(
        tmp_path / "e.jsonl", [{"event": "x", "distinct_id": f"p{n}", "properties": {}} for n in range(3)]
    )
    data = tmp_path / "data"
    with HangingServer() as hung:
        env = {
            **os.environ,
            "CUSTOMERIO_SITE_ID": SITE_ID,
            "CUSTOMERIO_API_KEY": API_KEY,
            "CUSTOMERIO_TRACK_URL": hung.url,
            "CUSTOMERIO_TIMEOUT_S": "120",
            "SQLITE_SYNCHRONOUS": "NORMAL",
        }
        process = subprocess.Popen(
            [str(SCRIPT), "send", "--data-dir", str(data), str(events)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(lambda: hung.received >= 1, "a request to the hung Customer.io", timeout=60)
            started = time.monotonic()
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=60)
            elapsed = time.monotonic() - started
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 130, err
    assert elapsed < 5.0, err
    assert "Traceback" not in err
    assert "6 operations stay queued" in err
    assert f"posthog-customerio send --data-dir {data} {events}" in err


# -- serve on a busy port ---------------------------------------------------------------------------
def test_serve_on_a_busy_port_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run(
            [str(SCRIPT), "serve", "--sandbox", "--port", str(port), "--data-dir", str(tmp_path / "data")],
            env=os.environ,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done.stderr
    assert done.stderr == f"error: cannot listen on 127.0.0.1:{port}: the port is already in use\n"
    assert done.stdout == ""


# -- serve --sandbox and status ---------------------------------------------------------------------
def test_serve_sandbox_logs_its_url_and_data_dir_and_status_reads_it(cli: Cli, tmp_path: Path) -> None:
    with service({"LOG_FORMAT": "text"}, "--sandbox") as (url, process):
        assert process.stdout is not None
        line = ""
        while "sandbox Customer.io at" not in line:  # logged before it serves: already there
            line = process.stdout.readline()
            assert line, "serve --sandbox did not log its sandbox URL"
        found = re.search(r"sandbox Customer.io at (http://127\.0\.0\.1:\d+)/_sandbox/people; data dir (\S+) ", line)
        assert found, line
        assert httpx.get(f"{found.group(1)}/_sandbox/people").status_code == 200
        post_all(url, webhook_events(3))
        status = cli("status", "--data-dir", found.group(2))
        assert status.exit_code == 0, status.output
        assert "people known" in status.stdout
    nowhere = cli("status", "--data-dir", str(tmp_path / "nothing"))
    assert nowhere.exit_code == 1
    assert "--sandbox" in nowhere.stderr and nowhere.stderr.count("\n") == 1


# -- 404s -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/nope", 404), ("POST", "/healthz", 405)])
def test_serve_answers_unknown_paths_with_an_error_object(
    sandbox: SandboxServer, tmp_path: Path, method: str, path: str, status: int
) -> None:
    runtime = make_runtime(sandbox, tmp_path / "data")
    with runtime, TestClient(create_app(runtime, deliver=False)) as client:
        answer = client.request(method, path)
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/json"
    assert set(answer.json()) == {"error"} and answer.json()["error"]


def test_the_sandbox_answers_unknown_paths_with_an_error_object(sandbox: SandboxServer) -> None:
    answer = httpx.get(f"{sandbox.url}/nope")
    assert answer.status_code == 404
    assert answer.json() == {"error": "not found: /nope"}


# -- consume against a dead broker ------------------------------------------------------------------
def test_consume_against_a_dead_broker_logs_a_few_lines_not_a_stream(tmp_path: Path) -> None:
    """Issue 16: 19 lines a second. Over ~5 s of a refused connection, each kind of failure is logged once."""
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    process = subprocess.Popen(
        [str(SCRIPT), "consume", "--sandbox", "--kafka-bootstrap", dead, "--topic", "t", "--log-format", "text"],
        env={**os.environ, "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "data")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[tuple[float, str]] = []

    def collect() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append((time.monotonic(), line.rstrip()))

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("kafka" in line and "consuming" not in line for _, line in lines), "a failure", 60)
        first = next(at for at, line in lines if "kafka" in line and "consuming" not in line)
        wait_for(lambda: time.monotonic() > first + 5.0, "five seconds of a dead broker", 30)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        reader.join(10)
    window = [line for at, line in lines if first <= at <= first + 5.0]
    assert len(window) <= 6, "\n".join(window)


def test_repeat_throttle_logs_once_per_interval_and_counts_what_it_held_back() -> None:
    clock = _Clock()
    throttle = RepeatThrottle(interval_s=30, clock=clock)

    def line(port: int) -> logging.LogRecord:
        message = "Connect to 127.0.0.1:%d failed: Connection refused"
        return logging.LogRecord("kafka", logging.ERROR, __file__, 1, message, (port,), None)

    assert throttle.filter(line(9092))
    assert not any(throttle.filter(line(9092 + n)) for n in range(19))  # the same failure, other numbers
    other = logging.LogRecord("kafka", logging.ERROR, __file__, 1, "all brokers are down", (), None)
    assert throttle.filter(other)  # another kind of failure is shown
    clock.now += 30
    record = line(9092)
    assert throttle.filter(record)
    assert record.getMessage().endswith("(19 more like it in the last 30 s)")


# -- an empty input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_send_of_an_empty_file_warns_and_exits_0(cli: Cli, env: dict[str, str], tmp_path: Path, content: str) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text(content)
    result = cli("send", str(empty), env=env)
    assert result.exit_code == 0, result.output
    assert f"warning: no events in {empty}" in result.stderr


# -- delete-person --sandbox ------------------------------------------------------------------------
def test_delete_person_sandbox_deletes_in_the_in_process_sandbox(cli: Cli, tmp_path: Path) -> None:
    """Like ``send --sandbox``: no credentials, an in-process Customer.io; with a data dir it uses what it knows."""
    data = str(tmp_path / "data")
    events = write_jsonl(
        tmp_path / "e.jsonl", [{"event": "$identify", "distinct_id": "u1", "properties": {"$set": {"email": "a@b.c"}}}]
    )
    assert cli("send", "--sandbox", "--data-dir", data, str(events)).exit_code == 0
    result = cli("delete-person", "u1", "--sandbox", "--data-dir", data)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "u1: deleted in Customer.io (sent delete by id u1, email a@b.c)"
    throwaway = cli("delete-person", "u2", "--sandbox")  # no data dir: a throwaway one, as send --sandbox
    assert throwaway.exit_code == 0, throwaway.output
    assert "u2: deleted in Customer.io" in throwaway.stdout


def test_healthz_is_not_running_while_customerio_hangs(tmp_path: Path) -> None:
    with HangingServer() as hung:
        settings = {
            "customerio_track_url": hung.url,
            "customerio_timeout_s": 1,
            "anonymous_hold_s": 0,
            "shutdown_grace_s": 0,
        }
        runtime = Runtime(make_settings(tmp_path / "data", **settings))
        with running_service(runtime) as url:
            runtime.ingestor.ingest(events_for(2, 1))
            runtime.current_deliverer.notify()  # type: ignore[union-attr]

            # "stalled" may show while the first request still hangs (before its timeout names an error):
            # wait for the view that has both, the state and the error, in one answer
            def reported() -> bool:
                health = _health(url)
                error = health["customerio"]["last_error"] or ""
                return health["delivery"] in ("retrying", "stalled") and error.startswith("unreachable")

            wait_for(reported, "/healthz to report a stalled delivery and an unreachable Customer.io", timeout=30)
