"""How commands start, stop and end: exit codes, one-line errors, listening, signals, throwaway dirs."""

from __future__ import annotations

import contextlib
import errno
import shutil
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import typer

from ..config import ConfigError, Settings
from ..disk import disk_full_message, is_disk_full
from ..runtime import DeliveryLockError, Runtime
from .render import err

__all__ = [
    "DISK_FULL_ADVICE",
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "UNREACHABLE",
    "check_port",
    "deliver_now",
    "exits",
    "fail",
    "listen",
    "removed",
    "require_data",
    "run_until_signalled",
    "server_marking_shutdown",
]

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
EXIT_INTERRUPTED = 130

#: an error type (or types) that stops a command with exit 1, and its message (``{exc}``: the error)
Failure = tuple[type[BaseException] | tuple[type[BaseException], ...], str]
UNREACHABLE: Failure = (httpx.HTTPError, "cannot reach Customer.io: {exc}")


def fail(message: str, code: int) -> typer.Exit:
    """Print ``error: message`` on stderr; the exit to raise."""
    err.print(f"error: {message}", markup=False, soft_wrap=True)
    return typer.Exit(code)


#: what a full disk stops a command with (after ``disk full: <the database's words>``)
DISK_FULL_ADVICE = (
    "nothing already stored is lost (what is queued stays queued); free some space for the database"
    " (the data dir's disk, or OUTBOX_URL's server) and run it again"
)


@contextlib.contextmanager
def exits(*failures: Failure, config: type[BaseException] = ConfigError) -> Iterator[None]:
    """Expected errors as one line on stderr: ``config`` errors exit 2, each of ``failures`` exits 1, and so does a
    full disk (:func:`~..disk.is_disk_full`)."""
    try:
        yield
    except config as exc:
        raise fail(str(exc), EXIT_CONFIG) from None
    except tuple(one for kind, _ in failures for one in (kind if isinstance(kind, tuple) else (kind,))) as exc:
        template = next(text for kind, text in failures if isinstance(exc, kind))
        raise fail(template.format(exc=exc), EXIT_FAILED) from None
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        raise fail(f"{disk_full_message(exc)}; {DISK_FULL_ADVICE}", EXIT_FAILED) from None


@contextlib.contextmanager
def removed(directory: Path | None) -> Iterator[None]:
    """Delete ``directory`` (a ``--sandbox`` throwaway data dir) when the block ends, whatever happens."""
    try:
        yield
    finally:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def check_port(port: int) -> None:
    """A TCP port is 1..65535; anything else stops the command (exit 2, one line)."""
    if not 1 <= port <= 65535:
        raise fail(f"--port must be between 1 and 65535 (got {port})", EXIT_CONFIG)


def require_data(settings: Settings) -> None:
    """The read-only commands never create a data dir: stop (exit 1) when there is no database."""
    url = settings.outbox_url
    if url and not url.startswith("sqlite:///"):
        return  # PostgreSQL: the server says whether it exists
    path = Path(url.removeprefix("sqlite:///")) if url else settings.database_path
    if not path.is_file():
        where = f"OUTBOX_URL {path}" if url else f"{settings.posthog_customerio_data_dir.resolve()}"
        raise fail(
            f"no data in {where}: nothing has run with it yet"
            " (choose the data dir with --data-dir or POSTHOG_CUSTOMERIO_DATA_DIR; without one, serve --sandbox"
            " and send --sandbox use a throwaway data dir, which serve --sandbox logs when it starts)",
            EXIT_FAILED,
        )


def deliver_now(runtime: Runtime, timeout: float | None) -> bool | None:
    """Deliver what is queued; ``None`` when a running service holds the delivery lock."""
    try:
        deliverer = runtime.deliverer()
    except DeliveryLockError:
        return None
    runtime.outbox.input_finished()  # nothing is ingested here: nothing to hold for
    deliverer.start()
    finished = deliverer.wait_until_empty(timeout)
    deliverer.stop()
    return finished


def listen(host: str, port: int, throwaway: Path | None) -> socket.socket:
    """The bound listening socket for ``serve``, or one line and exit 1 (a busy port, an address not here)
    before anything starts."""
    name = host.strip().strip("[]")
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in name else socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror}", EXIT_FAILED) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((name, port))
    except OSError as exc:
        sock.close()
        if throwaway is not None:
            shutil.rmtree(throwaway, ignore_errors=True)
        reason = "the port is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise fail(f"cannot listen on {host}:{port}: {reason}", EXIT_FAILED) from None
    return sock


def server_marking_shutdown(config: Any, application: Any) -> Any:
    """A uvicorn server that notes when the stop signal came (the whole shutdown then fits the grace)."""
    import uvicorn

    from ..service.app import mark_shutdown

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            mark_shutdown(application)
            super().handle_exit(sig, frame)

    return Server(config)


def run_until_signalled(server: Any, sockets: list[socket.socket] | None = None) -> None:
    """Run uvicorn; SIGTERM/SIGINT shut it down gracefully and the command exits 0.

    uvicorn re-raises the signal it handled once it has shut down; with our own
    handler installed first, that re-raise lands here instead of killing the
    process before the outbox is closed cleanly.
    """
    received: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda number, _frame: received.append(number))
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        server.run(sockets=sockets)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def stop_on_signals(stop: Any) -> Iterator[None]:
    """While the block runs, SIGTERM/SIGINT set ``stop`` (a ``threading.Event``) instead of ending the process."""
    previous = {sig: signal.signal(sig, lambda _number, _frame: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
