"""Everything the commands print: the consoles, the summaries, the status and sandbox views."""

from __future__ import annotations

import json
import time
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from ..sources import ParsedItem
from ..sources.files import FileProgress
from ..storage import size_text

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

#: invalid input lines shown by ``send`` (the rest are counted)
SHOWN_ERRORS = 20


def show(text: str) -> None:
    """Print plain text on stdout (no markup, long lines kept whole)."""
    out.print(text, markup=False, soft_wrap=True)


def show_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout."""
    typer.echo(json.dumps(value, indent=2))


# -- status ------------------------------------------------------------------------------------
def status_text(report: dict[str, Any]) -> str:
    outbox, delivery, ingest = report["outbox"], report["delivery"] or {}, report["ingest"] or {}
    service = report.get("service")
    lines = [
        f"outbox             {outbox['depth']} queued, oldest {outbox['oldest_age_s']:.0f}s",
        f"dead letters       {outbox['dead_letters']}",
        f"people known       {report['persons']}",
    ]
    lines += work_lines(report)
    lines += disk_lines(report.get("disk"))
    lines += bound_lines(report.get("outbox_bound"))
    if service:
        rates = report.get("throughput") or {}
        lines += [
            f"service snapshot   {service['snapshot_age_s']:.0f}s ago, delivery {delivery.get('state')}",
            f"throughput         {rates.get('events_per_s', 0)} events/s in,"
            f" {rates.get('operations_delivered_per_s', 0)} operations/s delivered",
            # like send's "events read": every event that came, the invalid ones included
            f"received           {ingest.get('events_received', 0) + ingest.get('events_invalid', 0)} events"
            f" ({ingest.get('events_invalid', 0)} invalid)",
            f"delivered          {delivery.get('delivered', 0)} operations in {delivery.get('requests', 0)} requests",
        ]
        if delivery.get("auth_error"):
            lines.append(f"PAUSED             {delivery['auth_error']}")
        lines += person_sync_lines(report.get("person_sync"))
        lines += replica_lines(report.get("replicas") or [])
    else:
        lines.append("service            no snapshot (the service has not run with this data dir)")
    for error in (report.get("recent_errors") or [])[-5:]:
        lines.append(f"error              {time.strftime('%H:%M:%S', time.localtime(error['at']))} {error['message']}")
    for letter in report["dead_letters"][:10]:
        lines.append(
            f"  #{letter['id']} {letter['person_key']} {letter['action']} {letter['name'] or ''}: {letter['reason']}"
        )
    return "\n".join(lines)


def disk_lines(disk: dict[str, Any] | None) -> list[str]:
    """The database's size on disk and the room left; ``DISK FULL`` first when there is none (missing from an
    older report)."""
    if not disk or disk.get("database_bytes") is None:
        return []
    lines = []
    if disk.get("problem"):
        lines.append(
            f"DISK FULL          {disk['problem']}: receivers answer 503 and delivery waits until there is room;"
            " nothing stored is lost"
        )
    if disk.get("outbox_bytes") is not None:  # PostgreSQL
        text = f"database {size_text(disk['database_bytes'])}, the outbox {size_text(disk['outbox_bytes'])}"
    else:
        text = (
            f"database {size_text(disk['database_bytes'])} (WAL {size_text(disk.get('wal_bytes'))},"
            f" {size_text(disk.get('reclaimable_bytes'))} free pages); {size_text(disk.get('free_bytes'))} free"
        )
        if disk.get("auto_vacuum") == "none":
            text += "; an older file: freed space is not given back until `posthog-customerio compact` converts it"
    return [*lines, f"disk               {text}"]


def work_lines(report: dict[str, Any]) -> list[str]:
    """Person work and the anonymous backlog, apart (either may be missing from an older snapshot)."""
    lines = []
    work, anonymous = report.get("person_work"), report.get("anonymous")
    if work:
        p50, p99 = work.get("latency_p50_s"), work.get("latency_p99_s")
        latency = "no delivery seen" if p99 is None else f"p50 {p50:.3f}s, p99 {p99:.3f}s"
        lines.append(f"person work        {work['depth']} queued; latency {latency} (last {work['window_s']:.0f}s)")
    if anonymous:
        expired = anonymous.get("expired") or {}
        lines.append(
            f"anonymous events   {anonymous['backlog']} queued, oldest {anonymous['oldest_age_s']:.0f}s;"
            f" {anonymous.get('adopted', 0)} adopted; expired {expired.get('age', 0)} by age,"
            f" {expired.get('count', 0)} by count"
        )
    return lines


def bound_lines(bound: dict[str, Any] | None) -> list[str]:
    """``OUTBOX_MAX_QUEUED``: the bound and what it counts; the sources that waited at it and the requests refused
    (the service's, from its heartbeats; none from an older snapshot)."""
    if not bound:
        return []
    queued, limit, wait_at = bound["queued"], bound["max_queued"], bound.get("wait_at") or bound["max_queued"]
    state = "FULL: the receivers answer 503" if bound.get("full") else "sources wait" if queued >= wait_at else "room"
    lines = [
        f"outbox bound       {queued} of {limit} operations of person work (OUTBOX_MAX_QUEUED;"
        f" sources wait at {wait_at}): {state}"
    ]
    waited = bound.get("waited_s") or {}
    waits = [
        f"{source} {times} times, {float(waited.get(source) or 0):.1f}s"
        + (" (waiting now)" if source in (bound.get("waiting") or ()) else "")
        for source, times in sorted((bound.get("waits") or {}).items())
    ]
    if waits:
        lines.append(f"  sources waited   {'; '.join(waits)}")
    refused = bound.get("refused") or {}
    if refused:
        lines.append(
            f"  refused (503)    {', '.join(f'{source} {count}' for source, count in sorted(refused.items()))}"
        )
    return lines


def person_sync_lines(sync: dict[str, Any] | None) -> list[str]:
    """``PERSON_SYNC_INTERVAL_S``: the passes (all replicas'), the last one, the last error (none when not syncing)."""
    if not sync:
        return []
    passes = sync.get("passes") or {}
    lines = [
        f"person sync        every {sync['interval_s']:g}s; {passes.get('ok', 0)} passes ok,"
        f" {passes.get('failed', 0)} failed, {passes.get('skipped', 0)} skipped (another replica's turn);"
        f" {sync.get('persons_read', 0)} persons read, {sync.get('operations_enqueued', 0)} operations"
        + ("; running now" if sync.get("running") else "")
    ]
    last = sync.get("last_pass")
    if last:
        at = time.strftime("%H:%M:%S", time.localtime(last["started_at"]))
        lines.append(
            f"  last pass        {at} {last['outcome']}: {last['persons_read']} persons,"
            f" {last['operations_enqueued']} operations in {last.get('duration_s') or 0:.1f}s"
        )
    if sync.get("last_error"):
        lines.append(f"  last error       {sync['last_error']}")
    return lines


def replica_lines(replicas: list[dict[str, Any]]) -> list[str]:
    """``replicas  N live``, then one line per replica when there are several (figures summed above)."""
    live = sum(1 for replica in replicas if replica["live"])
    lines = [f"replicas           {live} live ({len(replicas)} known; figures above sum those counted)"]
    if len(replicas) > 1:
        for replica in replicas:
            state = "live" if replica["live"] else f"last heartbeat {replica['age_s']:.0f}s ago"
            state += ", stopped" if replica.get("stopped") else ""
            lines.append(
                f"  {replica['id']}  {state}, delivery {replica['delivery']},"
                f" received {replica['events_received']}, delivered {replica['operations_delivered']}"
            )
    return lines


def dead_letter_line(letter: Any) -> str:
    """``#id person action name: reason`` of one dead letter."""
    payload = json.loads(letter.payload)
    what = f"{payload.get('action')} {payload.get('name', '')}".strip()
    return f"#{letter.id} {letter.person_key} {what}: {letter.reason}"


def describe_identifiers(identifiers: list[dict[str, str]]) -> str:
    return ", ".join(f"{kind} {value}" for item in identifiers for kind, value in item.items())


# -- send ----------------------------------------------------------------------------------------
def progress() -> Progress:
    """The progress bars of ``send`` on stderr (only on a terminal)."""
    return Progress(
        TextColumn("{task.description:>10}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


def reading_progress(where: FileProgress, total: int | None, files: bool) -> tuple[int, int | None, str]:
    """The reading bar's completed, total and detail: characters of a stream out of its size in bytes (``total``,
    ``None`` when unknown), or, with ``files``, data files of an export read out of their number, and the events
    stored so far. Once all is read the bar is full."""
    if files:
        detail = f"{where.read:,}/{total or 0:,} files, {where.events:,} events stored"
    else:
        detail = f"{where.events:,} events"
    if where.done_reading:
        done = total or where.read
        return done, done, detail
    return where.read, total, detail


def delivering_progress(where: FileProgress) -> tuple[int | None, int]:
    """The delivering bar's total and completed: no total (no percentage) while reading adds operations,
    so the percentage shown never goes backwards; then all operations, delivered ones capped at it."""
    if not where.done_reading:
        return None, where.delivered
    return where.operations, min(where.delivered, where.operations)


def report_invalid(item: ParsedItem, count: int) -> None:
    if count <= SHOWN_ERRORS:
        err.print(f"skipped {item.location}: {item.error}", markup=False, soft_wrap=True)
    elif count == SHOWN_ERRORS + 1:
        err.print("(more invalid lines are counted but not shown)", markup=False)


def sent_line(summary: dict[str, Any]) -> str:
    """``operations sent  N in R requests``, and the failed requests whose operations were put back."""
    line = f"operations sent    {summary['operations_delivered']} in {summary['requests']} requests"
    failed = sum(count for status, count in summary["requests_by_status"].items() if not status.startswith("2"))
    if failed or summary["retries"]:
        line += f" ({failed} failed; {summary['retries']} operation retries)"
    return line


def waits_lines(summary: dict[str, Any]) -> list[str]:
    """A job's waits for room in the outbox (``outbox_waits``): none when it never waited."""
    waits = summary.get("outbox_waits") or {}
    if not waits.get("times"):
        return []
    line = f"reading waited     {waits['times']} times, {waits['seconds']:.1f}s for delivery (OUTBOX_MAX_QUEUED)"
    if waits.get("timed_out"):
        line += "; timed out: the rest of the input was not read"
    return [line]


def print_send_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        show_json(summary)
        return
    skipped = summary["skipped"]
    skipped_text = ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items())) or "none"
    count = summary.get("duplicates", 0)
    duplicates = f", {count} duplicate uuid{'s' if count != 1 else ''}" if count else ""
    lines = [
        f"events read        {summary['read']} ({summary['invalid']} invalid{duplicates})",
        f"skipped by filter  {sum(skipped.values())} ({skipped_text})",
        f"operations         {summary['operations_enqueued']} enqueued"
        + (f" (+{summary['backlog_before']} already queued)" if summary["backlog_before"] else ""),
        sent_line(summary),
        f"dead-lettered      {summary['dead_lettered']}",
    ]
    lines += waits_lines(summary)
    if summary["queued"]:
        lines.append(f"still queued       {summary['queued']} (timed out; run send again to deliver)")
    lines.append(f"time               {summary['seconds']}s")
    if "sandbox" in summary:
        lines += sandbox_lines(summary["sandbox"])
    show("\n".join(lines))


def consume_text(summary: dict[str, Any]) -> str:
    text = (
        f"messages read      {summary.get('messages', 0)} ({summary.get('invalid', 0)} invalid, skipped)\n"
        f"events stored      {summary.get('events', 0)}\n"
        f"offsets committed  {summary.get('commits', 0)} commits ({summary.get('commit_failures', 0)} failed)\n"
        f"operations sent    {summary['operations_delivered']}, still queued {summary['queued']}"
    )
    if summary.get("paused"):
        text += (
            f"\npaused             {summary['paused']} times, {summary.get('paused_s', 0):.1f}s"
            " for delivery (OUTBOX_MAX_QUEUED)"
        )
    return text


# -- what the sandbox received (send --sandbox) --------------------------------------------------------
def sandbox_summary(sandbox: Any) -> dict[str, Any]:
    """What the sandbox holds: every identified person with attributes and events, and the
    visitors who never identified (their events stay anonymous events)."""
    if sandbox.pipelines.stats().get("requests"):  # CUSTOMERIO_API=pipelines: its Pipelines side
        return _pipelines_sandbox_summary(sandbox)
    state = sandbox.state
    stats = state.stats()
    visitors = {event["anonymous_id"] for event in state.anonymous_events() if event.get("person") is None}
    people = []
    for summary in state.people():
        person = state.person(summary["id"] or summary["email"]) or summary
        events = sorted(person.get("events") or [], key=lambda event: event.get("timestamp") or 0)
        people.append(
            {
                "id": person.get("id"),
                "email": person.get("email"),
                "attributes": person.get("attributes") or {},
                "events": [{"name": _event_label(event), "anonymous": _was_anonymous(event)} for event in events],
                "_events": events,
            }
        )
    people.sort(key=lambda p: (min((e["timestamp"] or 0 for e in p.pop("_events")), default=0), str(p["id"])))
    return {
        "people": len(people),
        "visitors_never_identified": len(visitors),
        "events": stats.get("events", 0),
        "anonymous_events": stats.get("anonymous_events", 0),
        "url": sandbox.url,
        "identified": people,
    }


def _pipelines_sandbox_summary(sandbox: Any) -> dict[str, Any]:
    """:func:`sandbox_summary` of the sandbox's Pipelines workspace (same shape)."""
    state = sandbox.pipelines
    people = []
    for person in state.people():
        events = sorted(
            state.events(person["userId"] or person["email"]),  # a person addressed by email has no id
            key=lambda event: str(event.get("timestamp") or ""),
        )
        people.append(
            {
                "id": person["userId"],
                "email": person["email"],
                "attributes": person["attributes"],
                "events": [
                    {
                        "name": _event_label(event),
                        "anonymous": bool(event.get("anonymousId")) or _was_anonymous({"data": event["properties"]}),
                    }
                    for event in events
                ],
            }
        )
    anonymous = state.anonymous_events()
    return {
        "people": len(people),
        "visitors_never_identified": len({event["anonymousId"] for event in anonymous}),
        "events": len(state.events()),
        "anonymous_events": len(anonymous),
        "url": sandbox.url,
        "identified": people,
    }


def _event_label(event: dict[str, Any]) -> str:
    """``signed_up``, or a page / screen by its path."""
    name = str(event.get("name") or "")
    if event.get("type") == "page":
        from urllib.parse import urlsplit

        return "page " + (urlsplit(name).path or name)
    return f"screen {name}" if event.get("type") == "screen" else name


def _was_anonymous(event: dict[str, Any]) -> bool:
    """Sent before the person identified (attached by Customer.io or adopted on identify)."""
    data = event.get("data") or {}
    return (
        bool(event.get("anonymous_id"))
        or data.get("$is_identified") is False
        or data.get("$process_person_profile") is False
    )


def sandbox_lines(box: dict[str, Any], shown: int = 25) -> list[str]:
    """The people the sandbox received, with their attributes and events."""
    browsing = sum(event["anonymous"] for person in box["identified"] for event in person["events"])
    lines = [
        f"sandbox            {box['people']} people identified,"
        f" {box['visitors_never_identified']} visitors never identified"
        f" ({box['anonymous_events']} anonymous events)",
        f"                   {box['events']} events on the identified people,"
        f" {browsing} of them (*) from their anonymous browsing before they identified",
    ]
    for person in box["identified"][:shown]:
        attributes = ", ".join(f"{key}={_short(value)}" for key, value in person["attributes"].items()) or "-"
        lines += [
            f"  {person['id'] or '-'}  {person['email'] or '-'}",
            f"    attributes  {attributes}",
            f"    events      {_event_list(person['events'])}",
        ]
    if len(box["identified"]) > shown:
        lines.append(f"  … and {len(box['identified']) - shown} more (see --json, or {box['url']}/_sandbox/people)")
    return lines


def _short(value: Any, limit: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _event_list(events: list[dict[str, Any]]) -> str:
    """``7: $identify, page /signup*, signed_up, page /dashboard ×2`` (repeats folded)."""
    runs: list[list[Any]] = []
    for event in events:
        label = event["name"] + ("*" if event["anonymous"] else "")
        if runs and runs[-1][0] == label:
            runs[-1][1] += 1
        else:
            runs.append([label, 1])
    listed = ", ".join(label if count == 1 else f"{label} ×{count}" for label, count in runs)
    return f"{len(events)}: {listed}" if events else "0"
