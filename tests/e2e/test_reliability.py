"""Reliability: ``serve`` as a real process under kill -9, outages, revoked keys, a full disk.

Run alone with ``pytest -m reliability``. Each test is bounded (well under a minute) and
talks only to 127.0.0.1. The event streams come from the bundled generator
(:mod:`posthog_customerio.samples`); what Customer.io must end up with is computed by
the product's own pure mapping over the same stream in one clean pass (the oracle),
and checked against the sandbox by dedupe id.

Randomness (kill moments) is seeded; set ``RELIABILITY_SEED`` to replay a run. The
seed is printed in every assertion message.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from posthog_customerio.config import Settings
from posthog_customerio.mapping import iso_datetime_seconds, map_event
from posthog_customerio.samples import iter_stream
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources import parse_payload, to_unix_seconds
from posthog_customerio.state import PersonState

from .. import helpers
from ..conftest import API_KEY, SITE_ID
from ..helpers import free_port, sandbox_event_ids, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]

SCRIPT = Path(sys.executable).with_name("posthog-customerio")
SEED = int(os.environ.get("RELIABILITY_SEED", str(time.time_ns() % 1_000_000)))
EVENT_ACTIONS = ("event", "page", "screen")


# -- helpers ------------------------------------------------------------------------------------
def _seed() -> str:
    """Ends every timeout message: the seed reproduces the run."""
    return f"seed {SEED}"


class Serve:
    """``posthog-customerio serve`` as a subprocess, logging to a file; restartable on its port."""

    def __init__(self, env: dict[str, str], log_path: Path, preexec: Callable[[], None] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.preexec = preexec
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 30.0) -> Serve:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(SCRIPT), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self.preexec,
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"serve did not start (seed {SEED}):\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def kill9(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int | None:
        """SIGTERM (graceful); the exit code."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)

    def get(self, path: str) -> httpx.Response:
        token = self.env.get("OPS_TOKEN") or self.env.get("WEBHOOK_TOKEN")  # opens /status and /api/*
        return httpx.get(self.url + path, timeout=10, headers={"Authorization": f"Bearer {token}"} if token else None)

    def status(self) -> dict[str, Any]:
        return self.get("/api/status").json()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def serving(env: dict[str, str], log_path: Path, **kwargs: Any) -> Iterator[Serve]:
    service = Serve(env, log_path, **kwargs).start()
    try:
        yield service
    finally:
        service.stop()


