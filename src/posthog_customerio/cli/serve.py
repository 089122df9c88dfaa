"""``serve``: the HTTP service (PostHog webhook and capture receivers), delivery in the background."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shlex
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Annotated, Any

import typer

from ..config import (
    COHORTS,
    CUSTOMERIO,
    DELIVERY,
    HTTP,
    IDENTITY,
    MAPPING,
    PACING,
    POSTHOG_API,
    SERVICE,
    STORE,
    ConfigError,
    Settings,
)
from ..runtime import DeliveryLockError, Runtime
from .lifecycle import (
    EXIT_CONFIG,
    check_port,
    exits,
    fail,
    listen,
    run_until_signalled,
    server_marking_shutdown,
)
from .options import Sandbox, SettingFlags, sandbox_data_dir, setting_options

_LOOPBACK_NAMES = ("localhost", "localhost.", "ip6-localhost")

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether ``--host`` only accepts connections from this machine."""
    import ipaddress

    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def unauthenticated_host(settings: Settings, host: str) -> str | None:
    """Why ``serve`` must not start: a non-loopback host with no token at all (``None`` when fine)."""
    configured = any(
        secret is not None and secret.get_secret_value().strip()
        for secret in (settings.ops_token, settings.webhook_token, settings.webhook_signing_secret)
    )
    if configured or settings.allow_unauthenticated or is_loopback(host):
        return None
    return (
        f"--host {host} is reachable from other machines and no OPS_TOKEN, WEBHOOK_TOKEN or"
        " WEBHOOK_SIGNING_SECRET is set; set one, or ALLOW_UNAUTHENTICATED=true to serve people's data to anyone"
    )


def check_person_sync(settings: Settings) -> None:
    """With ``PERSON_SYNC_INTERVAL_S``, PostHog's API settings are needed: a :class:`ConfigError` naming the
    missing (or malformed) ones."""
    if settings.person_sync_interval_s is None:
        return
    from ..person_sync import persons_client

    try:
        persons_client(settings).close()
    except ConfigError as exc:
        raise ConfigError(f"PERSON_SYNC_INTERVAL_S is set, so serve reads PostHog's persons API: {exc}") from None


def check_cohort_sync(settings: Settings) -> None:
    """With cohorts configured (``COHORT_SEGMENTS``, ``COHORT_ATTRIBUTES``), ``serve`` syncs them every
    ``COHORT_SYNC_INTERVAL_S``: PostHog's API settings are needed (a :class:`ConfigError` naming what is missing
    or malformed, or a target the output cannot serve)."""
    from ..person_sync import missing_api_settings, persons_client
    from ..sources.cohorts import configured_cohorts
    from .cohorts import check_cohort_settings

    if not configured_cohorts(settings):
        return
    given = [
        name
        for name, value in (
            ("COHORT_SEGMENTS", settings.cohort_segments),
            ("COHORT_ATTRIBUTES", settings.cohort_attributes),
        )
        if value.strip()
    ]
    why = f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} set, so"
    try:
        check_cohort_settings(settings, "serve")
    except ConfigError as exc:
        if missing_api_settings(settings):
            raise ConfigError(f"{why} {exc}") from None
        raise
    try:
        persons_client(settings).close()
    except ConfigError as exc:
        raise ConfigError(f"{why} serve reads PostHog's cohorts API: {exc}") from None


@setting_options(
    CUSTOMERIO, IDENTITY, MAPPING, PACING, DELIVERY, STORE, SERVICE, HTTP, POSTHOG_API, COHORTS, plugin_config=True
)
def serve(
    flags: SettingFlags,
    host: Annotated[str, typer.Option("--host", help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port")] = 8080,
    sandbox: Sandbox = False,
    role: Annotated[str, typer.Option("--role", help="all, ingest (receivers only) or deliver (workers only)")] = "all",
    workers: Annotated[
        int,
        typer.Option(
            "--workers", min=1, max=64, help="Processes answering on the port: the first as ever, the others receivers"
        ),
    ] = 1,
) -> None:
    """Run the HTTP service: PostHog webhook + capture receivers, delivery in the background."""
    if role not in ("all", "ingest", "deliver"):
        raise fail("--role must be all, ingest or deliver", EXIT_CONFIG)
    if workers > 1 and role == "deliver":
        raise fail("--workers runs more receivers: it needs --role all or ingest", EXIT_CONFIG)
    check_port(port)

    from ..logs import configure_logging
    from ..service import create_app
    from ..service.http_timeouts import uvicorn_config

    with exits():
        settings, throwaway = sandbox_data_dir(sandbox, flags.settings())
        refusal = unauthenticated_host(settings, host)
        if refusal is not None:
            raise ConfigError(refusal)
        if not sandbox:
            settings.require_credentials()
        check_person_sync(settings)
        check_cohort_sync(settings)
        listening = listen(host, port, throwaway)
        configure_logging(settings.log_format, settings.log_level, settings.secret_values())
        runtime = Runtime(settings, sandbox=sandbox, fallback_to_us=True)
    try:
        with exits((DeliveryLockError, "{exc}")):
            application = create_app(runtime, deliver=role in ("all", "deliver"), ingest=role in ("all", "ingest"))
            if runtime.sandbox is not None:
                where = settings.posthog_customerio_data_dir
                kept = "throwaway, deleted on stop" if throwaway is not None else "kept"
                logging.getLogger(__name__).info(
                    "sandbox Customer.io at %s/_sandbox/people; data dir %s (%s; `posthog-customerio status"
                    " --data-dir %s` reads it)",
                    runtime.sandbox.url,
                    where,
                    kept,
                    shlex.quote(str(where)),
                )
            config = uvicorn_config(
                application,
                host,
                port,
                read_timeout_s=settings.http_read_timeout_s,
                keep_alive_s=settings.http_keep_alive_s,
                timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_s)),
            )
            server = server_marking_shutdown(config, application)
            with receiver_workers(settings, host, port, listening, workers) as pool:
                sockets = [listening]
                if pool is not None:
                    sockets.append(pool.first)
                    stop_serving = server.handle_exit

                    def handle_exit(sig: int, frame: Any) -> None:  # the workers stop taking requests too
                        pool.signal_stop()
                        stop_serving(sig, frame)

                    server.handle_exit = handle_exit
                run_until_signalled(server, sockets)
    finally:
        listening.close()
        runtime.close(grace_s=0)
        if throwaway is not None:
            shutil.rmtree(throwaway, ignore_errors=True)


