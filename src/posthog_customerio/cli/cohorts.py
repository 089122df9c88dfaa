"""``sync-cohorts``: one pass of PostHog cohorts into Customer.io manual segments and attributes."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ..config import (
    COHORTS,
    CUSTOMERIO,
    DELIVERY,
    IDENTITY,
    MAPPING,
    PACING,
    POSTHOG_API,
    STORE,
    ConfigError,
    Settings,
)
from ..output.base import AuthError
from ..person_sync import missing_api_settings, persons_client
from ..runtime import DeliveryLockError, Runtime
from ..sources.cohorts import CohortReport, CohortSyncer, configured_cohorts, plan_cohorts
from ..sources.jobs import delivering
from ..sources.posthog_api import PostHogApiError, PostHogAuthError, PostHogPersonsClient
from .lifecycle import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UNREACHABLE, exits, removed
from .options import AsJson, DeliveryTimeout, Sandbox, SettingFlags, sandbox_data_dir, setting_options
from .render import err, sandbox_lines, sandbox_summary, sent_line, show, show_json, waits_lines

__all__ = ["check_cohort_settings", "sync_cohorts_command"]


class CohortSyncBusy(RuntimeError):
    """Another process holds the cohort sync lock."""


@setting_options(CUSTOMERIO, IDENTITY, MAPPING, PACING, DELIVERY, STORE, POSTHOG_API, COHORTS, plugin_config=True)
def sync_cohorts_command(
    flags: SettingFlags,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the planned adds and removals per cohort; store and send nothing")
    ] = False,
    allow_empty: Annotated[
        bool,
        typer.Option("--allow-empty", help="Remove every member of a cohort that reads as empty (refused by default)"),
    ] = False,
    sandbox: Sandbox = False,
    timeout: DeliveryTimeout = None,
    as_json: AsJson = False,
) -> None:
    """Mirror PostHog cohorts into Customer.io: one pass of COHORT_SEGMENTS and COHORT_ATTRIBUTES.

    Reads each cohort's members from PostHog's API (POSTHOG_API_HOST, POSTHOG_PROJECT_ID,
    POSTHOG_PERSONAL_API_KEY) and sends only what changed since the last pass. Exit 0 when every cohort synced
    and nothing was dead-lettered, 1 otherwise, 2 for bad configuration, 130 on Ctrl-C.
    """
    with exits():
        settings, throwaway = sandbox_data_dir(sandbox, flags.settings())
        check_cohort_settings(settings, "sync-cohorts")
        client = persons_client(settings)
    with removed(throwaway):
        try:
            with (
                exits(
                    ((AuthError, DeliveryLockError), "{exc} (everything not delivered stays queued in the outbox)"),
                    (CohortSyncBusy, "{exc}"),
                    (PostHogAuthError, "PostHog refused the key: {exc}"),
                    (PostHogApiError, "{exc} (run sync-cohorts again to resume)"),
                    UNREACHABLE,
                ),
                Runtime(settings, sandbox=sandbox) as runtime,
                runtime.db.cohort_sync_lock() as held,
            ):
                if not held:
                    raise CohortSyncBusy("another process is syncing cohorts on this database; try again later")
                try:
                    if dry_run:
                        summary = _plan(runtime, client, allow_empty)
                    else:
                        summary = _run(runtime, client, allow_empty, timeout)
                except KeyboardInterrupt:
                    raise _interrupted(runtime) from None
                if sandbox and runtime.sandbox is not None and not dry_run:
                    summary["sandbox"] = sandbox_summary(runtime.sandbox)
        finally:
            client.close()
    _print_summary(summary, as_json)
    failed = any(cohort["outcome"] != "ok" for cohort in summary["cohorts"])
    undelivered = not dry_run and (summary["dead_lettered"] or summary["queued"])
    raise typer.Exit(EXIT_FAILED if failed or undelivered else EXIT_OK)


def _interrupted(runtime: Runtime) -> typer.Exit:
    """Ctrl-C: stop now; the pass resumes at its last stored page next run (exit 130)."""
    queued = runtime.outbox.depth()
    runtime.close(grace_s=0)
    err.print(f"interrupted: {queued} operations stay queued; run sync-cohorts again to resume the pass", markup=False)
    return typer.Exit(EXIT_INTERRUPTED)


def check_cohort_settings(settings: Settings, command: str) -> None:
    """What ``command`` needs to sync cohorts (a :class:`ConfigError` naming what is missing)."""
    if not configured_cohorts(settings):
        raise ConfigError(f"{command}: set COHORT_SEGMENTS (e.g. 7=12) or COHORT_ATTRIBUTES (e.g. 7,9)")
    missing = missing_api_settings(settings)
    if missing:
        raise ConfigError(f"{command} reads PostHog's API: set {', '.join(missing)}")
    if settings.cohort_segment_map and settings.pipelines:
        raise ConfigError(
            "COHORT_SEGMENTS needs the Track API (manual segments); Customer.io's Pipelines API has none:"
            " use COHORT_ATTRIBUTES with CUSTOMERIO_API=pipelines"
        )


def _plan(runtime: Runtime, client: PostHogPersonsClient, allow_empty: bool) -> dict[str, Any]:
    plans = [plan.as_dict() for plan in plan_cohorts(runtime, client, allow_empty=allow_empty)]
    return {"dry_run": True, "cohorts": plans}


def _run(runtime: Runtime, client: PostHogPersonsClient, allow_empty: bool, timeout: float | None) -> dict[str, Any]:
    def on_page(report: CohortReport) -> None:
        if err.is_terminal:  # progress for a person at a terminal; logs and pipes get the summary only
            err.print(f"cohort {report.cohort_id}: {report.members_read:,} members read", markup=False)

    with delivering(runtime, timeout, tick=lambda: None, source="cohorts") as delivery:
        reports = CohortSyncer(runtime, client, allow_empty=allow_empty, on_page=on_page, room=delivery.room).run()
    return {"dry_run": False, "cohorts": [report.as_dict() for report in reports], **delivery.figures()}


def _targets_line(counts: dict[str, int], sign: str) -> str:
    return ", ".join(f"{sign}{count:,} {target}" for target, count in counts.items()) or "none"


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        show_json(summary)
        return
    lines = []
    for cohort in summary["cohorts"]:
        title = f"cohort {cohort['cohort_id']}" + (f" ({cohort['name']})" if cohort.get("name") else "")
        if summary["dry_run"]:
            lines.append(f"{title}: {cohort['outcome']}, {cohort['members_read']:,} members in PostHog")
            lines.append(f"  would add      {_targets_line(cohort['adds'], '+')}")
            lines.append(f"  would remove   {_targets_line(cohort['removes'], '-')}")
            lines.append(f"  new profiles   {cohort['profiles_to_create']:,} (created first)")
            lines += [f"  e.g. {example}" for example in cohort["examples"]]
        else:
            resumed = " (resumed)" if cohort["resumed"] else ""
            lines.append(f"{title}: {cohort['outcome']}, pass {cohort['pass_no']}{resumed}")
            if cohort["outcome"] in ("ok", "suspicious_empty"):
                members = ", ".join(f"{target} {count:,}" for target, count in cohort["members"].items())
                lines.append(f"  members        {members or 'none'} ({cohort['members_read']:,} read)")
                lines.append(f"  added          {_targets_line(cohort['added'], '+')}")
                lines.append(f"  removed        {_targets_line(cohort['removed'], '-')}")
                lines.append(f"  new profiles   {cohort['profiles_created']:,}")
                if cohort["skipped"]:
                    skipped = ", ".join(f"{reason} {count}" for reason, count in sorted(cohort["skipped"].items()))
                    lines.append(f"  not added      {skipped} (no profile; tried again next pass)")
        if cohort.get("error"):
            lines.append(f"  error          {cohort['error']}")
    if summary["dry_run"]:
        lines.append("dry run: nothing was stored or sent")
    else:
        lines += [sent_line(summary), f"dead-lettered      {summary['dead_lettered']}", *waits_lines(summary)]
        if summary["queued"]:
            lines.append(f"still queued       {summary['queued']} (timed out; run sync-cohorts again to deliver)")
        lines.append(f"time               {summary['seconds']}s")
    if "sandbox" in summary:
        lines += sandbox_lines(summary["sandbox"])
    show("\n".join(lines))
