"""A full disk is recognised whatever says it (SQLite, the OS, PostgreSQL), and told in one line."""

from __future__ import annotations

import errno
import sqlite3

from posthog_customerio.disk import DiskFull, disk_full_message, is_disk_full


class _Diag:
    message_primary = 'could not extend file "base/16384/16385": No space left on device'


class _PgError(Exception):
    """What psycopg raises for SQLSTATE 53100 (its detail lines may quote a row: never shown)."""

    sqlstate = "53100"
    diag = _Diag()

    def __str__(self) -> str:
        return f"{_Diag.message_primary}\nHINT: Check free disk space.\nDETAIL: a value"


def test_each_source_of_a_full_disk_is_recognised() -> None:
    assert is_disk_full(sqlite3.OperationalError("database or disk is full"))
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(_PgError())
    assert is_disk_full(DiskFull("disk full: database or disk is full (OperationalError)"))
    try:  # raised from one: the chain is followed
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as exc:
            raise RuntimeError("ingestion failed") from exc
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)
    for other in (sqlite3.OperationalError("database is locked"), OSError(errno.EACCES, "denied"), ValueError("x")):
        assert not is_disk_full(other)


def test_the_message_is_one_line_without_detail() -> None:
    assert disk_full_message(sqlite3.OperationalError("database or disk is full")) == (
        "disk full: database or disk is full (OperationalError)"
    )
    assert disk_full_message(OSError(errno.ENOSPC, "No space left on device")) == (
        "disk full: No space left on device (OSError)"
    )
    message = disk_full_message(_PgError())
    assert message == f"disk full: {_Diag.message_primary} (_PgError)"
    assert "\n" not in message and "a value" not in message
