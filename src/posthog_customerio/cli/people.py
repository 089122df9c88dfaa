"""One person in Customer.io: ``delete-person`` and ``unsuppress`` (the work is :mod:`posthog_customerio.people`)."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import people
from ..config import CUSTOMERIO, DELIVERY, IDENTITY, STORE
from ..output.base import AuthError
from ..runtime import Runtime
from .lifecycle import EXIT_FAILED, deliver_now, exits, fail, removed
from .options import Sandbox, SettingFlags, sandbox_data_dir, setting_options
from .render import describe_identifiers, show

Timeout = Annotated[
    float | None,
    typer.Option("--timeout", help="Give up waiting after this many seconds (it stays queued)", show_default=False),
]


@setting_options(CUSTOMERIO, IDENTITY, DELIVERY, STORE, plugin_config=True, also={"suppress_on_delete": "--suppress"})
def delete_person(
    distinct_id: Annotated[str, typer.Argument(help="The PostHog distinct_id of the person to delete")],
    flags: SettingFlags,
    sandbox: Sandbox = False,
    timeout: Timeout = 60.0,
) -> None:
    """Delete (or suppress) a person in Customer.io, as a PostHog person deletion would.

    Sent by every identifier known (the id, and each email we know), whether or not
    this data dir created the person. Goes through the outbox like any event
    (``$delete_person``), after the person's queued operations. With a server running
    on the same data dir, it only enqueues. Prints what it sent. With ``--sandbox``: to an
    in-process sandbox (no credentials; without a data dir, a throwaway one, as ``send --sandbox``).
    """
    with exits((AuthError, "{exc} (the deletion stays queued)")):
        settings, throwaway = sandbox_data_dir(sandbox, flags.settings())
        with removed(throwaway), Runtime(settings, sandbox=sandbox) as runtime:
            deletion = people.delete_person(runtime, distinct_id)
            finished = deliver_now(runtime, timeout)
    action = "suppress" if settings.suppress_on_delete else "delete"
    sent = describe_identifiers(deletion.identifiers)
    if deletion.unknown:
        show(f"{distinct_id}: not created by this data dir; sending the {action} anyway")
    if finished is None:
        show(f"queued {action} by {sent}; the running service will deliver it")
        return
    if not finished:
        raise fail("timed out; the deletion stays queued", EXIT_FAILED)
    done = "suppressed" if action == "suppress" else "deleted"
    show(f"{distinct_id}: {done} in Customer.io (sent {action} by {sent})")


@setting_options(CUSTOMERIO, DELIVERY, STORE, plugin_config=True)
def unsuppress(
    distinct_id: Annotated[str, typer.Argument(help="The PostHog distinct_id (or email) to unsuppress")],
    flags: SettingFlags,
    timeout: Timeout = 60.0,
) -> None:
    """Unsuppress a person's identifiers in Customer.io (v1 ``POST .../unsuppress``, v2 ``unsuppress``).

    Sent by every identifier known (the id, and each email we know). Customer.io then
    accepts those identifiers again; the profile itself was deleted by the suppression
    and comes back with the person's next event.
    """
    with exits((AuthError, "{exc} (the unsuppress stays queued)")), Runtime(flags.settings()) as runtime:
        sent = describe_identifiers(people.unsuppress(runtime, distinct_id))
        finished = deliver_now(runtime, timeout)
    if finished is None:
        show(f"queued unsuppress by {sent}; the running service will deliver it")
        return
    if not finished:
        raise fail("timed out; the unsuppress stays queued", EXIT_FAILED)
    show(f"{distinct_id}: unsuppressed in Customer.io (sent unsuppress by {sent})")
