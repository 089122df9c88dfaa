"""``sync-persons``: bring Customer.io up to date with every person of a PostHog project (its API, or export files)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from ..config import CUSTOMERIO, DELIVERY, IDENTITY, MAPPING, PACING, POSTHOG_API, STORE, ConfigError, Settings
from ..output.base import AuthError
from ..person_sync import missing_api_settings, persons_client
from ..runtime import DeliveryLockError, Runtime
from ..sources.batch_exports import BatchExportError, MissingExtra, export_files, require_extras
from ..sources.persons import CHECKPOINT_FILE, Batches, SyncProgress, api_batches, export_batches, sync_persons
from ..sources.posthog_api import (
    CheckpointError,
    PersonsCheckpoint,
    PostHogApiError,
    PostHogAuthError,
    PostHogPersonsClient,
)
from .lifecycle import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UNREACHABLE, exits, removed
from .options import AsJson, DeliveryTimeout, Sandbox, SettingFlags, sandbox_data_dir, setting_options
from .render import err, sandbox_lines, sandbox_summary, sent_line, show, show_json, waits_lines

__all__ = ["sync_persons_command"]


@setting_options(CUSTOMERIO, IDENTITY, MAPPING, PACING, DELIVERY, STORE, POSTHOG_API, plugin_config=True)
def sync_persons_command(
    flags: SettingFlags,
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Read a PostHog persons export (a file, a directory or a manifest.json) instead of the API",
            show_default=False,
        ),
    ] = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Start the API read over instead of resuming an interrupted one")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be sent (counts and examples); send nothing")
    ] = False,
    sandbox: Sandbox = False,
    timeout: DeliveryTimeout = None,
    as_json: AsJson = False,
) -> None:
    """Bring Customer.io up to date with every person of a PostHog project.

    Reads PostHog's persons API (POSTHOG_API_HOST, POSTHOG_PROJECT_ID, POSTHOG_PERSONAL_API_KEY), resuming an
    interrupted run, or a persons export (--from). Exit 0 when nothing was dead-lettered, 1 otherwise (or when
    PostHog or delivery stopped the run), 2 for bad configuration, 130 on Ctrl-C.
    """
    with exits():
        settings, throwaway = sandbox_data_dir(sandbox, flags.settings())
        if source is None:
            client = _client(settings)
        else:
            _check_path(source, restart)
    with removed(throwaway):
        try:
            with (
                exits(
                    ((AuthError, DeliveryLockError), "{exc} (everything not delivered stays queued in the outbox)"),
                    (PostHogAuthError, "PostHog refused the key: {exc}"),
                    (PostHogApiError, "{exc} (run sync-persons again to resume)"),
                    (BatchExportError, "{exc}"),
                    UNREACHABLE,
                ),
                Runtime(settings, sandbox=sandbox) as runtime,
            ):
                with exits((CheckpointError, "{exc} (or run sync-persons --restart)")):
                    batches = _batches(runtime, settings, source, restart, dry_run, client if source is None else None)
                try:
                    summary = _run(runtime, batches, timeout, dry_run)
                except KeyboardInterrupt:
                    raise _interrupted(runtime, source, throwaway is not None) from None
                if sandbox and runtime.sandbox is not None and not dry_run:
                    summary["sandbox"] = sandbox_summary(runtime.sandbox)
        finally:
            if source is None:
                client.close()
    _print_summary(summary, as_json)
    code = EXIT_OK if summary["dead_lettered"] == 0 and summary["queued"] == 0 else EXIT_FAILED
    raise typer.Exit(code)


def _client(settings: Settings) -> PostHogPersonsClient:
    """The persons reader the settings describe; a clear error naming what is missing."""
    missing = missing_api_settings(settings)
    if missing:
        raise ConfigError(
            f"sync-persons reads PostHog's API: set {', '.join(missing)} (or read an export with --from PATH)"
        )
    return persons_client(settings)


def _check_path(source: str, restart: bool) -> None:
    if restart:
        raise ConfigError("--restart starts an API read over; --from reads the whole export every time")
    if not Path(source).exists():
        raise ConfigError(f"--from {source}: no such file or directory")


def _batches(
    runtime: Runtime,
    settings: Settings,
    source: str | None,
    restart: bool,
    dry_run: bool,
    client: PostHogPersonsClient | None,
) -> Batches:
    if source is not None:
        try:  # a path with no export file in it, or a missing extra, fails here, before anything is read
            require_extras(export_files(source))
        except (MissingExtra, BatchExportError) as exc:  # as send: an unusable path is a usage error (exit 2)
            raise ConfigError(str(exc)) from None
        return export_batches(source)
    assert client is not None
    checkpoint = PersonsCheckpoint(settings.posthog_customerio_data_dir / CHECKPOINT_FILE, scope=client.scope)
    if restart and not dry_run:
        checkpoint.clear()
    return api_batches(client, None if dry_run else checkpoint)


def _run(runtime: Runtime, batches: Batches, timeout: float | None, dry_run: bool) -> dict[str, Any]:
    """:func:`sync_persons` with progress bars on stderr: persons read (rate, ETA when the total is known) and
    operations delivered."""
    with _progress() as bars:
        reading = bars.add_task("persons", total=batches.total, detail="")
        delivering = bars.add_task("delivering", total=None, detail="", visible=not dry_run)

        def show_progress(where: SyncProgress) -> None:
            bars.update(reading, completed=where.read, detail=f"{where.operations:,} operations queued")
            if where.done_reading:
                bars.update(reading, total=where.read)
            total = where.operations if where.done_reading else None
            bars.update(delivering, total=total, completed=where.delivered, detail=f"{where.delivered:,} delivered")

        summary = sync_persons(runtime, batches, timeout=timeout, dry_run=dry_run, on_progress=show_progress)
    return summary.as_dict()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:>10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        _Rate(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


class _Rate(ProgressColumn):
    """Persons (or operations) a second, over rich's recent window."""

    def render(self, task: Task) -> Text:
        return Text("" if task.speed is None else f"{task.speed:,.0f}/s")