def webhook_bodies(count: int, people: int, seed: int) -> list[dict[str, Any]]:
    """``count`` realistic webhook bodies (anonymous browsing, identify, $set, ...)."""
    stream = iter_stream(people, seed=seed, events_per_person=max(1, -(-count // people) + 2), shape="webhook")
    bodies = list(itertools.islice(stream, count))
    assert len(bodies) == count
    return bodies


def batches(bodies: Sequence[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [list(bodies[i : i + size]) for i in range(0, len(bodies), size)]


class Oracle:
    """What a clean run must deliver: the product's pure mapping over the stream, once."""

    def __init__(self, bodies: Sequence[dict[str, Any]], config: Any = None) -> None:
        config = config or Settings().mapping_config()
        states: dict[str, PersonState] = {}
        self.event_ids: set[str] = set()
        self.events = 0
        for body in bodies:
            for event in parse_payload(body):
                self.events += 1
                mapped = map_event(event, states, config)
                states.update(mapped.states)
                for operation in mapped.operations:
                    if operation.payload.get("action") in EVENT_ACTIONS and "id" in operation.payload:
                        self.event_ids.add(operation.payload["id"].upper())
        # the last person properties PostHog had for each identified distinct_id
        self.people: dict[str, dict[str, Any]] = {}
        for body in bodies:
            person = body.get("person")
            if person and person.get("properties"):
                self.people[body["event"]["distinct_id"]] = person["properties"]


def assert_exactly_once(sandbox: SandboxServer, oracle: Oracle) -> None:
    helpers.assert_exactly_once(sandbox, oracle.event_ids, f"seed {SEED}")


def assert_last_attributes(sandbox: SandboxServer, oracle: Oracle) -> int:
    """Every identified person holds the last value PostHog had for each property."""
    checked = 0
    for distinct_id, properties in oracle.people.items():
        person = sandbox.state.person(distinct_id)
        assert person is not None, f"person {distinct_id!r} is missing (seed {SEED})"
        attributes = person["attributes"]
        for key, value in properties.items():
            if value is None or key.startswith("$"):
                continue
            expected = to_unix_seconds(value) if key == "created_at" else value  # integer seconds
            if isinstance(value, str) and iso_datetime_seconds(value) is not None:  # CONVERT_DATES=true
                expected = iso_datetime_seconds(value)
            if key == "email":
                assert (person["email"] or "").lower() == value.lower(), (distinct_id, person["email"], value, SEED)
                continue
            assert attributes.get(key) == expected, (
                f"{distinct_id}.{key}: Customer.io has {attributes.get(key)!r}, PostHog's last value is"
                f" {expected!r} (seed {SEED})"
            )
            checked += 1
    return checked


class Poster(threading.Thread):
    """Posts batches in order, each until it gets 200 (as PostHog retries on errors and 5xx)."""

    def __init__(
        self,
        url: str,
        posts: Sequence[Any],
        deadline_s: float,
        headers: dict[str, str] | None = None,
        pause_s: float = 0.0,
    ) -> None:
        super().__init__(daemon=True, name="poster")
        self.url, self.posts, self.headers, self.pause_s = url, posts, headers or {}, pause_s
        self.deadline = time.monotonic() + deadline_s
        self.statuses: dict[int, int] = {}
        self.connection_errors = 0
        self.done = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(timeout=10) as client:
                for post in self.posts:
                    body = json.dumps(post).encode()
                    while True:
                        assert time.monotonic() < self.deadline, "poster ran out of time"
                        try:
                            answer = client.post(
                                self.url, content=body, headers={"Content-Type": "application/json", **self.headers}
                            )
                        except httpx.HTTPError:
                            self.connection_errors += 1
                            time.sleep(0.05)
                            continue
                        self.statuses[answer.status_code] = self.statuses.get(answer.status_code, 0) + 1
                        if answer.status_code == 200:
                            break
                        assert answer.status_code == 503, f"unexpected {answer.status_code}: {answer.text[:300]}"
                        time.sleep(0.05)
                    self.done += 1
                    if self.pause_s:
                        time.sleep(self.pause_s)
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self, timeout: float) -> None:
        self.join(timeout)
        assert not self.is_alive(), f"poster did not finish ({self.done}/{len(self.posts)} posts, seed {SEED})"
        if self.error is not None:
            raise AssertionError(f"poster failed (seed {SEED}): {self.error!r}") from self.error


def outbox_empty(service: Serve) -> bool:
    with contextlib.suppress(httpx.HTTPError, ValueError):
        outbox = service.status()["outbox"]
        return outbox["depth"] == 0 and outbox["in_flight"] == 0
    return False


@pytest.fixture
def base_env(sandbox: SandboxServer, tmp_path: Path) -> dict[str, str]:
    return {
        "CUSTOMERIO_SITE_ID": SITE_ID,
        "CUSTOMERIO_API_KEY": API_KEY,
        "CUSTOMERIO_TRACK_URL": sandbox.url,
        "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "data"),
        "LOG_FORMAT": "json",
        "SHUTDOWN_GRACE_S": "1",
        "SQLITE_SYNCHRONOUS": "NORMAL",
        "CUSTOMERIO_MAX_RPS": "1000",
    }


# -- crash safety ---------------------------------------------------------------------------------
@pytest.mark.timeout(300)  # its own deadlines (posting 100 s, draining 90 s, six restarts) outlast the default 120 s
def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
    sandbox: SandboxServer, base_env: dict[str, str], tmp_path: Path
) -> None:
    """20,000 events streamed while serve is kill -9'd at random moments and restarted."""
    rng = random.Random(SEED)
    bodies = webhook_bodies(20_000, people=900, seed=SEED % 1000)
    oracle = Oracle(bodies)
    assert len(oracle.event_ids) >= 0.95 * len(bodies)
    service = Serve(base_env, tmp_path / "serve.log").start()
    try:
        poster = Poster(f"{service.url}/webhook", batches(bodies, 100), deadline_s=100, pause_s=0.04)
        poster.start()
        kills = 0
        while kills < 5:  # kill -9 while events stream in (and are delivered)
            time.sleep(rng.uniform(0.3, 2.0))
            service.kill9()
            kills += 1
            service.start()
        poster.finish(timeout=100)
        time.sleep(rng.uniform(0.0, 0.5))  # and once more while only delivery runs
        service.kill9()
        kills += 1
        service.start()
        wait_for(lambda: outbox_empty(service), "the outbox to drain", 90, describe=_seed)
        status = service.status()
    finally:
        service.stop()
    print(
        f"kill -9: {kills} kills, {service.starts} starts, {poster.connection_errors} failed POSTs retried,"
        f" {len(oracle.event_ids)} events expected, replays absorbed by the dedupe id:"
        f" {sandbox.state.stats()['duplicates']}"
    )
    assert status["outbox"]["dead_letters"] == 0, status["dead_letters"]
    assert_exactly_once(sandbox, oracle)
    assert assert_last_attributes(sandbox, oracle) > 100
    assert kills == 6 and poster.connection_errors > 0  # the kills did hit requests in flight


# -- Customer.io outage ---------------------------------------------------------------------------
def test_outage_500s_for_10s_then_429s_with_retry_after_2_for_5s(
    sandbox: SandboxServer, base_env: dict[str, str], tmp_path: Path
) -> None:
    everything = webhook_bodies(3_300, people=150, seed=SEED % 1000 + 1)
    bodies, extra = everything[:3_000], everything[3_000:]
    oracle = Oracle(everything)
    with serving(base_env, tmp_path / "serve.log") as service:
        # Each phase lasts its time *and* until the service has met it at least once (a slow
        # start on a loaded machine must not let a phase pass unseen): faults are cleared, not timed.
        def answered(code: int) -> int:
            return sandbox.state.stats()["requests_by_status"].get(str(code), 0)

        outage_start = time.time()
        sandbox.state.add_fault(status=500, duration_s=3600)
        poster = Poster(f"{service.url}/webhook", batches(bodies, 50), deadline_s=40, pause_s=0.1)
        poster.start()
        wait_for(lambda: answered(500) >= 1 and time.time() >= outage_start + 10, "the 500 phase", 60, describe=_seed)
        throttled_start = time.time()
        sandbox.state.clear_faults()
        sandbox.state.add_fault(status=429, duration_s=3600, retry_after=2)
        wait_for(lambda: answered(429) >= 1 and time.time() >= throttled_start + 5, "the 429 phase", 60, describe=_seed)
        sandbox.state.clear_faults()
        recovered = time.time()
        poster.finish(timeout=40)
        wait_for(lambda: outbox_empty(service), "delivery after the outage", 45, describe=_seed)
        delivered = time.time()
        # Backoff may have slept through the whole 429 phase; make sure Retry-After is
        # exercised: three more 429s with Retry-After: 2 while new events arrive
        sandbox.state.add_fault(status=429, count=3, retry_after=2)
        Poster(f"{service.url}/webhook", batches(extra, 50), deadline_s=20).run()
        wait_for(lambda: outbox_empty(service), "delivery after the 429s", 30, describe=_seed)
        status = service.status()
    requests = [r for r in sandbox.state.requests() if r["path"].startswith("/api/") and "region" not in r["path"]]
    during = [r for r in requests if r["time"] < recovered]
    by_status = {code: sum(1 for r in during if r["status"] == code) for code in (500, 429)}
    print(
        f"outage: {len(during)} requests during the 15 s ({by_status}), delivered"
        f" {delivered - recovered:.1f}s after recovery; retry gaps (s):",
        [round(b["time"] - a["time"], 2) for a, b in itertools.pairwise(during) if b["time"] - a["time"] > 0.2],
    )
    # nothing lost, nothing twice, nothing dead-lettered
    assert status["outbox"]["dead_letters"] == 0
    assert_exactly_once(sandbox, oracle)
    assert by_status[500] >= 1, by_status
    assert sum(1 for r in requests if r["status"] == 429) >= 3
    # Retry-After respected: after a 429 nobody sends until 2 s have passed (requests that
    # were already in flight when the 429 was answered -- within 100 ms -- are not retries)
    for answer in (r for r in requests if r["status"] == 429):
        early = [r for r in requests if answer["time"] + 0.1 < r["time"] < answer["time"] + 2.0 - 0.02]
        assert not early, (
            f"{len(early)} requests {early[0]['time'] - answer['time']:.3f}s after a 429 with"
            f" Retry-After: 2 (seed {SEED})"
        )
    # retries bounded: backoff, not a retry storm (15 s of outage, 4 workers)
    outage_s = recovered - outage_start  # 15 s, longer only if a phase had to wait for its first request
    assert len(during) <= 4 * max(15.0, outage_s), (
        f"{len(during)} requests during the {outage_s:.0f} s outage: {by_status}"
    )
    # and delivery resumed promptly once Customer.io recovered
    assert delivered - recovered < 40, f"took {delivered - recovered:.1f}s after recovery to deliver"


# -- credentials revoked ----------------------------------------------------------------------------
def test_revoked_credentials_pause_delivery_keep_everything_and_resume(
    sandbox: SandboxServer, base_env: dict[str, str], tmp_path: Path
) -> None:
    bodies = webhook_bodies(2_000, people=100, seed=SEED % 1000 + 2)
    oracle = Oracle(bodies)
    first, second = batches(bodies[:1_000], 50), batches(bodies[1_000:], 50)
    with serving({**base_env, "AUTH_RETRY_S": "1"}, tmp_path / "serve.log") as service:
        Poster(f"{service.url}/webhook", first, deadline_s=30).run()
        wait_for(lambda: len(sandbox_event_ids(sandbox)) > 0, "some events delivered", 20, describe=_seed)
        sandbox.state.set_credentials(SITE_ID, "revoked-key")  # the key is revoked mid-run
        poster = Poster(f"{service.url}/webhook", second, deadline_s=30)
        poster.run()  # ingestion goes on: every POST answered 200
        assert poster.statuses == {200: len(second)}
        wait_for(
            lambda: service.get("/healthz").json()["delivery"] == "paused", "delivery to pause", 20, describe=_seed
        )
        delivered_while_paused = len(sandbox_event_ids(sandbox))
        revoked_for = time.monotonic()
        checks = sum(1 for r in sandbox.state.requests() if r["status"] == 401)
        wait_for(  # a few credential re-checks while revoked
            lambda: sum(1 for r in sandbox.state.requests() if r["status"] == 401) >= checks + 2,
            "two credential re-checks while revoked",
            20,
            describe=_seed,
        )
        assert len(sandbox_event_ids(sandbox)) == delivered_while_paused
        paused = service.status()
        assert paused["outbox"]["depth"] > 0 and paused["outbox"]["dead_letters"] == 0
        # still ready: accepting events while Customer.io refuses them is the job; /healthz tells
        assert service.get("/readyz").status_code == 200
        assert service.get("/healthz").json()["customerio"]["credentials"] == "rejected"
        revoked_for = time.monotonic() - revoked_for + 3
        unauthorized = sum(1 for r in sandbox.state.requests() if r["status"] == 401)
        # bounded: the requests in flight, then one credential check per worker per AUTH_RETRY_S
        assert unauthorized <= 4 + 4 * (revoked_for / 1 + 1), f"{unauthorized} rejected requests in {revoked_for:.0f}s"
        sandbox.state.set_credentials(SITE_ID, API_KEY)  # accepted again
        wait_for(lambda: outbox_empty(service), "delivery to resume and drain", 30, describe=_seed)
        assert service.get("/healthz").json()["delivery"] == "running"
        assert service.status()["outbox"]["dead_letters"] == 0
    assert_exactly_once(sandbox, oracle)


# -- disk full ---------------------------------------------------------------------------------------
def _file_size_limit(limit_bytes: int) -> Callable[[], None]:
    """preexec_fn: regular files may not grow past ``limit_bytes`` (writes fail with EFBIG)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.RLIM_INFINITY))

    return apply


def test_disk_full_answers_503_and_never_200_for_events_it_did_not_store(
    sandbox: SandboxServer, base_env: dict[str, str], tmp_path: Path
) -> None:
    """The outbox's file system fills up (RLIMIT_FSIZE: files cannot grow past 1.5 MB).

    Every request is answered 200 only if its events were stored: after a restart with
    room again, every event of every 200-answered request reaches Customer.io.
    """
    sandbox.state.add_fault(status=503, duration_s=300)  # Customer.io down: the outbox only grows
    bodies = webhook_bodies(6_000, people=300, seed=SEED % 1000 + 3)
    posts = batches(bodies, 20)
    accepted: list[list[dict[str, Any]]] = []
    refused: list[list[dict[str, Any]]] = []
    statuses: dict[int, int] = {}
    service = Serve(base_env, tmp_path / "serve.log", preexec=_file_size_limit(1_500_000)).start()
    try:
        with httpx.Client(timeout=10) as client:
            for post in posts:
                answer = client.post(f"{service.url}/webhook", json=post)
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
                assert answer.status_code in (200, 503), answer.text
                if answer.status_code == 200:
                    accepted.append(post)
                else:
                    assert answer.headers.get("retry-after"), "503 without Retry-After"
                    assert "outbox" in answer.json()["error"]
                    refused.append(post)
                    if len(refused) >= 5:
                        break
        assert refused, f"the disk never filled up: {statuses}"
        assert accepted, "nothing was accepted before the disk filled"
        # (/readyz may still call the outbox writable: its probe writes one small row, which
        # fits in the space a failed, rolled-back big transaction leaves)
        service.kill9()
        # room again: restart without the limit, Customer.io back
        sandbox.state.clear_faults()
        service.preexec = None
        service.start()
        stored = Oracle([body for post in accepted for body in post])
        wait_for(
            lambda: stored.event_ids <= set(sandbox_event_ids(sandbox)),
            "every event of a 200-answered request to be delivered",
            45,
            describe=_seed,
        )
        # PostHog retries the 503-answered requests: nothing is lost either
        for post in refused:
            assert httpx.post(f"{service.url}/webhook", json=post, timeout=10).status_code == 200
        wait_for(lambda: outbox_empty(service), "the retried requests to be delivered", 30, describe=_seed)
    finally:
        service.stop()
    print(f"disk full: {statuses}; {len(accepted)} requests answered 200, {len(refused)} answered 503")
    everything = Oracle([body for post in accepted + refused for body in post])
    assert_exactly_once(sandbox, everything)


def test_delivery_resumes_when_disk_space_returns_without_a_restart(
    sandbox: SandboxServer, base_env: dict[str, str], tmp_path: Path
) -> None:
    sandbox.state.add_fault(status=503, duration_s=300)
    bodies = webhook_bodies(4_000, people=200, seed=SEED % 1000 + 4)
    accepted: list[dict[str, Any]] = []
    service = Serve(
        {**base_env, "DELIVERY_CONCURRENCY": "2"}, tmp_path / "serve.log", preexec=_file_size_limit(1_500_000)
    ).start()
    try:
        with httpx.Client(timeout=10) as client:
            for post in batches(bodies, 20):
                answer = client.post(f"{service.url}/webhook", json=post)
                if answer.status_code != 200:
                    break
                accepted.extend(post)
        refused = sum(1 for r in sandbox.state.requests() if r["status"] == 503)
        wait_for(  # the workers retry (and fail to record the retry) meanwhile
            lambda: sum(1 for r in sandbox.state.requests() if r["status"] == 503) > refused,
            "a retry while the disk is full",
            60,
            describe=_seed,
        )
        assert service.process is not None
        resource.prlimit(service.process.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        sandbox.state.clear_faults()
        stored = Oracle(accepted)
        wait_for(
            lambda: stored.event_ids <= set(sandbox_event_ids(sandbox)),
            "delivery without a restart",
            60,
            describe=_seed,
        )
    finally:
        service.stop()


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (a real filesystem that fills up: ENOSPC, statvfs); the test is
    skipped where mounting is not allowed (needs root, or CAP_SYS_ADMIN)."""
    path.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        )
    except OSError as exc:  # no mount command
        pytest.skip(f"cannot mount a small tmpfs here: {exc}")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill_up(disk: Path, leave: int) -> Path:
    """A file that takes all of ``disk``'s free space but ``leave`` bytes."""
    filler = disk / "filler"
    stat = os.statvfs(disk)
    with open(filler, "wb") as out:
        remaining = stat.f_bavail * stat.f_frsize - leave
        while remaining > 0:
            remaining -= out.write(b"\0" * min(remaining, 2**20))
    return filler


def test_a_real_full_disk_is_told_by_serve_status_and_send_and_all_resumes_when_space_returns(
    sandbox: SandboxServer, base_env: dict[str, str], tmp_path: Path
) -> None:
    """A small tmpfs holds the data dirs and fills up while Customer.io is down: the receivers answer 503 "disk
    full", /readyz and ``status`` say it, ``send`` exits 1 with one line; once a file is deleted everything
    answered 200 (and everything retried) reaches Customer.io exactly once, without a restart."""
    sandbox.state.add_fault(status=503, duration_s=300)  # Customer.io down: the outbox only grows
    bodies = webhook_bodies(4_000, people=200, seed=SEED % 1000 + 5)
    accepted: list[list[dict[str, Any]]] = []
    refused: list[list[dict[str, Any]]] = []
    with small_disk(tmp_path / "disk", "24m") as disk:
        other = disk / "other"  # a second data dir on the same disk, for send (made while there is room)
        subprocess.run(
            [str(SCRIPT), "send", "--data-dir", str(other), "--timeout", "0", os.devnull],
            env={**os.environ, **base_env},
            capture_output=True,
        )
        env = {**base_env, "POSTHOG_CUSTOMERIO_DATA_DIR": str(disk / "data")}
        with serving(env, tmp_path / "serve.log") as service:
            filler = _fill_up(disk, leave=3_000_000)
            with httpx.Client(timeout=10) as client:
                for post in batches(bodies, 20):
                    answer = client.post(f"{service.url}/webhook", json=post)
                    assert answer.status_code in (200, 503), answer.text
                    if answer.status_code == 200:  # (one may still fit after a refusal: a smaller one)
                        accepted.append(post)
                        continue
                    assert answer.headers.get("retry-after")
                    assert "disk full" in answer.json()["error"], answer.text
                    refused.append(post)
                    if len(refused) >= 3:
                        break
            assert accepted and refused, f"{len(accepted)} accepted, {len(refused)} refused"

            def readyz() -> dict[str, Any]:
                return service.get("/readyz").json()  # type: ignore[no-any-return]

            wait_for(
                lambda: any("disk full" in p for p in readyz()["problems"]), "/readyz to say disk full", describe=readyz
            )
            shown = subprocess.run([str(SCRIPT), "status"], env={**os.environ, **env}, capture_output=True, text=True)
            if shown.returncode == 0:  # the report, led by the full disk
                assert "DISK FULL          disk full: " in shown.stdout, shown.stdout
            else:  # SQLite could not even grow its WAL index to open the file: one line says so
                assert shown.returncode == 1 and shown.stderr.startswith("error: disk full: "), shown.stderr
                assert len(shown.stderr.splitlines()) == 1 and "cannot open the database" in shown.stderr
            events = tmp_path / "events.jsonl"
            events.write_text("".join(json.dumps(body) + "\n" for body in bodies[:200]))
            sent = subprocess.run(
                [str(SCRIPT), "send", "--data-dir", str(other), str(events)],
                env={**os.environ, **base_env},
                capture_output=True,
                text=True,
            )
            assert sent.returncode == 1, sent.stderr
            errors = [line for line in sent.stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and errors[0].startswith("error: disk full: "), sent.stderr
            assert "Traceback" not in sent.stderr
            # space returns (no restart): the service is ready again, takes the refused requests, delivers all
            filler.unlink()
            wait_for(lambda: readyz()["ready"], "/readyz to be ready again", describe=readyz)
            for post in refused:
                assert httpx.post(f"{service.url}/webhook", json=post, timeout=10).status_code == 200
            sandbox.state.clear_faults()
            wait_for(lambda: outbox_empty(service), "everything to be delivered", 60, describe=_seed)
            assert (
                "DISK FULL"
                not in subprocess.run(
                    [str(SCRIPT), "status"], env={**os.environ, **env}, capture_output=True, text=True
                ).stdout
            )
        assert "Traceback" not in service.log()
    assert_exactly_once(sandbox, Oracle([body for post in accepted + refused for body in post]))


# -- secrets ---------------------------------------------------------------------------------------------
def test_secrets_appear_in_no_log_error_metric_or_status_page(
    sandbox: SandboxServer, base_env: dict[str, str], tmp_path: Path
) -> None:
    token = "tok-reliability-7c1e9d"
    signing = "whsec_" + base64.b64encode(b"reliability-signing-secret-0042!").decode()
    secrets = {
        "site ID": SITE_ID,
        "API key": API_KEY,
        "webhook token": token,
        "signing secret": signing,
        "signing key": signing.removeprefix("whsec_"),
        "basic auth": base64.b64encode(f"{SITE_ID}:{API_KEY}".encode()).decode(),
    }
    env = {**base_env, "WEBHOOK_TOKEN": token, "LOG_LEVEL": "DEBUG", "AUTH_RETRY_S": "0.5"}
    seen: list[tuple[str, str]] = []  # (where, text)
    bodies = webhook_bodies(300, people=30, seed=SEED % 1000 + 5)
    bad_person = {
        "event": {
            "uuid": "0190b7c2-8a6f-7b3e-9b1a-1234567890ab",
            "event": "clicked",
            "distinct_id": "x" * 200,
            "timestamp": "2024-01-01T00:00:00Z",
        }
    }
    auth = {"Authorization": f"Bearer {token}"}
    with serving(env, tmp_path / "serve.log") as service, httpx.Client(timeout=10) as client:

        def record(where: str, response: httpx.Response) -> None:
            seen.append((where, f"{response.status_code} {dict(response.headers)} {response.text}"))

        record("webhook ok", client.post(f"{service.url}/webhook", json=bodies[:100], headers=auth))
        record("webhook no token", client.post(f"{service.url}/webhook", json=bodies[100:110]))
        record(
            "webhook wrong token",
            client.post(f"{service.url}/webhook", json=bodies[:1], headers={"Authorization": f"Bearer {token}x"}),
        )
        record(
            "capture api_key",
            client.post(
                f"{service.url}/batch", json={"api_key": token, "batch": [b["event"] for b in bodies[110:120]]}
            ),
        )
        record(
            "capture wrong api_key",
            client.post(
                f"{service.url}/batch", json={"api_key": token[:-1], "batch": [b["event"] for b in bodies[110:120]]}
            ),
        )
        record("bad json", client.post(f"{service.url}/webhook", content=b'{"event": ', headers=auth))
        record("too long id", client.post(f"{service.url}/webhook", json=bad_person, headers=auth))
        wait_for(lambda: outbox_empty(service), "delivery", 20, describe=_seed)
        sandbox.state.set_credentials(SITE_ID, "rotated")  # Customer.io now rejects the key
        record("webhook while revoked", client.post(f"{service.url}/webhook", json=bodies[120:200], headers=auth))
        wait_for(lambda: service.get("/healthz").json()["delivery"] == "paused", "pause", 20, describe=_seed)
        checks = sum(1 for r in sandbox.state.requests() if r["status"] == 401)
        wait_for(  # credential re-checks fail and are logged
            lambda: sum(1 for r in sandbox.state.requests() if r["status"] == 401) > checks,
            "a credential re-check while revoked",
            20,
            describe=_seed,
        )
        for path in (
            "/healthz",
            "/readyz",
            "/metrics",
            "/status",
            "/api/status",
            "/api/dead-letters",
            "/openapi.json",
        ):
            record(path, client.get(service.url + path))
            record(f"{path} with the token", client.get(service.url + path, headers=auth))
        sandbox.state.set_credentials(SITE_ID, API_KEY)
        wait_for(lambda: outbox_empty(service), "delivery after the key works again", 20, describe=_seed)
        for path in ("/api/status", "/metrics", "/api/dead-letters"):
            record(path, client.get(service.url + path, headers=auth))
    # the same data dir through the offline commands, and failing commands' messages
    command_env = {**os.environ, **env}
    for args in (["status", "--json"], ["status"], ["dead-letters", "--json"], ["dead-letters"]):
        done = subprocess.run([str(SCRIPT), *args], env=command_env, capture_output=True, text=True, timeout=60)
        seen.append((" ".join(args), done.stdout + done.stderr))
    sandbox.state.set_credentials(SITE_ID, "rotated-again")
    events_file = tmp_path / "events.jsonl"
    events_file.write_text("".join(json.dumps(b) + "\n" for b in bodies[200:210]))
    for args in (["check"], ["send", str(events_file), "--timeout", "5"]):
        done = subprocess.run([str(SCRIPT), *args], env=command_env, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        seen.append((" ".join(args) + " (revoked)", done.stdout + done.stderr))
    sandbox.state.set_credentials(SITE_ID, API_KEY)
    log = service.log()
    assert "credentials" in log and "paused" in log  # the interesting lines were logged
    assert any("dead" in text.lower() or "150" in text for _, text in seen)
    seen.append(("log", log))
    for where, text in seen:
        for name, secret in secrets.items():
            for form in {secret, quote(secret, safe="")}:
                assert form not in text, f"the {name} appears in {where}"
