"""What is in the data dir: ``status``, ``person``, ``dead-letters``, ``retry-dead-letters``."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ..config import IDENTITY, STORE
from ..runtime import Runtime
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
    show(status_text(report))


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