def _interrupted(runtime: Runtime, source: str | None, throwaway: bool) -> typer.Exit:
    """Ctrl-C: stop now, say what stays queued and the command that continues; exit 130."""
    queued = runtime.outbox.depth()
    runtime.close(grace_s=0)
    if throwaway:
        err.print(f"interrupted: {queued} operations dropped with the --sandbox run's throwaway data dir", markup=False)
        return typer.Exit(EXIT_INTERRUPTED)
    where = shlex.quote(str(runtime.settings.posthog_customerio_data_dir))
    again = f"--from {shlex.quote(source)}" if source is not None else "(it resumes where this run stopped)"
    err.print(
        f"interrupted: {queued} operations stay queued in {where}. To continue, run:\n"
        f"  posthog-customerio sync-persons --data-dir {where} {again}",
        markup=False,
        soft_wrap=True,
    )
    return typer.Exit(EXIT_INTERRUPTED)


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        show_json(summary)
        return
    skipped = summary["skipped"]
    skipped_text = ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items())) or "none"
    actions = ", ".join(f"{action} {count}" for action, count in sorted(summary["actions"].items())) or "none"
    resumed = f" (resumed after {summary['resumed_after']})" if summary["resumed_after"] else ""
    lines = [
        f"persons read       {summary['read']}{resumed}",
        f"nothing to send    {sum(skipped.values())} ({skipped_text})",
        f"operations         {summary['operations_enqueued']} {'would be sent' if summary['dry_run'] else 'enqueued'}"
        + (f" (+{summary['backlog_before']} already queued)" if summary["backlog_before"] else "")
        + f": {actions}",
    ]
    if summary["dry_run"]:
        lines.append("dry run            nothing was stored or sent; examples:")
        lines += [f"  {example}" for example in summary["examples"]]
    else:
        lines += [sent_line(summary), f"dead-lettered      {summary['dead_lettered']}", *waits_lines(summary)]
        if summary["queued"]:
            lines.append(f"still queued       {summary['queued']} (timed out; run sync-persons again to deliver)")
    lines.append(f"time               {summary['seconds']}s")
    if "sandbox" in summary:
        lines += sandbox_lines(summary["sandbox"])
    show("\n".join(lines))
