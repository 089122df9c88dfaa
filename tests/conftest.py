"""Shared fixtures: a Customer.io sandbox on loopback, a data dir, a CLI runner, PostgreSQL, both storage backends."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from posthog_customerio.cli import app
from posthog_customerio.config import Settings
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.storage import PostgresStorage, SqliteStorage, Storage


def pytest_sessionstart(session: pytest.Session) -> None:
    """In CI (``POSTHOG_CUSTOMERIO_REQUIRE_SPEC=1``, set by ``.ci/run``) a missing Customer.io OpenAPI spec
    fails the run loudly: every request we send must validate against it, so skipping would hide that."""
    from tests.openapi_check import SPEC_PATH, SPEC_REQUIRED, spec_available

    if SPEC_REQUIRED and not spec_available():
        raise pytest.UsageError(
            f"Customer.io OpenAPI spec not found at {SPEC_PATH}: CI requires it (POSTHOG_CUSTOMERIO_REQUIRE_SPEC=1);"
            " set CUSTOMERIO_OPENAPI_SPEC to its path"
        )


TIERS = ("unit", "integration", "e2e")
TESTS_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test is marked with its tier, the directory it lives in: ``tests/unit`` -> ``unit``, and so on."""
    for item in items:
        path = Path(item.path).resolve()
        if path.is_relative_to(TESTS_DIR) and len(parts := path.relative_to(TESTS_DIR).parts) > 1 and parts[0] in TIERS:
            item.add_marker(parts[0])


SITE_ID = "site-e2e-1234"
API_KEY = "key-e2e-secret-5678"
CONFIG_ENV = (
    "CUSTOMERIO_SITE_ID",
    "CUSTOMERIO_API_KEY",
    "CUSTOMERIO_REGION",
    "CUSTOMERIO_TRACK_URL",
    "CUSTOMERIO_API",
    "IDENTIFY_BY_EMAIL",
    "SEND_EVENTS_FROM_ANONYMOUS_USERS",
    "EVENTS_TO_SEND",
    "POSTHOG_CUSTOMERIO_DATA_DIR",
    "CUSTOMERIO_MAX_RPS",
    "DELIVERY_CONCURRENCY",
    "CUSTOMERIO_TIMEOUT_S",
    "SQLITE_SYNCHRONOUS",
    "WEBHOOK_TOKEN",
    "WEBHOOK_SIGNING_SECRET",
    "MAX_BODY_BYTES",
    "MAX_QUEUE",
    "SHUTDOWN_GRACE_S",
    "AUTH_RETRY_S",
    "LOG_FORMAT",
    "LOG_LEVEL",
    "MERGE_PEOPLE",
    "ANONYMOUS_EVENTS",
    "GROUP_TYPE_MAP",
    "SUPPRESS_ON_DELETE",
    "LIMITS",
    "PROPERTIES_TO_EXCLUDE",
    "PROPERTIES_TO_INCLUDE",
    "EVENT_NAME_MAP",
    "OUTBOX_URL",
    "LEASE_S",
    "DELIVERY_LINGER_S",
    "POSTHOG_HOST",
    "POSTHOG_TIMEOUT_S",
    "CORS_ORIGINS",
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_TOPIC",
    "KAFKA_GROUP_ID",
    "KAFKA_CONFIG_FILE",
    "POSTHOG_API_HOST",
    "POSTHOG_PROJECT_ID",
    "POSTHOG_PERSONAL_API_KEY",
    "POSTHOG_API_MAX_PER_MINUTE",
    "PERSON_SYNC_INTERVAL_S",
    "EVENTS_TO_SKIP",
    "CONVERT_DATES",
    "MAX_EVENTS_PER_REQUEST",
    "HTTP_KEEP_ALIVE_S",
    "HTTP_READ_TIMEOUT_S",
    "RETRY_AFTER_MAX_S",
    "OPS_TOKEN",
    "ALLOW_UNAUTHENTICATED",
    "CUSTOMERIO_PIPELINES_API_KEY",
    "CUSTOMERIO_PIPELINES_URL",
    "ANONYMOUS_HOLD_S",
    "ANONYMOUS_MAX_AGE_S",
    "ANONYMOUS_BACKLOG_MAX",
    "OUTBOX_MAX_QUEUED",
)
SAMPLE_FILE = Path(__file__).resolve().parents[1] / "src" / "posthog_customerio" / "data" / "sample_events.jsonl"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's own configuration."""
    for name in CONFIG_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def _sandbox_server() -> Iterator[SandboxServer]:
    with SandboxServer(port=0, site_id=SITE_ID, api_key=API_KEY) as server:
        yield server


