"""Wiring: build the database, outbox, ingestor, output (``CUSTOMERIO_API``) and workers from settings.

Shared by the CLI commands and the HTTP service so both run the same pipeline.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING

from pydantic import SecretStr

from .backlog import AnonymousBacklog, BacklogKeeper
from .bound import OutboxBound, SourceRoom
from .config import ConfigError, Settings
from .delivery import Deliverer
from .disk import DiskFull, SpaceKeeper, disk_full_message, is_disk_full
from .ingestion import Ingestor
from .operations import Claimed
from .ordering import EventTimeGate
from .outbox import Outbox
from .output import Output, OutputConfig, create_output
from .pacing import Pacer, shared_pacer, workspace_key
from .sources.base import Intake, Room
from .storage import DatabaseUnreachable, DeliveryLockError, open_storage

if TYPE_CHECKING:
    from .activity import ActivityConfig, ActivityInbox, ActivityRelay, ActivityStats
    from .cohort_sync import CohortSync
    from .person_sync import PersonSync
    from .service.config import ServiceConfig

__all__ = ["SANDBOX_CREDENTIALS", "SANDBOX_PIPELINES_KEY", "DeliveryLockError", "Runtime"]


#: Credentials of the in-process sandbox (``--sandbox``).
SANDBOX_CREDENTIALS = ("sandbox-site", "sandbox-key")
#: Pipelines API key of the in-process sandbox (``--sandbox`` with ``CUSTOMERIO_API=pipelines``).
SANDBOX_PIPELINES_KEY = "sandbox-pipelines-key"


class Runtime:
    """Everything one process needs, opened from :class:`Settings`.

    With ``sandbox=True`` an in-process Customer.io sandbox is started on a free
    loopback port and used instead of the real Customer.io.
    """

    def __init__(self, settings: Settings, *, sandbox: bool = False, fallback_to_us: bool = False) -> None:
        self.settings = settings
        self.fallback_to_us = fallback_to_us
        ensure_data_dir(settings)
        sqlite_path = _sqlite_path(settings)
        if sqlite_path is not None:
            _private_files(sqlite_path)
        try:
            self.db = open_storage(settings.outbox_url, settings.database_path, settings.sqlite_synchronous)
        except DatabaseUnreachable as exc:  # already one line without the password
            raise ConfigError(f"OUTBOX_URL: {exc}") from None
        except Exception as exc:  # unreachable server, bad URL: a configuration problem; or a full disk
            if is_disk_full(exc):  # SQLite grows its WAL index when it opens the file
                where = "" if sqlite_path is None else f" {sqlite_path}"
                raise DiskFull(f"{disk_full_message(exc)}: cannot open the database{where}") from None
            reason = _redact(f"{type(exc).__name__}: {exc}", settings.outbox_url)
            raise ConfigError(f"OUTBOX_URL: cannot open the outbox: {reason}") from None
        if sqlite_path is not None:
            _private_files(sqlite_path)  # the -wal / -shm files SQLite just created
        self.outbox = Outbox(self.db, lease_s=settings.lease_s, anonymous_hold_s=settings.anonymous_hold_s)
        self.outbox.gate = EventTimeGate(
            self.db, settings.reorder_window_s, settings.anonymous_hold_s, settings.reorder_stale_s
        )
        self.ingestor = Ingestor(self.db, self.outbox, settings.mapping_config())
        #: ``OUTBOX_MAX_QUEUED``: where ``serve`` answers 503, and at half of it every other source waits (:meth:`room`)
        self.bound = OutboxBound(self.outbox, settings.outbox_max_queued, lambda: self.ingestor.operations_written)
        #: the anonymous backlog's bounds; enforced by :attr:`backlog_keeper` in a process that delivers
        self.backlog = AnonymousBacklog(
            self.db,
            settings.anonymous_max_age_s,
            settings.anonymous_backlog_max,
            exclude=self.outbox.claims_held,
        )
        self.backlog_keeper: BacklogKeeper | None = None
        #: gives back the space the outbox freed (SQLite); run by a process that delivers
        self.space_keeper: SpaceKeeper | None = None
        #: ``PERSON_SYNC_INTERVAL_S``: the passes of PostHog's persons list (started by the service)
        self.person_sync: PersonSync | None = None
        #: ``COHORT_SEGMENTS`` / ``COHORT_ATTRIBUTES``: the passes of PostHog's cohorts (started by the service)
        self.cohort_sync: CohortSync | None = None
        #: Customer.io's message activity into PostHog (:mod:`.activity`): this process's counts, the receiver's
        #: store and, in a process that delivers with capture configured, the relay
        self._activity: tuple[ActivityStats, ActivityInbox] | None = None
        self.activity_relay: ActivityRelay | None = None
        self.sandbox = None
        self._output: Output | None = None
        self._deliverer: Deliverer | None = None
        self._lock_file: IO[str] | None = None
        self._closed = False
        if sandbox:
            from .sandbox import SandboxServer

            site_id, api_key = SANDBOX_CREDENTIALS
            self.sandbox = SandboxServer(port=0, site_id=site_id, api_key=api_key, pipelines_key=SANDBOX_PIPELINES_KEY)
            self.sandbox.start()

    # -- Customer.io ---------------------------------------------------------------
    def credentials(self) -> tuple[str, str]:
        """Site ID and API key (the sandbox's with ``--sandbox``)."""
        return SANDBOX_CREDENTIALS if self.sandbox else self.settings.credentials()

    def output_config(self) -> OutputConfig:
        """What the output is built from: credentials, addresses and deadlines (the sandbox's with ``--sandbox``)."""
        settings = self.settings
        sandbox_url = self.sandbox.url if self.sandbox is not None else None
        return OutputConfig(
            region=settings.customerio_region,
            timeout_s=self._timeout(),
            lookup_timeout_s=settings.customerio_timeout_s,
            retry_after_max_s=settings.retry_after_max_s,
            fallback_to_us=self.fallback_to_us,
            track_credentials=self.credentials,
            track_url=sandbox_url or settings.customerio_track_url,
            pipelines_key=(lambda: SANDBOX_PIPELINES_KEY) if self.sandbox is not None else settings.pipelines_key,
            pipelines_url=sandbox_url or settings.customerio_pipelines_url,
        )

    def service_config(self) -> ServiceConfig:
        """What the HTTP service reads of the settings."""
        from .service.config import ServiceConfig
        from .service.health import stall_after_s

        settings = self.settings
        return ServiceConfig(
            max_body_bytes=settings.max_body_bytes,
            max_events_per_request=settings.max_events_per_request,
            max_queue=settings.max_queue,
            shutdown_grace_s=settings.shutdown_grace_s,
            cors_origins=settings.cors_origin_list,
            posthog_host=settings.posthog_host,
            posthog_timeout_s=settings.posthog_timeout_s,
            stall_after_s=stall_after_s(settings.customerio_timeout_s),
            webhook_token=settings.webhook_token or SecretStr(""),
            webhook_signing_secret=settings.webhook_signing_secret or SecretStr(""),
            ops_token=SecretStr(settings.ops_secret),
        )

    def output(self) -> Output:
        """The output API chosen by ``CUSTOMERIO_API`` (through :data:`.output.OUTPUTS`; made on first use)."""
        if self._output is None:
            self._output = create_output(self.settings.customerio_api, self.output_config())
        return self._output

    def check_credentials(self) -> None:
        """Ask Customer.io whether the configured credentials are accepted (:class:`AuthError` if not)."""
        self.output().check_credentials()

    # -- sources ---------------------------------------------------------------------
    def intake(self, source: str, room: Room | None = None) -> Intake:
        """Where ``source`` puts its events: the ingestor, this process's delivery workers to wake, and the room
        it waits for (default: :meth:`room`)."""
        return Intake(self.ingestor, source, self._wake_delivery, room if room is not None else self.room(source))

    def room(
        self, source: str, *, stop: Callable[[], bool] | None = None, timeout_s: float | None = None
    ) -> SourceRoom:
        """Room in the outbox for ``source`` (``OUTBOX_MAX_QUEUED``): it waits until ``stop()`` says so, or for
        ``timeout_s`` seconds in all; when this process delivers and delivery stopped for good (credentials
        rejected, ``send``), the wait ends with that :class:`AuthError`."""
        return SourceRoom(self.bound, source, stop=stop, check=self._delivery_failed, timeout_s=timeout_s)

    def _delivery_failed(self) -> None:
        if self._deliverer is not None:
            self._deliverer.check_failed()

    def _wake_delivery(self) -> None:
        """Wake the delivery workers if this process started them."""
        if self._deliverer is not None:
            self._deliverer.notify()

    @property
    def current_deliverer(self) -> Deliverer | None:
        """The delivery workers if this process started them."""
        return self._deliverer

    def _timeout(self) -> float:
        """HTTP timeout, bounded by the claims (PostgreSQL: below the lease, so a lease never
        expires while its request can still be answered)."""
        return self.outbox.claims.bound_timeout(self.settings.customerio_timeout_s)

    def deliverer(
        self,
        *,
        pause_on_auth_error: bool = False,
        on_delivered: Callable[[Sequence[Claimed]], None] | None = None,
    ) -> Deliverer:
        """The delivery workers (one set per data directory: takes the delivery lock)."""
        if self._deliverer is None:
            # SQLite: one deliverer per file (a lock file); PostgreSQL: leases, no lock
            self._lock_file = self.db.take_delivery_lock(Path(self.settings.posthog_customerio_data_dir))
            output = self.output()
            self._deliverer = Deliverer(
                self.outbox,
                output,
                pacer=self._shared_pacer(),
                concurrency=self.settings.delivery_concurrency,
                max_rps=self.settings.customerio_max_rps,
                pause_on_auth_error=pause_on_auth_error,
                auth_retry_s=self.settings.auth_retry_s,
                linger_s=self._linger_s(output),
                on_delivered=on_delivered,
            )
            # the backlog's bounds, wherever delivery runs (serve, consume, send...): a pass now, before
            # the workers start, then about every second
            self.backlog_keeper = BacklogKeeper(self.backlog)
            self.backlog_keeper.start()
            # and the disk: an older SQLite file turned to incremental auto-vacuum (once, when quick), then
            # the pages the outbox freed given back about every second, a bounded slice at a time
            self.space_keeper = SpaceKeeper(self.db)
            self.space_keeper.start()
        return self._deliverer

    def _linger_s(self, output: Output) -> float:
        """``DELIVERY_LINGER_S``, else the output's default."""
        if self.settings.delivery_linger_s is not None:
            return self.settings.delivery_linger_s
        return output.linger_s

    def _shared_pacer(self) -> Pacer | None:
        """With PostgreSQL, the rate limit and pauses shared by all replicas of the workspace."""
        return shared_pacer(self.db, self._pacing_workspace, self.settings.customerio_max_rps)

    def _pacing_workspace(self) -> str:
        """The key of the workspace whose replicas share one pace (credentials and API address)."""
        return workspace_key(*self.output().workspace)

    def start_person_sync(self) -> PersonSync | None:
        """With ``PERSON_SYNC_INTERVAL_S``: sync PostHog's persons on that schedule in a background thread
        (delivered by this process's workers, if any); ``None`` when it is not set."""
        interval = self.settings.person_sync_interval_s
        if interval is not None and self.person_sync is None:
            from .person_sync import PersonSync

            self.person_sync = PersonSync(self, interval)
            self.person_sync.start()
        return self.person_sync

    def start_cohort_sync(self) -> CohortSync | None:
        """With cohorts configured (``COHORT_SEGMENTS``, ``COHORT_ATTRIBUTES``): sync them every
        ``COHORT_SYNC_INTERVAL_S`` in a background thread (delivered by this process's workers, if any); ``None``
        when no cohort is configured."""
        from .sources.cohorts import configured_cohorts

        if configured_cohorts(self.settings) and self.cohort_sync is None:
            from .cohort_sync import CohortSync

            self.cohort_sync = CohortSync(self, self.settings.cohort_sync_interval_s)
            self.cohort_sync.start()
        return self.cohort_sync

    # -- Customer.io's message activity (:mod:`.activity`) ----------------------------------
    def activity_config(self) -> ActivityConfig:
        """What the reporting webhooks' receiver and the relay read of the settings."""
        from .activity import ActivityConfig

        settings = self.settings
        lease_bound = settings.lease_s - max(1.0, settings.lease_s / 4) if self.db.dialect == "postgresql" else None
        return ActivityConfig(
            signing_key=_secret(settings.customerio_webhook_signing_key),
            tolerance_s=settings.customerio_webhook_tolerance_s,
            posthog_host=settings.posthog_host,
            project_api_key=_secret(settings.posthog_project_api_key),
            max_body_bytes=settings.max_body_bytes,
            timeout_s=min(settings.posthog_timeout_s, lease_bound or settings.posthog_timeout_s),
            lease_s=settings.lease_s,
            retry_after_max_s=settings.retry_after_max_s,
        )

    @property
    def activity(self) -> tuple[ActivityStats, ActivityInbox]:
        """This process's activity counts and the store of verified webhooks (made on first use)."""
        if self._activity is None:
            from .activity import ActivityInbox, ActivityStats

            stats = ActivityStats()
            self._activity = (stats, ActivityInbox(self.db, stats))
        return self._activity

    def start_activity_relay(self) -> ActivityRelay | None:
        """With ``POSTHOG_HOST`` and ``POSTHOG_PROJECT_API_KEY``: capture stored activity into PostHog in a
        background thread; ``None`` when capture is not configured."""
        config = self.activity_config()
        if config.captures and self.activity_relay is None:
            from .activity import ActivityRelay
            from .output.posthog_capture import PostHogCapture

            assert config.posthog_host is not None
            capture = PostHogCapture(
                config.posthog_host,
                config.project_api_key,
                timeout_s=config.timeout_s,
                retry_after_max_s=config.retry_after_max_s,
            )
            self.activity_relay = ActivityRelay(self.db, capture, self.activity[0], lease_s=config.lease_s)
            self.activity_relay.start()
        return self.activity_relay

    # -- lifecycle -------------------------------------------------------------------
    def close(self, grace_s: float = 10.0) -> None:
        """Stop workers, give back the space the outbox freed (for at most ``grace_s``, 10 s at most), close
        connections and the sandbox (once: a second call does nothing)."""
        if self._closed:
            return
        self._closed = True
        if self.person_sync is not None:
            self.person_sync.stop(timeout=1.0)  # the service's shutdown stopped it already
        if self.cohort_sync is not None:
            self.cohort_sync.stop(timeout=1.0)
        if self.backlog_keeper is not None:
            self.backlog_keeper.stop()
        if self.activity_relay is not None:
            self.activity_relay.stop()
        if self._deliverer is not None:
            self._deliverer.stop(grace_s)
        if self.space_keeper is not None:
            self.space_keeper.stop(final_budget_s=min(grace_s, 10.0))
        if self._output is not None:
            self._output.close()
        if self._lock_file is not None:
            self._lock_file.close()
        self.db.close()
        if self.sandbox is not None:
            self.sandbox.stop()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _secret(value: SecretStr | None) -> str:
    """A secret setting's value, trimmed ("" when unset)."""
    return value.get_secret_value().strip() if value is not None else ""


def ensure_data_dir(settings: Settings) -> None:
    """Create the data directory (mode 0700: it holds people's data) or fail with a clear :class:`ConfigError`.

    An existing directory is tightened to 0700 when it is ours: created here, empty (pre-created for
    us, e.g. a volume mount), or holding our database.
    """
    path = Path(settings.posthog_customerio_data_dir)
    try:
        existed = path.is_dir()
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not existed or not any(path.iterdir()) or (path / settings.database_path.name).exists():
            _tighten(path, 0o700)
    except OSError as exc:
        raise ConfigError(f"POSTHOG_CUSTOMERIO_DATA_DIR: cannot create that directory: {exc.strerror}") from None


def _sqlite_path(settings: Settings) -> Path | None:
    """The SQLite file the outbox lives in (``None`` with PostgreSQL)."""
    url = settings.outbox_url
    if not url:
        return settings.database_path
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    return None


def _private_files(database: Path) -> None:
    """The database and its WAL/SHM files: created 0600, existing ones tightened to 0600."""
    if not database.exists() and database.parent.is_dir():
        with contextlib.suppress(OSError):
            os.close(os.open(database, os.O_RDWR | os.O_CREAT, 0o600))
    for path in (database, database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")):
        with contextlib.suppress(OSError):
            _tighten(path, 0o600)


def _tighten(path: Path, mode: int) -> None:
    """``chmod`` to ``mode`` when group or others have any access (only our own files)."""
    info = path.stat()
    if info.st_uid == os.getuid() and info.st_mode & 0o077:
        os.chmod(path, mode)


def _redact(text: str, url: str | None) -> str:
    """An error text without the outbox URL or its password (a driver may quote its connection string)."""
    if not url:
        return text
    from urllib.parse import urlsplit

    secrets = [url]
    with contextlib.suppress(ValueError):
        parts = urlsplit(url)
        secrets += [s for s in (parts.password, parts.netloc, parts.query) if s and len(s) >= 3]
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
