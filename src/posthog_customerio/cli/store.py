"""What is in the data dir: ``status``, ``person``, ``dead-letters``, ``retry-dead-letters``, ``compact``."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from ..config import IDENTITY, STORE
from ..runtime import DeliveryLockError, Runtime
from ..storage import SqliteStorage, size_text
from .lifecycle import EXIT_FAILED, exits, fail, require_data
from .options import SettingFlags, setting_options
from .render import dead_letter_line, out, show, show_json, status_text


@setting_options(STORE)
def status(flags: SettingFlags, as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """Show queue depth, dead letters and the service's last figures, from the data dir."""
    from ..status import offline_status

    with exits():
        settings = flags.settings()
        require_data(settings)
        with Runtime(settings) as runtime:
            report = offline_status(runtime)
    if as_json:
        show_json(report)
        return
    from .activity import activity_lines

    lines = [*cohort_sync_lines(report.get("cohort_sync")), *activity_lines(report.get("customerio_activity"))]
    show("\n".join([status_text(report), *lines]))


def cohort_sync_lines(sync: dict[str, Any] | None) -> list[str]:
    """``cohort_sync`` of the status report: the schedule's passes (when a service syncs cohorts), then one line
    per cohort as the database keeps it (none when no cohort was ever synced)."""
    if not sync:
        return []
    cohorts = sync.get("cohorts") or []
    if sync.get("interval_s") is not None:
        passes = sync.get("passes") or {}
        lines = [
            f"cohort sync        every {sync['interval_s']:g}s; {passes.get('ok', 0)} passes ok,"
            f" {passes.get('failed', 0)} failed, {passes.get('skipped', 0)} skipped (another process's turn);"
            f" +{sync.get('adds', 0)} members added, -{sync.get('removes', 0)} removed"
            + ("; running now" if sync.get("running") else "")
        ]
        if sync.get("last_error"):
            lines.append(f"  last error       {_when(sync.get('last_error_at'))} {sync['last_error']}")
    else:
        lines = [f"cohorts            {len(cohorts)} synced (no service is syncing them now)"]
    lines += [cohort_line(cohort) for cohort in cohorts]
    return lines


def cohort_line(cohort: dict[str, Any]) -> str:
    """``cohort 7 (Power users) -> segment 12: 120 members; last pass <time> ok, +3 -1; error: ...`` (the last
    pass's adds and removals; members: what the database holds now)."""
    title = f"cohort {cohort['cohort_id']}" + (f" ({cohort['name']})" if cohort.get("name") else "")
    last, members = cohort.get("last_pass") or {}, cohort.get("members") or {}
    targets = ", ".join(
        f"{target}: {members[target]:,} members" if target in members else target for target in cohort["targets"]
    )
    line = f"  {title} -> {targets or 'no target yet'}"
    if last:
        when, outcome = _when(last.get("ended_at") or last.get("started_at")), last.get("outcome")
        added, removed = sum((last.get("added") or {}).values()), sum((last.get("removed") or {}).values())
        line += f"; last pass {when} {outcome}, +{added} -{removed}"
    if cohort.get("phase") not in (None, "idle"):
        line += f"; pass {cohort['pass']} {cohort['phase']} (an interrupted pass is resumed by the next one)"
    if cohort.get("last_error"):
        line += f"; error: {cohort['last_error']}"
    return line


def _when(at: float | None) -> str:
    return "never" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


@setting_options(STORE, IDENTITY)
def person(
    person_id: Annotated[str, typer.Argument(help="A distinct_id of the person, or their email")],
    flags: SettingFlags,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """What did we send for this person? Their distinct_ids and merges, the identifier Customer.io knows
    them by, attributes last sent (with event times), queued operations, recent deliveries, dead letters."""
    from ..people import lookup_person, person_text

    with exits():
        settings = flags.settings()
        require_data(settings)
        with Runtime(settings) as runtime:
            record = lookup_person(runtime, person_id)
    if record is None:
        raise fail(f"no person {person_id!r} (neither a distinct_id nor an email we know)", EXIT_FAILED)
    if as_json:
        show_json(record)
        return
    show(person_text(record))


@setting_options(STORE)
def dead_letters(
    flags: SettingFlags,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines")] = False,
    limit: Annotated[int | None, typer.Option("--limit", help="Show at most this many")] = None,
) -> None:
    """List dead-lettered operations with the reason Customer.io gave."""
    with exits():
        settings = flags.settings()
        require_data(settings)
        with Runtime(settings) as runtime:
            letters = runtime.outbox.dead_letters(limit)
    if as_json:
        for letter in letters:
            typer.echo(json.dumps(letter.as_dict()))
        return
    if not letters:
        out.print("no dead letters")
        return
    for letter in letters:
        show(dead_letter_line(letter))
    out.print(f"{len(letters)} dead letters; re-queue them with: posthog-customerio retry-dead-letters")


@setting_options(STORE)
def retry_dead_letters(
    flags: SettingFlags,
    ids: Annotated[list[int] | None, typer.Argument(help="Dead-letter ids (default: all)", show_default=False)] = None,
) -> None:
    """Re-queue dead-lettered operations (delivered by the next send or the running server)."""
    with exits():
        settings = flags.settings()
        require_data(settings)
        with Runtime(settings) as runtime:
            requeued = runtime.outbox.requeue_dead_letters(ids or None)
    out.print(f"re-queued {len(requeued)} operations")
    unknown = sorted(set(ids or ()) - set(requeued))
    if unknown:
        listed = ", ".join(f"#{number}" for number in unknown)
        raise fail(f"no dead letter {listed} (see posthog-customerio dead-letters)", EXIT_FAILED)


@setting_options(STORE)
def compact(flags: SettingFlags) -> None:
    """Give the space freed in the SQLite file back to the filesystem now, in one VACUUM (it also turns a file made
    before incremental auto-vacuum to it). It rewrites the live data and holds writers meanwhile: run it while no
    service delivers from the data dir. With PostgreSQL it shows the sizes (autovacuum gives the space back)."""
    with exits((DeliveryLockError, "{exc}: compact holds every writer while it runs")):
        settings = flags.settings()
        require_data(settings)
        with Runtime(settings) as runtime:
            db, before = runtime.db, runtime.db.space()
            if not isinstance(db, SqliteStorage):
                show(
                    f"PostgreSQL: the tables take {size_text(before.database_bytes)}, the outbox"
                    f" {size_text(before.outbox_bytes)}; its autovacuum gives deleted rows' space back"
                    " (docs/operations.md, Disk): nothing to do here"
                )
                return
            lock = db.take_delivery_lock(settings.posthog_customerio_data_dir)  # no deliverer meanwhile
            try:
                db.vacuum()
            finally:
                if lock is not None:
                    lock.close()
            after = db.space()
    mode = f"auto-vacuum {after.auto_vacuum}"
    if before.auto_vacuum != after.auto_vacuum:
        mode = f"auto-vacuum {before.auto_vacuum} -> {after.auto_vacuum}: from now on freed space is given back as"
        mode += " delivery runs"
    show(f"compacted {db.path}: {size_text(before.database_bytes)} -> {size_text(after.database_bytes)} ({mode})")