@pytest.fixture
def sandbox(_sandbox_server: SandboxServer) -> SandboxServer:
    """The sandbox, emptied for this test."""
    _sandbox_server.state.reset()
    _sandbox_server.pipelines.reset()
    return _sandbox_server


@pytest.fixture
def env(sandbox: SandboxServer, tmp_path: Path) -> dict[str, str]:
    """Environment pointing the CLI at the sandbox with a fresh data dir."""
    return {
        "CUSTOMERIO_SITE_ID": SITE_ID,
        "CUSTOMERIO_API_KEY": API_KEY,
        "CUSTOMERIO_TRACK_URL": sandbox.url,
        "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "data"),
        "SQLITE_SYNCHRONOUS": "NORMAL",
    }


@pytest.fixture
def settings(tmp_path: Path) -> Callable[..., Settings]:
    """Builds this test's ``Settings``: ``settings(**overrides)`` or ``settings(sandbox, **overrides)``.

    The sandbox's site id and key, the data dir ``tmp_path / "data"``, SQLite ``NORMAL``, the sandbox's
    Track URL when one is passed; ``overrides`` are ``load_settings`` values (``None`` drops a default).
    """
    from .helpers import make_settings  # helpers import this module: not at the top

    def build(sandbox: SandboxServer | None = None, **overrides: Any) -> Settings:
        return make_settings(tmp_path / "data", sandbox, **overrides)

    return build


class Cli:
    """Runs ``posthog-customerio`` in-process (real HTTP to the sandbox)."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, env: dict[str, str] | None = None, input: str | None = None) -> Any:
        return self.runner.invoke(app, list(args), env=env, input=input, catch_exceptions=False)


@pytest.fixture
def cli() -> Cli:
    return Cli()


def write_jsonl(path: Path, events: list[Any]) -> Path:
    """Write events (dicts, or raw strings for bad lines) as JSONL."""
    path.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in events))
    return path


# -- PostgreSQL (the shared outbox backend) ------------------------------------------------
TEST_POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema (dropped afterwards).

    Skips with a clear message when the server is unreachable outside CI; in CI
    (CI=true) an unreachable server fails the test.
    """
    try:
        import psycopg

        admin = psycopg.connect(TEST_POSTGRES_URL, autocommit=True, connect_timeout=3)
    except Exception as exc:
        from .helpers import unavailable  # helpers import this module: not at the top

        unavailable(f"PostgreSQL not reachable at {TEST_POSTGRES_URL} ({type(exc).__name__}); set TEST_POSTGRES_URL")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in TEST_POSTGRES_URL else "?"
    try:
        yield f"{TEST_POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


# -- both storage backends ---------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def open_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Storage]]:
    """Opens the backend under test (SQLite in ``tmp_path``, or PostgreSQL in a fresh schema); calling it
    again opens the same data once more. Everything opened is closed at the end."""
    opened: list[Storage] = []

    def make() -> Storage:
        db: Storage
        if request.param == "sqlite":
            db = SqliteStorage(tmp_path / "db.sqlite")
        else:
            db = PostgresStorage(request.getfixturevalue("pg_url"))
        opened.append(db)
        return db

    yield make
    for db in opened:
        with contextlib.suppress(Exception):  # already closed by the test
            db.close()
