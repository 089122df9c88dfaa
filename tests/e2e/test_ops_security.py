"""The operations surface: token on /status and /api/*, open probes without personal data,
non-blocking readiness, refusing to serve unauthenticated, secret-safe config errors, file modes."""

from __future__ import annotations

import base64
import os
import socket
import stat
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from posthog_customerio.cli.serve import unauthenticated_host
from posthog_customerio.config import load_settings
from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer

from ..conftest import SITE_ID, Cli
from ..helpers import hog, make_settings, wait_for
from ..service import running_service

pytestmark = pytest.mark.e2e

OPS = "ops-7c1e-token"
HOOK = "hook-90ab-token"
SIGNING = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OPS_GETS = ("/status", "/api/status", "/api/dead-letters", "/api/not-a-route")


@pytest.fixture
def serve(sandbox: SandboxServer, tmp_path: Path):
    @contextmanager
    def make(*, deliver: bool = True, **overrides: Any) -> Iterator[tuple[str, Runtime]]:
        settings = make_settings(tmp_path / "data", sandbox, **{"shutdown_grace_s": 1, **overrides})
        runtime = Runtime(settings)
        with running_service(runtime, deliver=deliver) as url:
            yield url, runtime

    return make


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# -- the token -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("config", "token"),
    [({"webhook_token": HOOK}, HOOK), ({"ops_token": OPS}, OPS), ({"ops_token": OPS, "webhook_token": HOOK}, OPS)],
    ids=["webhook-token-fallback", "ops-token", "ops-token-beats-webhook-token"],
)
def test_operations_endpoints_need_the_token(serve, config: dict[str, str], token: str) -> None:
    with serve(**config) as (url, _runtime):
        for path in OPS_GETS:
            for headers in ({}, bearer(token + "x"), basic("admin", token + "x"), basic(token, ""), bearer(SITE_ID)):
                answer = httpx.get(url + path, headers=headers)
                assert answer.status_code == 401, (path, headers, answer.text)
                assert "error" in answer.json()
                challenge = answer.headers["www-authenticate"]
                assert challenge.startswith("Basic realm=" if path == "/status" else "Bearer realm="), challenge
        if token != HOOK and "webhook_token" in config:  # the webhook token does not open them once OPS_TOKEN is set
            assert httpx.get(f"{url}/api/status", headers=bearer(HOOK)).status_code == 401
        retry = httpx.post(f"{url}/api/dead-letters/retry", json={})
        assert retry.status_code == 401 and "requeued" not in retry.text
        for headers in (bearer(token), basic("", token), basic("any-user", token)):
            assert httpx.get(f"{url}/api/status", headers=headers).json()["outbox"]["depth"] == 0
            assert "<html" in httpx.get(f"{url}/status", headers=headers).text.lower()
            assert httpx.get(f"{url}/api/dead-letters", headers=headers).json() == []
            assert httpx.post(f"{url}/api/dead-letters/retry", json={}, headers=headers).json() == {"requeued": 0}
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):  # the open ones
            assert httpx.get(url + path).status_code == 200, path


def test_signing_secret_alone_closes_the_operations_endpoints(serve) -> None:
    with serve(webhook_signing_secret=SIGNING) as (url, _):
        for path in OPS_GETS:
            answer = httpx.get(url + path, headers=bearer(SIGNING))
            assert answer.status_code == 401 and "OPS_TOKEN" in answer.json()["error"]
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_without_any_token_loopback_stays_open(serve) -> None:
    with serve() as (url, _):
        for path in OPS_GETS[:3]:
            assert httpx.get(url + path).status_code == 200, path


def test_open_endpoints_carry_no_personal_data(serve, sandbox: SandboxServer) -> None:
    person, email = "dana-4417", "dana.secret@example.com"
    with serve(ops_token=OPS, auth_retry_s=60, limits="dead-letter") as (url, runtime):
        # Customer.io's error texts quoting the person: a rejected operation, then a 401 quoting the email
        sandbox.state.add_fault(status=400, count=3, body={"meta": {"error": f"bad identifier {person} <{email}>"}})
        assert httpx.post(f"{url}/webhook", json=hog(person, email=email)).status_code == 200
        wait_for(lambda: runtime.outbox.dead_letter_count() >= 1 and runtime.outbox.depth() == 0, "dead letters")
        sandbox.state.add_fault(status=401, duration_s=120, body={"meta": {"error": f"unauthorized: {email}"}})
        assert httpx.post(f"{url}/webhook", json=hog(person, n=1, email=email)).status_code == 200
        wait_for(lambda: httpx.get(f"{url}/healthz").json()["delivery"] == "paused", "delivery to pause")
        private = httpx.get(f"{url}/api/status", headers=bearer(OPS)).text
        assert email in private and person in private  # the protected report has them: the test can fail
        health = httpx.get(f"{url}/healthz").json()
        assert health["auth_error"] and health["customerio"]["credentials"] == "rejected"
        for path in ("/healthz", "/readyz", "/metrics"):
            text = httpx.get(url + path).text
            assert email not in text and person not in text and "example.com" not in text, (path, text[:500])
        sandbox.state.clear_faults()


