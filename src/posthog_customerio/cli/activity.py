"""Customer.io's message activity on its way to PostHog: ``activity`` (what waits, and why) and ``activity-retry``."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from ..config import STORE
from ..runtime import Runtime
from .lifecycle import EXIT_FAILED, exits, fail, require_data
from .options import SettingFlags, setting_options
from .render import out, show, show_json

__all__ = ["activity", "activity_lines", "activity_retry"]


@setting_options(STORE)
def activity(flags: SettingFlags, as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """Customer.io's message activity (reporting webhooks) for PostHog: how much is queued, captured, unplaced (no
    known person has its profile yet) or dead (PostHog refused it), and the waiting ones with their reason."""
    from ..activity import activity_report

    with exits():
        settings = flags.settings()
        require_data(settings)
        with Runtime(settings) as runtime:
            report = activity_report(runtime, listed=100)
    if as_json:
        show_json(report)
        return
    show("\n".join(activity_lines(report, every=True)))


@setting_options(STORE)
def activity_retry(
    flags: SettingFlags,
    event_ids: Annotated[
        list[str] | None, typer.Argument(help="Customer.io event_ids (default: all)", show_default=False)
    ] = None,
    unplaced: Annotated[bool, typer.Option("--unplaced", help="Only unplaced activity")] = False,
    dead: Annotated[bool, typer.Option("--dead", help="Only activity PostHog refused")] = False,
) -> None:
    """Queue unplaced and dead activity again: the running service places it (on the person known now) and
    captures it into PostHog."""
    from ..activity import requeue

    states = [state for state, chosen in (("unplaced", unplaced), ("dead", dead)) if chosen] or ["unplaced", "dead"]
    with exits():
        settings = flags.settings()
        require_data(settings)
        with Runtime(settings) as runtime:
            count = requeue(runtime.db, states, event_ids or None)
    out.print(f"re-queued {count} activities")
    if event_ids and count < len(set(event_ids)):
        raise fail(f"{len(set(event_ids)) - count} of the event_ids are not {' or '.join(states)}", EXIT_FAILED)


def activity_lines(report: dict[str, Any] | None, every: bool = False) -> list[str]:
    """``customerio_activity`` of the status report as text (nothing when no activity was ever received)."""
    if not report or not (report["totals"]["stored"] or report["queued"] or report["unplaced"] or report["dead"]):
        return [] if not every else ["customerio activity none received"]
    totals = report["totals"]
    lines = [
        f"customerio activity {report['queued']} queued, {report['unplaced']} unplaced, {report['dead']} dead;"
        f" {totals['stored']} received ({totals['duplicates']} retries), {totals['captured']} captured into PostHog,"
        f" {totals['posthog_errors']} PostHog errors"
    ]
    waiting = report.get("waiting") or []
    for row in waiting if every else waiting[:5]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["received_at"]))
        lines.append(
            f"  {row['state']} {row['event_id']} {row['object_type']} {row['metric']} {when}: {row['last_error']}"
        )
    if report["unplaced"] or report["dead"]:
        lines.append("  queue them again with: posthog-customerio activity-retry")
    return lines
