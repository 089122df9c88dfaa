"""``send``: read a file of events, map, enqueue, deliver, and wait until the outbox is empty."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from ..config import CUSTOMERIO, DELIVERY, IDENTITY, MAPPING, PACING, STORE, ConfigError
from ..output.base import AuthError
from ..runtime import DeliveryLockError, Runtime
from ..sources.files import FileProgress, send_file
from .lifecycle import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UNREACHABLE, exits, removed
from .options import Sandbox, SettingFlags, sandbox_data_dir, setting_options
from .render import delivering_progress, err, print_send_summary, progress, report_invalid, sandbox_summary


@setting_options(CUSTOMERIO, IDENTITY, MAPPING, PACING, DELIVERY, STORE, plugin_config=True)
def send(
    file: Annotated[str, typer.Argument(help="JSONL or JSON-array file of PostHog events, or - for stdin")],
    flags: SettingFlags,
    sandbox: Sandbox = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            help="Give up waiting for delivery after this many seconds (the rest stays queued)",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
) -> None:
    """Read events, map, enqueue, deliver, and wait until the outbox is empty.

    Exit 0 when nothing was dead-lettered, 1 otherwise (or when delivery stopped),
    2 for bad configuration.
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
            if stream is not sys.stdin:
                stream.close()
    if summary["read"] == 0:
        source = "standard input" if file == "-" else file
        err.print(
            f"warning: no events in {source} (nothing to read: is it the right file?)", markup=False, soft_wrap=True
        )
    print_send_summary(summary, as_json)
    code = EXIT_OK if summary["dead_lettered"] == 0 and summary["queued"] == 0 else EXIT_FAILED
    raise typer.Exit(code)


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


def _open_input(file: str) -> IO[str]:
    if file == "-":
        return sys.stdin
    try:
        return open(file, encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from None


def _run_send(runtime: Runtime, stream: IO[str], timeout: float | None) -> dict[str, Any]:
    """:func:`send_file` with progress bars on stderr."""
    total_bytes = _size_of(stream)
    with progress() as bars:
        reading = bars.add_task("reading", total=total_bytes, detail="")
        delivering = bars.add_task("delivering", total=runtime.outbox.depth(), detail="")

        def show(where: FileProgress) -> None:
            if where.done_reading:
                done = total_bytes or where.read
                bars.update(reading, completed=done, total=done, detail=f"{where.events:,} events")
            else:
                bars.update(reading, completed=where.read, detail=f"{where.events:,} events")
            total, completed = delivering_progress(where)
            bars.update(delivering, total=total, completed=completed, detail=f"{where.delivered:,} operations")

        summary = send_file(runtime, stream, timeout=timeout, on_invalid=report_invalid, on_progress=show)
    return summary.as_dict()


def _size_of(stream: IO[str]) -> int | None:
    try:
        return Path(stream.name).stat().st_size if stream is not sys.stdin else None
    except (OSError, AttributeError, TypeError):
        return None