# -- readiness -------------------------------------------------------------------------------
def test_readyz_never_blocks_requests_while_customerio_hangs(serve, sandbox: SandboxServer) -> None:
    delay = 9.0
    with serve(webhook_token=HOOK, shutdown_grace_s=0) as (url, _):
        with httpx.Client(headers=bearer(HOOK)) as client:
            started = time.monotonic()
            assert client.post(f"{url}/webhook", json=hog("quick")).status_code == 200
            baseline = time.monotonic() - started
            sandbox.state.add_fault(delay_s=delay, duration_s=60)  # every Customer.io request hangs
            try:
                with ThreadPoolExecutor(60) as pool:
                    probes = [pool.submit(httpx.get, f"{url}/readyz", timeout=30) for _ in range(60)]
                    latencies = []
                    for n in range(1, 6):
                        started = time.monotonic()
                        assert client.post(f"{url}/webhook", json=hog("quick", n=n), timeout=30).status_code == 200
                        latencies.append(time.monotonic() - started)
                    answers = [probe.result() for probe in probes]
            finally:
                sandbox.state.clear_faults()
        assert max(latencies) < delay / 3, f"webhook took {max(latencies):.2f}s (baseline {baseline:.3f}s)"
        assert [a.status_code for a in answers] == [200] * 60, {a.status_code for a in answers}
        assert all(a.json() == {"ready": True, "problems": []} for a in answers)


def test_ready_while_customerio_fails_and_healthz_says_so(serve, sandbox: SandboxServer) -> None:
    sandbox.state.add_fault(status=503, duration_s=120)
    try:
        with serve(ops_token=OPS) as (url, _):
            assert httpx.post(f"{url}/webhook", json=hog("down")).status_code == 200
            health = wait_for(
                lambda: (h := httpx.get(f"{url}/healthz").json())["customerio"]["last_error"] and h,
                "delivery's failures to show in /healthz",
            )
            assert health["customerio"]["last_error"] == "HTTP 503" and health["customerio"]["reachable"] is True
            assert httpx.get(f"{url}/readyz").json() == {"ready": True, "problems": []}
            status = httpx.get(f"{url}/api/status", headers=bearer(OPS)).json()
            assert status["customerio"]["last_error"] == "HTTP 503"
    finally:
        sandbox.state.clear_faults()


def test_ingest_only_probes_an_unreachable_customerio_in_the_background(serve) -> None:
    with socket.socket() as closed:  # a port nobody listens on: connection refused
        closed.bind(("127.0.0.1", 0))
        track_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    with serve(deliver=False, customerio_track_url=track_url) as (url, _):
        health = wait_for(
            lambda: (h := httpx.get(f"{url}/healthz").json())["customerio"]["checked_at"] and h, "the background probe"
        )
        assert health["customerio"]["reachable"] is False
        assert health["customerio"]["last_error"].startswith("unreachable")
        assert httpx.post(f"{url}/webhook", json=hog("buffered")).status_code == 200
        assert httpx.get(f"{url}/readyz").status_code == 200


def test_ready_while_credentials_are_rejected(serve, sandbox: SandboxServer) -> None:
    sandbox.state.set_credentials(SITE_ID, "another-key")
    with serve(auth_retry_s=60) as (url, _):
        assert httpx.post(f"{url}/webhook", json=hog("rejected")).status_code == 200
        wait_for(lambda: httpx.get(f"{url}/healthz").json()["customerio"]["credentials"] == "rejected", "rejected")
        assert httpx.get(f"{url}/readyz").json() == {"ready": True, "problems": []}


def test_not_ready_at_max_queue(serve) -> None:
    with serve(max_queue=2, deliver=False) as (url, _):
        assert httpx.get(f"{url}/readyz").status_code == 200
        assert httpx.post(f"{url}/webhook", json=[hog("full", n=n) for n in range(3)]).status_code == 200
        answer = wait_for(lambda: (r := httpx.get(f"{url}/readyz")).status_code == 503 and r, "readyz to say full")
        assert "MAX_QUEUE" in answer.json()["problems"][0]