# -- serve --workers N -------------------------------------------------------------------------------
@dataclass(slots=True)
class WorkerSpec:
    """What a receiver worker is started with (pickled to its interpreter, the socket passed along)."""

    settings: Settings
    host: str
    port: int
    #: the shared listening socket
    listening: socket.socket
    #: the first process's private UNIX socket
    first: str
    number: int
    #: the first process's pid (a worker that outlives it stops)
    parent: int


def run_worker(spec: WorkerSpec) -> None:
    """A receiver worker's life (:mod:`posthog_customerio.service.workers`): its own runtime (no sandbox, no
    delivery: it only stores), its app, uvicorn on the shared socket until signalled."""
    from ..logs import configure_logging
    from ..service import create_app
    from ..service.http_timeouts import uvicorn_config

    settings = spec.settings
    configure_logging(settings.log_format, settings.log_level, settings.secret_values())
    threading.Thread(target=_stop_when_orphaned, args=(spec.parent,), name="orphan-watch", daemon=True).start()
    runtime = Runtime(settings)
    try:
        application = create_app(runtime, deliver=False, ingest=True, forward_to=spec.first)
        config = uvicorn_config(
            application,
            spec.host,
            spec.port,
            read_timeout_s=settings.http_read_timeout_s,
            keep_alive_s=settings.http_keep_alive_s,
            timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_s)),
        )
        run_until_signalled(server_marking_shutdown(config, application), [spec.listening])
    finally:
        spec.listening.close()
        runtime.close(grace_s=0)


def _stop_when_orphaned(parent: int) -> None:
    """A worker whose first process is gone (``kill -9``) stops as if signalled: it must not keep the port."""
    while os.getppid() == parent:
        time.sleep(1.0)
    log.error("the first serve process is gone: this receiver worker stops")
    os.kill(os.getpid(), signal.SIGTERM)


class Workers:
    """The receiver workers of ``serve --workers``: started, restarted when one dies, stopped with the service."""

    def __init__(self, specs: list[WorkerSpec], first: socket.socket, grace_s: float) -> None:
        #: the first process's private UNIX socket, where the workers pass what is not theirs
        self.first = first
        self.context = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or connections copied
        self.specs = specs
        self.grace_s = grace_s
        self.processes: list[BaseProcess] = []
        self._stopping = threading.Event()
        self._watch = threading.Thread(target=self._restart_dead, name="serve-workers", daemon=True)

    def _start(self, spec: WorkerSpec) -> BaseProcess:
        process = self.context.Process(target=run_worker, args=(spec,), name=f"serve-worker-{spec.number}")
        process.start()
        return process

    def start(self) -> None:
        self.processes = [self._start(spec) for spec in self.specs]
        self._watch.start()

    def _restart_dead(self) -> None:
        while not self._stopping.wait(1.0):
            for index, process in enumerate(self.processes):
                if process.exitcode is not None and not self._stopping.is_set():
                    log.error("receiver worker %d exited (code %s): starting it again", index + 1, process.exitcode)
                    self.processes[index] = self._start(self.specs[index])

    def signal_stop(self) -> None:
        """SIGTERM to each (they finish their requests and stop), without waiting."""
        self._stopping.set()
        for process in self.processes:
            if process.exitcode is None:
                process.terminate()

    def stop(self) -> None:
        """:meth:`signal_stop`, then wait; kill what is left after the grace."""
        self.signal_stop()
        if self._watch.is_alive():
            self._watch.join(5)
        for process in self.processes:
            process.join(self.grace_s + 5)
            if process.exitcode is None:
                process.kill()
                process.join(5)


@contextlib.contextmanager
def receiver_workers(
    settings: Settings, host: str, port: int, listening: socket.socket, workers: int
) -> Iterator[Workers | None]:
    """With ``workers`` > 1: ``workers`` - 1 receiver processes answering on ``listening`` beside this one, which
    serves on their private UNIX socket (:attr:`Workers.first`) too; ``None`` (nothing started) for one."""
    if workers <= 1:
        yield None
        return
    private = Path(tempfile.mkdtemp(prefix="posthog-customerio-"))  # mode 0700: only this user reaches the socket
    path = str(private / "serve.sock")
    first = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    first.bind(path)
    specs = [WorkerSpec(settings, host, port, listening, path, number, os.getpid()) for number in range(1, workers)]
    started = Workers(specs, first, settings.shutdown_grace_s)
    try:
        started.start()
        log.info("serving with %d processes: %d receiver workers beside this one", workers, workers - 1)
        yield started
    finally:
        started.stop()
        first.close()
        shutil.rmtree(private, ignore_errors=True)
