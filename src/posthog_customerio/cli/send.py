"""``send``: read a file of events (or a PostHog batch export), map, enqueue, deliver, and wait until the outbox
is empty."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from ..config import CUSTOMERIO, DELIVERY, IDENTITY, MAPPING, PACING, STORE, ConfigError
from ..output.base import AuthError
from ..runtime import DeliveryLockError, Runtime
from ..sources.batch_exports import BatchExportError, MissingExtra, export_files, is_export, require_extras
from ..sources.files import FileProgress, Summary, send_export, send_file
from .lifecycle import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UNREACHABLE, exits, removed
from .options import AsJson, DeliveryTimeout, Sandbox, SettingFlags, sandbox_data_dir, setting_options
from .render import (
    delivering_progress,
    err,
    print_send_summary,
    progress,
    reading_progress,
    report_invalid,
    sandbox_summary,
)


@setting_options(CUSTOMERIO, IDENTITY, MAPPING, PACING, DELIVERY, STORE, plugin_config=True)
def send(
    file: Annotated[
        str,
        typer.Argument(
            help="JSONL or JSON-array file of PostHog events, - for stdin, or a PostHog events batch export"
            " (a directory, a manifest.json, or a .parquet/.jsonl.gz/.jsonl.zst file)",
        ),
    ],
    flags: SettingFlags,
    sandbox: Sandbox = False,
    timeout: DeliveryTimeout = None,
    as_json: AsJson = False,
) -> None:
    """Read events, map, enqueue, deliver, and wait until the outbox is empty.

    Exit 0 when nothing was dead-lettered, 1 otherwise (or when delivery stopped, or a malformed export row
    stopped the reading), 2 for bad configuration or an input that cannot be read.
    """
    with exits():
        settings, throwaway = sandbox_data_dir(sandbox, flags.settings())
    with removed(throwaway):
        with exits():
            stream = _open_input(file)
        try:
            with (
                exits(
                    ((AuthError, DeliveryLockError), "{exc} (everything not delivered stays queued in the outbox)"),
                    UNREACHABLE,
                ),
                Runtime(settings, sandbox=sandbox) as runtime,
            ):
                try:
                    summary = _run_send(runtime, stream, timeout)
                except KeyboardInterrupt:
                    _interrupted(runtime, file, throwaway is not None)
                if sandbox and runtime.sandbox is not None:
                    summary["sandbox"] = sandbox_summary(runtime.sandbox)
        finally:
            if not isinstance(stream, list) and stream is not sys.stdin:
                stream.close()
    if summary["stopped"]:
        _stopped(summary)
    if summary["read"] == 0:
        source = "standard input" if file == "-" else file
        err.print(
            f"warning: no events in {source} (nothing to read: is it the right file?)", markup=False, soft_wrap=True
        )
    print_send_summary(summary, as_json)
    done = summary["dead_lettered"] == 0 and summary["queued"] == 0 and not summary["stopped"]
    raise typer.Exit(EXIT_OK if done else EXIT_FAILED)


def _stopped(summary: dict[str, Any]) -> None:
    """A malformed export row stopped the reading: say where, and what became of the rest."""
    err.print(
        f"error: {summary['stopped']}\n"
        "reading stopped at that row: the events before it went through as usual (see the summary), nothing after"
        " it was read; fix the row and run send again (events sent again are deduplicated)",
        markup=False,
        soft_wrap=True,
    )


def _interrupted(runtime: Runtime, file: str, throwaway: bool) -> typer.Exit:
    """Ctrl-C during ``send``: stop at once (a request still open is abandoned: it stays queued), say what
    stays queued and the command that continues; exit 130."""
    queued = runtime.outbox.depth()
    runtime.close(grace_s=0)
    if throwaway:
        err.print(f"interrupted: {queued} operations dropped with the --sandbox run's throwaway data dir", markup=False)
        raise typer.Exit(EXIT_INTERRUPTED)
    where = shlex.quote(str(runtime.settings.posthog_customerio_data_dir))
    source = shlex.quote(file) if file != "-" else "- < (the rest of the input)"
    err.print(
        f"interrupted: {queued} operations stay queued in {where}. To continue, run:\n"
        f"  posthog-customerio send --data-dir {where} {source}\n"
        "(with the same settings; the queued operations go first, and events sent again are deduplicated)",
        markup=False,
        soft_wrap=True,
    )
    raise typer.Exit(EXIT_INTERRUPTED)


def _open_input(file: str) -> IO[str] | list[Path]:
    """The text stream to read, or the data files of a batch export (checked readable before anything is sent)."""
    if file == "-":
        return sys.stdin
    if is_export(Path(file)):
        return _export_files(file)
    try:
        return open(file, encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from None


def _export_files(file: str) -> list[Path]:
    """The export's data files; a path that holds none, or a module of the ``exports`` extra missing for one of
    them, is bad input (exit 2, one line)."""
    try:
        files = export_files(file)
        require_extras(files)
    except (BatchExportError, MissingExtra) as exc:
        raise ConfigError(str(exc)) from None
    return files


def _run_send(runtime: Runtime, given: IO[str] | list[Path], timeout: float | None) -> dict[str, Any]:
    """:func:`send_file` (or :func:`send_export`) with progress bars on stderr: reading (bytes of a stream, files
    of an export) and delivering."""
    total = len(given) if isinstance(given, list) else _size_of(given)
    with progress() as bars:
        reading = bars.add_task("reading", total=total, detail="")
        delivering = bars.add_task("delivering", total=runtime.outbox.depth(), detail="")

        def show(where: FileProgress) -> None:
            completed, of, detail = reading_progress(where, total, isinstance(given, list))
            bars.update(reading, completed=completed, total=of, detail=detail)
            of, completed = delivering_progress(where)
            bars.update(delivering, total=of, completed=completed, detail=f"{where.delivered:,} operations")

        summary = _send(runtime, given, timeout, show)
    return summary.as_dict()


def _send(
    runtime: Runtime, given: IO[str] | list[Path], timeout: float | None, show: Callable[[FileProgress], None]
) -> Summary:
    if isinstance(given, list):
        return send_export(runtime, given, timeout=timeout, on_invalid=report_invalid, on_progress=show)
    return send_file(runtime, given, timeout=timeout, on_invalid=report_invalid, on_progress=show)


def _size_of(stream: IO[str]) -> int | None:
    try:
        return Path(stream.name).stat().st_size if stream is not sys.stdin else None
    except (OSError, AttributeError, TypeError):
        return None
