"""The data directory's disk: the space the outbox freed given back, and a full disk said in one line.

:class:`SpaceKeeper` runs wherever delivery runs (:meth:`~.runtime.Runtime.deliverer`): once at start it
turns an older SQLite file to incremental auto-vacuum (:meth:`~.storage.Storage.enable_compaction`), then
about every second it gives back a bounded slice of the file's free pages and truncates the WAL
(:meth:`~.storage.Storage.compact`: short steps, the database lock released between them, so delivery goes
on); when the process stops, one last pass. With PostgreSQL both do nothing: its autovacuum does this job
(``docs/operations.md``, *Disk*).

A full disk (SQLite ``SQLITE_FULL``, ``ENOSPC``, PostgreSQL SQLSTATE ``53100``) is recognised by
:func:`is_disk_full` wherever a write fails, and told as ``disk full: ...`` (:func:`disk_full_message`):
the receivers answer ``503`` with it, ``/readyz`` lists it, delivery pauses until space returns
(:class:`~.delivery.Deliverer`), ``send`` stops with it (exit 1), ``status`` shows it. A failed write
commits nothing, and what was committed before stays: nothing acknowledged is lost.
"""

from __future__ import annotations

import errno
import logging
import threading
import time

from .storage import Storage, size_text

__all__ = ["DiskFull", "SpaceKeeper", "disk_full_message", "is_disk_full", "size_text"]

log = logging.getLogger(__name__)

#: SQLite's result code for "database or disk is full"
_SQLITE_FULL = 13
#: PostgreSQL's SQLSTATE ``disk_full``
_PG_DISK_FULL = "53100"
#: ``OSError`` numbers of a full filesystem (or quota)
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFull(RuntimeError):
    """The outbox could not take a write because its disk is full (a batch job stops with this)."""


def _full(error: BaseException) -> bool:
    if isinstance(error, DiskFull):
        return True
    if getattr(error, "sqlite_errorcode", None) == _SQLITE_FULL or "database or disk is full" in str(error):
        return True
    if getattr(error, "sqlstate", None) == _PG_DISK_FULL:
        return True
    return isinstance(error, OSError) and error.errno in _FULL_ERRNOS


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) says the database's disk is full."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if _full(current):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def disk_full_message(error: BaseException) -> str:
    """``disk full: <the database's words> (<error class>)``, one line (PostgreSQL's primary message only)."""
    if isinstance(error, DiskFull):
        return str(error)
    diag = getattr(error, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    words = (primary or (error.strerror if isinstance(error, OSError) else None) or str(error)).splitlines()
    return f"disk full: {(words[0] if words else '')[:200]} ({type(error).__name__})"


class SpaceKeeper:
    """Gives back the database's free space (SQLite) in bounded passes: one every ``interval_s`` in a daemon
    thread, each at most ``budget_s`` of database time, so delivery never waits long behind it."""

    def __init__(self, db: Storage, interval_s: float = 1.0, budget_s: float = 0.2) -> None:
        self.db = db
        self.interval_s = interval_s
        self.budget_s = budget_s
        #: bytes this process gave back to the filesystem
        self.given_back = 0
        #: the last pass's error (logged once until a pass succeeds: a full disk would repeat it every second)
        self._failing: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Turn an older SQLite file to incremental auto-vacuum (once; logged), then pass every ``interval_s``."""
        try:
            outcome = self.db.enable_compaction()
        except Exception as exc:  # a full disk, a busy file: the file stays as it was, delivery starts anyway
            outcome = f"could not turn on incremental auto-vacuum: {type(exc).__name__}: {exc}"
        if outcome:
            log.warning("%s", outcome)
        self._thread = threading.Thread(target=self._run, name="space-keeper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.run_pass(self.budget_s)

    def run_pass(self, budget_s: float) -> int:
        """One pass of at most ``budget_s``: the bytes given back (0 after an error, logged: the next pass retries)."""
        try:
            freed = self.db.compact(budget_s)
        except Exception as exc:  # a full disk or a busy file must not stop the keeper
            failing = disk_full_message(exc) if is_disk_full(exc) else f"{type(exc).__name__}: {exc}"
            if failing != self._failing:
                log.warning("could not give back free database pages: %s (will retry)", failing)
            self._failing = failing
            return 0
        self._failing = None
        self.given_back += freed
        if freed >= 64 * 2**20:
            log.info("gave back %s of free database pages to the filesystem", size_text(freed))
        return freed

    def stop(self, final_budget_s: float = 5.0, timeout: float = 5.0) -> None:
        """Stop the thread (a pass under way finishes first), then one last pass of at most ``final_budget_s``
        (after ``send`` drained the outbox, most of the file is free: this gives it back before exiting)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if final_budget_s > 0:
            deadline = time.monotonic() + final_budget_s
            while (left := deadline - time.monotonic()) > 0 and self.run_pass(left) > 0:
                pass
