"""The ``posthog-customerio`` command line (typer).

One module per command or group of commands: :mod:`.check`, :mod:`.send`, :mod:`.persons`
(sync-persons), :mod:`.serve`, :mod:`.consume`, :mod:`.store` (status, person, dead letters, compact), :mod:`.people`
(delete-person, unsuppress), :mod:`.activity` (Customer.io's message activity), :mod:`.sandbox`; registered below,
in the order ``--help`` lists them. Their settings options come from :mod:`.options`; what they print from
:mod:`.render`; exits, signals and listening from :mod:`.lifecycle`.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer
import typer.main

from .. import __version__
from . import activity, check, cohorts, consume, people, persons, sandbox, send, serve, store
from .lifecycle import EXIT_OK

__all__ = ["app", "main", "setting_commands"]

app = typer.Typer(
    name="posthog-customerio",
    help="Keep a Customer.io workspace in sync with a PostHog project.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command()(check.check)
app.command()(send.send)
app.command("sync-persons")(persons.sync_persons_command)
app.command("sync-cohorts")(cohorts.sync_cohorts_command)
app.command("delete-person")(people.delete_person)
app.command()(people.unsuppress)
app.command()(serve.serve)
app.command()(consume.consume)
app.command()(store.status)
app.command("person")(store.person)
app.command("dead-letters")(store.dead_letters)
app.command("retry-dead-letters")(store.retry_dead_letters)
app.command()(store.compact)
app.command()(activity.activity)
app.command("activity-retry")(activity.activity_retry)
app.command("sandbox")(sandbox.sandbox_command)


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


def setting_commands() -> dict[str, list[str]]:
    """For each setting (a field of :class:`~posthog_customerio.config.Settings`), the commands taking its flag
    (for the configuration reference, with :func:`~posthog_customerio.config.settings_reference`)."""
    from ..config import Settings

    used: dict[str, list[str]] = {name: [] for name in Settings.model_fields}
    for name, command in typer.main.get_command(app).commands.items():  # type: ignore[attr-defined]
        for param in command.params:
            if param.name in used:
                used[param.name].append(name)
    return used


def _print_version(value: bool) -> None:
    """``--version``: print and exit while the options are parsed (before "Missing command")."""
    if value:
        typer.echo(f"posthog-customerio {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit", is_eager=True, callback=_print_version, expose_value=False
        ),
    ] = False,
) -> None:
    """Keep a Customer.io workspace in sync with a PostHog project."""