# -- serve refuses to run unauthenticated on a reachable host -----------------------------------
@pytest.fixture
def taken_port() -> Iterator[str]:
    """A port already bound: should ``serve`` wrongly get as far as listening, it fails instead of hanging."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield str(sock.getsockname()[1])


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.10.5", "example.internal"])
def test_serve_refuses_a_reachable_host_without_any_token(
    cli: Cli, env: dict[str, str], host: str, taken_port: str
) -> None:
    result = cli("serve", "--host", host, "--port", taken_port, env=env)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "ALLOW_UNAUTHENTICATED" in lines[0] and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("host", "config", "refused"),
    [
        ("127.0.0.1", {}, False),
        ("::1", {}, False),
        ("localhost", {}, False),
        ("[::1]", {}, False),
        ("0.0.0.0", {}, True),
        ("0.0.0.0", {"allow_unauthenticated": "true"}, False),
        ("0.0.0.0", {"ops_token": OPS}, False),
        ("0.0.0.0", {"webhook_token": HOOK}, False),
        ("0.0.0.0", {"webhook_signing_secret": SIGNING}, False),
        ("0.0.0.0", {"ops_token": " "}, True),
    ],
)
def test_which_hosts_need_a_token(host: str, config: dict[str, str], refused: bool) -> None:
    assert (unauthenticated_host(load_settings(config), host) is not None) is refused


# -- configuration errors ----------------------------------------------------------------------
SECRETISH = "sk_live_Pa55w0rdXqZ"  # 17 base64 characters: not a signing secret either


@pytest.mark.parametrize(
    "variable",
    [
        "CUSTOMERIO_REGION",
        "CUSTOMERIO_API",
        "CUSTOMERIO_TRACK_URL",
        "IDENTIFY_BY_EMAIL",
        "SEND_EVENTS_FROM_ANONYMOUS_USERS",
        "MERGE_PEOPLE",
        "ANONYMOUS_EVENTS",
        "GROUP_TYPE_MAP",
        "SUPPRESS_ON_DELETE",
        "LIMITS",
        "EVENT_NAME_MAP",
        "CUSTOMERIO_MAX_RPS",
        "CUSTOMERIO_TIMEOUT_S",
        "DELIVERY_CONCURRENCY",
        "DELIVERY_LINGER_S",
        "ANONYMOUS_HOLD_S",
        "SQLITE_SYNCHRONOUS",
        "OUTBOX_URL",
        "LEASE_S",
        "MAX_BODY_BYTES",
        "MAX_QUEUE",
        "SHUTDOWN_GRACE_S",
        "AUTH_RETRY_S",
        "LOG_FORMAT",
        "LOG_LEVEL",
        "ALLOW_UNAUTHENTICATED",
        "WEBHOOK_SIGNING_SECRET",
    ],
)
def test_a_bad_value_is_named_never_echoed(cli: Cli, env: dict[str, str], variable: str, taken_port: str) -> None:
    result = cli("serve", "--port", taken_port, env={**env, variable: SECRETISH})
    assert result.exit_code == 2, result.output
    output = result.output.strip()
    assert output.startswith(f"error: {variable}: ") and "\n" not in output, output
    assert SECRETISH.lower() not in output.lower() and "Pa55w0rd" not in output, output


def test_a_malformed_signing_secret_is_one_line_exit_2(cli: Cli, env: dict[str, str], taken_port: str) -> None:
    for secret in ("whsec_S3CRETVALUE12", "whsec_", "whsec_AAAAA", "S3CRETVALUE12"):
        result = cli("serve", "--port", taken_port, env={**env, "WEBHOOK_SIGNING_SECRET": secret})
        assert result.exit_code == 2, result.output
        assert result.output.strip().splitlines() == [
            "error: WEBHOOK_SIGNING_SECRET: must be a Standard Webhooks secret: whsec_ followed by base64"
        ]


# -- file modes ----------------------------------------------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    previous = os.umask(0o022)  # the common default: without care, 0755 directories and 0644 files
    try:
        yield
    finally:
        os.umask(previous)


def test_data_dir_and_database_are_private(tmp_path: Path, loose_umask: None) -> None:
    data = tmp_path / "fresh" / "data"
    with Runtime(load_settings({"posthog_customerio_data_dir": data}), sandbox=True) as runtime:
        runtime.deliverer()  # takes the delivery lock file
        database = runtime.settings.database_path
        files = [
            database,
            database.with_name(database.name + "-wal"),
            database.with_name(database.name + "-shm"),
            data / "delivery.lock",
        ]
        assert _mode(data) == 0o700
        for path in files:
            assert path.exists() and _mode(path) == 0o600, (path, oct(_mode(path)))


def test_an_existing_data_dir_is_tightened(tmp_path: Path, loose_umask: None) -> None:
    data = tmp_path / "data"
    with Runtime(load_settings({"posthog_customerio_data_dir": data}), sandbox=True):
        pass
    database = data / "posthog-customerio.sqlite"
    os.chmod(data, 0o755)
    os.chmod(database, 0o644)
    with Runtime(load_settings({"posthog_customerio_data_dir": data}), sandbox=True):
        assert _mode(data) == 0o700 and _mode(database) == 0o600


def test_sqlite_outbox_url_is_private(tmp_path: Path, loose_umask: None) -> None:
    elsewhere = tmp_path / "elsewhere.sqlite"
    settings = load_settings({"posthog_customerio_data_dir": tmp_path / "d", "outbox_url": f"sqlite:///{elsewhere}"})
    with Runtime(settings, sandbox=True):
        assert _mode(elsewhere) == 0o600
