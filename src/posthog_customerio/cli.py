"""The ``posthog-customerio`` command line (typer)."""

from __future__ import annotations

import contextlib
import contextvars
import errno
import functools
import inspect
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC
from pathlib import Path
from types import MappingProxyType
from typing import IO, Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from . import __version__
from .config import ConfigError, Settings, load_settings
from .customerio import AuthError, TrackClient, resolve_track_url
from .runtime import SANDBOX_CREDENTIALS, DeliveryLockError, Runtime
from .sources import ParsedItem
from .sources.files import FileProgress, send_file

app = typer.Typer(
    name="posthog-customerio",
    help="Keep a Customer.io workspace in sync with a PostHog project.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
_SHOWN_ERRORS = 20

# -- shared options (each also an environment variable) ------------------------------
SiteId = Annotated[
    str | None, typer.Option("--site-id", help="Track API site ID [env CUSTOMERIO_SITE_ID]", show_default=False)
]
ApiKey = Annotated[
    str | None, typer.Option("--api-key", help="Track API key [env CUSTOMERIO_API_KEY]", show_default=False)
]
Region = Annotated[
    str | None,
    typer.Option("--region", help="us, eu or auto [env CUSTOMERIO_REGION; default auto]", show_default=False),
]
TrackUrl = Annotated[
    str | None,
    typer.Option("--track-url", help="Track API base URL override [env CUSTOMERIO_TRACK_URL]", show_default=False),
]
Api = Annotated[
    str | None,
    typer.Option("--api", help="v1, v2 or pipelines [env CUSTOMERIO_API; default v2]", show_default=False),
]
ByEmail = Annotated[
    bool | None,
    typer.Option(
        "--identify-by-email/--no-identify-by-email",
        help="Address people by email once known [env IDENTIFY_BY_EMAIL; default false]",
        show_default=False,
    ),
]
Anonymous = Annotated[
    str | None,
    typer.Option(
        "--send-events-from-anonymous-users",
        help="all, identified or with_email [env SEND_EVENTS_FROM_ANONYMOUS_USERS; default all]",
        show_default=False,
    ),
]
Allowlist = Annotated[
    str | None,
    typer.Option(
        "--events-to-send", help="Comma-separated allowlist; empty = all [env EVENTS_TO_SEND]", show_default=False
    ),
]
Skiplist = Annotated[
    str | None,
    typer.Option(
        "--events-to-skip",
        help="Comma-separated event names or globs not sent (after --events-to-send); empty = none"
        " [env EVENTS_TO_SKIP; default PostHog's internal events]",
        show_default=False,
    ),
]
ConvertDates = Annotated[
    bool | None,
    typer.Option(
        "--convert-dates/--no-convert-dates",
        help="ISO 8601 date-time attributes become Unix seconds [env CONVERT_DATES; default true]",
        show_default=False,
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Where state and outbox live [env POSTHOG_CUSTOMERIO_DATA_DIR; default ./.posthog-customerio]",
        show_default=False,
    ),
]
MaxRps = Annotated[
    float | None,
    typer.Option(
        "--max-rps",
        help="Client-side request limit to Customer.io [env CUSTOMERIO_MAX_RPS; default 100]",
        show_default=False,
    ),
]
Concurrency = Annotated[
    int | None,
    typer.Option("--concurrency", help="Delivery workers [env DELIVERY_CONCURRENCY; default 4]", show_default=False),
]
PluginConfig = Annotated[
    Path | None,
    typer.Option("--plugin-config", help="The original PostHog plugin's config JSON", show_default=False),
]
Sandbox = Annotated[
    bool, typer.Option("--sandbox", help="Use an in-process Customer.io sandbox instead of Customer.io")
]


def _settings(plugin_config: Path | None = None, **flags: Any) -> Settings:
    names = {
        "site_id": "customerio_site_id",
        "api_key": "customerio_api_key",
        "region": "customerio_region",
        "track_url": "customerio_track_url",
        "api": "customerio_api",
        "identify_by_email": "identify_by_email",
        "anonymous": "send_events_from_anonymous_users",
        "events_to_send": "events_to_send",
        "events_to_skip": "events_to_skip",
        "convert_dates": "convert_dates",
        "data_dir": "posthog_customerio_data_dir",
        "max_rps": "customerio_max_rps",
        "concurrency": "delivery_concurrency",
        "webhook_token": "webhook_token",
        "webhook_signing_secret": "webhook_signing_secret",
        "ops_token": "ops_token",
        "allow_unauthenticated": "allow_unauthenticated",
        "max_body_bytes": "max_body_bytes",
        "max_queue": "max_queue",
        "shutdown_grace_s": "shutdown_grace_s",
        "log_format": "log_format",
        "suppress_on_delete": "suppress_on_delete",
        "outbox_url": "outbox_url",
        "max_events_per_request": "max_events_per_request",
        "http_keep_alive_s": "http_keep_alive_s",
        "http_read_timeout_s": "http_read_timeout_s",
        "posthog_host": "posthog_host",
        "cors_origins": "cors_origins",
    }
    flags = {**_EXTRA_FLAGS.get(), **flags}
    return load_settings({names.get(key, key): value for key, value in flags.items()}, plugin_config)


# -- settings flags shared by several commands ---------------------------------------
# Each is ``--kebab-case`` of its environment variable and lands in ``_settings`` by the
# variable's name; a command gets a group with ``@_setting_flags(GROUP, ...)``.
def _flag(variable: str, kind: Any, help_text: str, *, boolean: bool = False) -> tuple[str, Any]:
    name = "--" + variable.lower().replace("_", "-")
    decls = [f"{name}/--no-{name[2:]}"] if boolean else [name]
    option = typer.Option(*decls, help=f"{help_text} [env {variable}]", show_default=False)
    return variable.lower(), Annotated[kind | None, option]


MAPPING_FLAGS = (
    _flag(
        "MERGE_PEOPLE", bool, "Merge the anonymous / aliased person into the identified one; default true", boolean=True
    ),
    _flag("ANONYMOUS_EVENTS", str, "anonymous (Customer.io anonymous events) or person; default anonymous"),
    _flag("GROUP_TYPE_MAP", str, "PostHog group type=Customer.io object type id, e.g. company=1"),
    _flag("SUPPRESS_ON_DELETE", bool, "On a person deletion, suppress instead of delete; default false", boolean=True),
    _flag("LIMITS", str, "truncate or dead-letter; default truncate"),
    _flag("PROPERTIES_TO_EXCLUDE", str, "Glob list of properties left out, e.g. $geoip_*,$ip"),
    _flag("PROPERTIES_TO_INCLUDE", str, "Glob list: only matching properties are sent"),
    _flag("EVENT_NAME_MAP", str, "Rename events, e.g. signed_up=Signed Up"),
)
DELIVERY_FLAGS = (
    _flag("DELIVERY_LINGER_S", float, "Wait this long for a fuller batch; default 0.1"),
    _flag(
        "CUSTOMERIO_TIMEOUT_S",
        float,
        "Total deadline of each request to Customer.io, answer included"
        " (PostgreSQL: at most LEASE_S minus max(1, LEASE_S/4)); default 30",
    ),
    _flag("RETRY_AFTER_MAX_S", float, "The longest pause a Retry-After can impose (0-3600); default 60"),
)
HOLD_FLAGS = (
    _flag(
        "ANONYMOUS_HOLD_S",
        float,
        "Hold a visitor's anonymous events this long for an identify to adopt them"
        " (batched person events); 0 = off; default 5",
    ),
)
STORE_FLAGS = (
    _flag("OUTBOX_URL", str, "sqlite:///path or postgresql://user@host/db"),
    _flag("LEASE_S", float, "PostgreSQL: how long a claim on operations lasts; default 30"),
    _flag("SQLITE_SYNCHRONOUS", str, "FULL or NORMAL; default FULL"),
)
SERVICE_FLAGS = (
    _flag("AUTH_RETRY_S", float, "While Customer.io rejects the credentials, re-check this often; default 60"),
    _flag("LOG_LEVEL", str, "DEBUG, INFO, WARNING or ERROR; default INFO"),
)
PROXY_FLAGS = (_flag("POSTHOG_TIMEOUT_S", float, "With --posthog-host: timeout of each forwarded request; default 30"),)
PIPELINES_FLAGS = (
    _flag("CUSTOMERIO_PIPELINES_API_KEY", str, "Pipelines API key (with --api pipelines; no Track credentials needed)"),
    _flag("CUSTOMERIO_PIPELINES_URL", str, "Pipelines API base URL override; default by region (auto = us)"),
)
#: settings flags a command received through :func:`_setting_flags` (read-only mapping; replaced, never mutated)
_EXTRA_FLAGS: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "extra_flags", default=MappingProxyType({})
)


def _setting_flags(*groups: tuple[tuple[str, Any], ...]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add settings flags to a command without listing them in its signature.

    The values are handed to :func:`_settings` (a flag the command itself declares wins).
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(func, eval_str=True)
        own = list(signature.parameters.values())
        flags = {name: kind for group in groups for name, kind in group if name not in signature.parameters}
        added = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=kind)
            for name, kind in flags.items()
        ]

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            extra = {name: kwargs.pop(name, None) for name in flags}
            token = _EXTRA_FLAGS.set({**_EXTRA_FLAGS.get(), **extra})
            try:
                return func(**kwargs)
            finally:
                _EXTRA_FLAGS.reset(token)

        wrapper.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {**{p.name: p.annotation for p in own}, **flags}
        return wrapper

    return decorate


def _sandbox_data_dir(sandbox: bool, data_dir: Path | None) -> Path | None:
    """With ``--sandbox`` and no data dir chosen, a throwaway one (the caller deletes it); else ``None``.

    The sandbox starts empty, so remembered state ("this person exists in
    Customer.io") from an earlier run must not be applied to it. A directory the
    user chose (``--data-dir`` or ``POSTHOG_CUSTOMERIO_DATA_DIR``) is never returned
    here, so it is never deleted: it holds the outbox and the people we remember.
    """
    if sandbox and data_dir is None and not os.environ.get("POSTHOG_CUSTOMERIO_DATA_DIR"):
        return Path(tempfile.mkdtemp(prefix="posthog-customerio-sandbox-"))
    return None


def _check_port(port: int) -> None:
    """A TCP port is 1..65535; anything else stops the command (exit 2, one line)."""
    if not 1 <= port <= 65535:
        raise _fail(f"--port must be between 1 and 65535 (got {port})", EXIT_CONFIG)


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"error: {message}", markup=False, soft_wrap=True)
    return typer.Exit(code)


#: an error type (or types) that stops a command with exit 1, and its message (``{exc}``: the error)
_Failure = tuple[type[BaseException] | tuple[type[BaseException], ...], str]
_UNREACHABLE: _Failure = (httpx.HTTPError, "cannot reach Customer.io: {exc}")


@contextlib.contextmanager
def _exits(*failures: _Failure, config: type[BaseException] = ConfigError) -> Iterator[None]:
    """Expected errors as one line on stderr: ``config`` errors exit 2, each of ``failures`` exits 1."""
    try:
        yield
    except config as exc:
        raise _fail(str(exc), EXIT_CONFIG) from None
    except tuple(one for kind, _ in failures for one in (kind if isinstance(kind, tuple) else (kind,))) as exc:
        template = next(text for kind, text in failures if isinstance(exc, kind))
        raise _fail(template.format(exc=exc), EXIT_FAILED) from None


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


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


# -- check -----------------------------------------------------------------------------
@app.command()
@_setting_flags(DELIVERY_FLAGS[1:], PIPELINES_FLAGS)
def check(
    site_id: SiteId = None,
    api_key: ApiKey = None,
    region: Region = None,
    track_url: TrackUrl = None,
    plugin_config: PluginConfig = None,
    sandbox: Sandbox = False,
    api: Api = None,
) -> None:
    """Verify the credentials; print the region and the Track API URL (with --api pipelines: the Pipelines key).

    Exit 0 when Customer.io accepts them, 1 when it does not (or is unreachable),
    2 for bad configuration.
    """
    with _exits((AuthError, "{exc}"), _UNREACHABLE):
        settings = _settings(
            plugin_config, site_id=site_id, api_key=api_key, region=region, track_url=track_url, api=api
        )
        if settings.pipelines:
            _check_pipelines(settings, sandbox)
            return
        with contextlib.ExitStack() as stack:
            if sandbox:
                from .sandbox import SandboxServer

                site, key = SANDBOX_CREDENTIALS
                box = stack.enter_context(SandboxServer(port=0, site_id=site, api_key=key))
                url = box.url
            else:
                site, key = settings.credentials()
                url = resolve_track_url(
                    site,
                    key,
                    settings.customerio_region,
                    settings.customerio_track_url,
                    timeout=settings.customerio_timeout_s,
                )
            with TrackClient(site, key, url, timeout=settings.customerio_timeout_s) as client:
                answer = client.account_region()
    out.print(f"credentials OK\nregion     {answer.get('region', '?')}\ntrack URL  {url}", markup=False)


def _check_pipelines(settings: Settings, sandbox: bool) -> None:
    """``check`` with ``CUSTOMERIO_API=pipelines``: an empty strict-mode batch with the key (no Track call)."""
    from .output.pipelines import PipelinesClient, resolve_pipelines_url
    from .runtime import SANDBOX_PIPELINES_KEY

    unreachable = (httpx.HTTPError, "cannot reach the Customer.io Pipelines API: {exc}")
    with _exits((AuthError, "{exc}"), unreachable), contextlib.ExitStack() as stack:
        if sandbox:
            from .sandbox import SandboxServer

            box = stack.enter_context(SandboxServer(port=0, pipelines_key=SANDBOX_PIPELINES_KEY))
            key, url = SANDBOX_PIPELINES_KEY, box.url
        else:
            key = settings.pipelines_key()
            url = resolve_pipelines_url(settings.customerio_region, settings.customerio_pipelines_url)
        with PipelinesClient(key, url, timeout=settings.customerio_timeout_s) as client:
            client.check()
    region = "eu" if url == "https://cdp-eu.customer.io" else "us" if url == "https://cdp.customer.io" else "?"
    out.print(f"Pipelines API key OK\nregion         {region}\npipelines URL  {url}", markup=False)


# -- send ------------------------------------------------------------------------------
@app.command()
@_setting_flags(MAPPING_FLAGS, DELIVERY_FLAGS, HOLD_FLAGS, STORE_FLAGS, PIPELINES_FLAGS)
def send(
    file: Annotated[str, typer.Argument(help="JSONL or JSON-array file of PostHog events, or - for stdin")],
    site_id: SiteId = None,
    api_key: ApiKey = None,
    region: Region = None,
    track_url: TrackUrl = None,
    api: Api = None,
    identify_by_email: ByEmail = None,
    anonymous: Anonymous = None,
    events_to_send: Allowlist = None,
    events_to_skip: Skiplist = None,
    convert_dates: ConvertDates = None,
    data_dir: DataDir = None,
    max_rps: MaxRps = None,
    concurrency: Concurrency = None,
    plugin_config: PluginConfig = None,
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
    throwaway = _sandbox_data_dir(sandbox, data_dir)
    data_dir = throwaway or data_dir
    with _exits():
        settings = _settings(
            plugin_config,
            site_id=site_id,
            api_key=api_key,
            region=region,
            track_url=track_url,
            api=api,
            identify_by_email=identify_by_email,
            anonymous=anonymous,
            events_to_send=events_to_send,
            events_to_skip=events_to_skip,
            convert_dates=convert_dates,
            data_dir=data_dir,
            max_rps=max_rps,
            concurrency=concurrency,
        )
        stream = _open_input(file)
    try:
        with (
            _exits(
                ((AuthError, DeliveryLockError), "{exc} (everything not delivered stays queued in the outbox)"),
                _UNREACHABLE,
            ),
            Runtime(settings, sandbox=sandbox) as runtime,
        ):
            try:
                summary = _run_send(runtime, stream, timeout)
            except KeyboardInterrupt:
                _interrupted(runtime, file, throwaway is not None)
            if sandbox and runtime.sandbox is not None:
                summary["sandbox"] = _sandbox_summary(runtime.sandbox)
    finally:
        if stream is not sys.stdin:
            stream.close()
        if throwaway is not None:
            shutil.rmtree(throwaway, ignore_errors=True)
    if summary["read"] == 0:
        source = "standard input" if file == "-" else file
        err.print(
            f"warning: no events in {source} (nothing to read: is it the right file?)", markup=False, soft_wrap=True
        )
    _print_send_summary(summary, as_json)
    code = EXIT_OK if summary["dead_lettered"] == 0 and summary["queued"] == 0 else EXIT_FAILED
    raise typer.Exit(code)


EXIT_INTERRUPTED = 130


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
    with _progress() as progress:
        reading = progress.add_task("reading", total=total_bytes, detail="")
        delivering = progress.add_task("delivering", total=runtime.outbox.depth(), detail="")

        def show(where: FileProgress) -> None:
            if where.done_reading:
                done = total_bytes or where.read
                progress.update(reading, completed=done, total=done, detail=f"{where.events:,} events")
            else:
                progress.update(reading, completed=where.read, detail=f"{where.events:,} events")
            total, completed = _delivering_progress(where)
            progress.update(delivering, total=total, completed=completed, detail=f"{where.delivered:,} operations")

        summary = send_file(runtime, stream, timeout=timeout, on_invalid=_report_invalid, on_progress=show)
    return summary.as_dict()


def _delivering_progress(where: FileProgress) -> tuple[int | None, int]:
    """The delivering bar's total and completed: no total (no percentage) while reading adds operations,
    so the percentage shown never goes backwards; then all operations, delivered ones capped at it."""
    if not where.done_reading:
        return None, where.delivered
    return where.operations, min(where.delivered, where.operations)


def _size_of(stream: IO[str]) -> int | None:
    try:
        return Path(stream.name).stat().st_size if stream is not sys.stdin else None
    except (OSError, AttributeError, TypeError):
        return None


def _report_invalid(item: ParsedItem, count: int) -> None:
    if count <= _SHOWN_ERRORS:
        err.print(f"skipped {item.location}: {item.error}", markup=False, soft_wrap=True)
    elif count == _SHOWN_ERRORS + 1:
        err.print("(more invalid lines are counted but not shown)", markup=False)


def _progress() -> Progress:
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


def _sandbox_summary(sandbox: Any) -> dict[str, Any]:
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
    """:func:`_sandbox_summary` of the sandbox's Pipelines workspace (same shape)."""
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


def _sandbox_lines(box: dict[str, Any], shown: int = 25) -> list[str]:
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


def _sent_line(summary: dict[str, Any]) -> str:
    """``operations sent  N in R requests``, and the failed requests whose operations were put back."""
    line = f"operations sent    {summary['operations_delivered']} in {summary['requests']} requests"
    failed = sum(count for status, count in summary["requests_by_status"].items() if not status.startswith("2"))
    if failed or summary["retries"]:
        line += f" ({failed} failed; {summary['retries']} operation retries)"
    return line


def _print_send_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    skipped = summary["skipped"]
    skipped_text = ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items())) or "none"
    lines = [
        f"events read        {summary['read']} ({summary['invalid']} invalid)",
        f"skipped by filter  {sum(skipped.values())} ({skipped_text})",
        f"operations         {summary['operations_enqueued']} enqueued"
        + (f" (+{summary['backlog_before']} already queued)" if summary["backlog_before"] else ""),
        _sent_line(summary),
        f"dead-lettered      {summary['dead_lettered']}",
    ]
    if summary["queued"]:
        lines.append(f"still queued       {summary['queued']} (timed out; run send again to deliver)")
    lines.append(f"time               {summary['seconds']}s")
    if "sandbox" in summary:
        lines += _sandbox_lines(summary["sandbox"])
    out.print("\n".join(lines), markup=False, soft_wrap=True)


# -- delete-person, unsuppress --------------------------------------------------------------
def _describe_identifiers(identifiers: list[dict[str, str]]) -> str:
    return ", ".join(f"{kind} {value}" for item in identifiers for kind, value in item.items())


@contextlib.contextmanager
def _removed(directory: Path | None) -> Iterator[None]:
    """Delete ``directory`` (a ``--sandbox`` throwaway data dir) when the block ends, whatever happens."""
    try:
        yield
    finally:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def _deliver_now(runtime: Runtime, timeout: float | None) -> bool | None:
    """Deliver what is queued; ``None`` when a running service holds the delivery lock."""
    try:
        deliverer = runtime.deliverer()
    except DeliveryLockError:
        return None
    runtime.outbox.input_finished()  # nothing is ingested here: nothing to hold for
    deliverer.start()
    finished = deliverer.wait_until_empty(timeout)
    deliverer.stop()
    return finished


@app.command("delete-person")
@_setting_flags(DELIVERY_FLAGS, STORE_FLAGS, PIPELINES_FLAGS)
def delete_person(
    distinct_id: Annotated[str, typer.Argument(help="The PostHog distinct_id of the person to delete")],
    site_id: SiteId = None,
    api_key: ApiKey = None,
    region: Region = None,
    track_url: TrackUrl = None,
    api: Api = None,
    identify_by_email: ByEmail = None,
    data_dir: DataDir = None,
    plugin_config: PluginConfig = None,
    sandbox: Sandbox = False,
    suppress: Annotated[
        bool | None,
        typer.Option(
            "--suppress/--no-suppress", help="Suppress instead of delete [env SUPPRESS_ON_DELETE]", show_default=False
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="Give up waiting after this many seconds (it stays queued)", show_default=False),
    ] = 60.0,
) -> None:
    """Delete (or suppress) a person in Customer.io, as a PostHog person deletion would.

    Sent by every identifier known (the id, and each email we know), whether or not
    this data dir created the person. Goes through the outbox like any event
    (``$delete_person``), after the person's queued operations. With a server running
    on the same data dir, it only enqueues. Prints what it sent. With ``--sandbox``: to an
    in-process sandbox (no credentials; without a data dir, a throwaway one, as ``send --sandbox``).
    """
    from datetime import datetime

    from .mapping import involved_distinct_ids, map_event
    from .sources import PostHogEvent
    from .state import load_states

    throwaway = _sandbox_data_dir(sandbox, data_dir)
    with _exits((AuthError, "{exc} (the deletion stays queued)")), _removed(throwaway):
        settings = _settings(
            plugin_config,
            site_id=site_id,
            api_key=api_key,
            region=region,
            track_url=track_url,
            api=api,
            identify_by_email=identify_by_email,
            data_dir=throwaway or data_dir,
            suppress_on_delete=suppress,
        )
        with Runtime(settings, sandbox=sandbox) as runtime:
            event = PostHogEvent("$delete_person", distinct_id, datetime.now(UTC))
            with runtime.db.transaction() as conn:  # what the deletion will send (the mapping is pure)
                states = load_states(conn, involved_distinct_ids(event))
            preview = map_event(event, states, settings.mapping_config())
            sent = [op.payload["identifiers"] for op in preview.operations]
            runtime.ingestor.ingest([event], source="cli")
            finished = _deliver_now(runtime, timeout)
    action = "suppress" if settings.suppress_on_delete else "delete"
    if preview.notes["delete_unknown_person"]:
        out.print(
            f"{distinct_id}: not created by this data dir; sending the {action} anyway", markup=False, soft_wrap=True
        )
    if finished is None:
        out.print(
            f"queued {action} by {_describe_identifiers(sent)}; the running service will deliver it",
            markup=False,
            soft_wrap=True,
        )
        return
    if not finished:
        raise _fail("timed out; the deletion stays queued", EXIT_FAILED)
    done = "suppressed" if action == "suppress" else "deleted"
    out.print(
        f"{distinct_id}: {done} in Customer.io (sent {action} by {_describe_identifiers(sent)})",
        markup=False,
        soft_wrap=True,
    )


@app.command()
@_setting_flags(DELIVERY_FLAGS, STORE_FLAGS, PIPELINES_FLAGS)
def unsuppress(
    distinct_id: Annotated[str, typer.Argument(help="The PostHog distinct_id (or email) to unsuppress")],
    site_id: SiteId = None,
    api_key: ApiKey = None,
    region: Region = None,
    track_url: TrackUrl = None,
    api: Api = None,
    data_dir: DataDir = None,
    plugin_config: PluginConfig = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="Give up waiting after this many seconds (it stays queued)", show_default=False),
    ] = 60.0,
) -> None:
    """Unsuppress a person's identifiers in Customer.io (v1 ``POST .../unsuppress``, v2 ``unsuppress``).

    Sent by every identifier known (the id, and each email we know). Customer.io then
    accepts those identifiers again; the profile itself was deleted by the suppression
    and comes back with the person's next event.
    """
    from .mapping import known_identifiers
    from .operations import Operation
    from .state import PersonState, load_states, save_states

    with _exits((AuthError, "{exc} (the unsuppress stays queued)")):
        settings = _settings(
            plugin_config,
            site_id=site_id,
            api_key=api_key,
            region=region,
            track_url=track_url,
            api=api,
            data_dir=data_dir,
        )
        with Runtime(settings) as runtime:
            with runtime.db.transaction() as conn:
                states = load_states(conn, [distinct_id])
                person = states.get(distinct_id) or PersonState(distinct_id)
                while person.merged_into and person.merged_into in states and person.merged_into != person.distinct_id:
                    person = states[person.merged_into]
                sent = known_identifiers(distinct_id, person)
                operations = [
                    Operation(
                        person.distinct_id, {"type": "person", "identifiers": identifiers, "action": "unsuppress"}
                    )
                    for identifiers in sent
                ]
                runtime.outbox.enqueue(conn, operations)
                # suppression deleted the profile: the next event creates it again, with everything we know
                person.created, person.email_sent = False, None
                person.digests, person.stamps, person.relationships = {}, {}, []
                save_states(conn, [person])
            finished = _deliver_now(runtime, timeout)
    if finished is None:
        out.print(
            f"queued unsuppress by {_describe_identifiers(sent)}; the running service will deliver it",
            markup=False,
            soft_wrap=True,
        )
        return
    if not finished:
        raise _fail("timed out; the unsuppress stays queued", EXIT_FAILED)
    out.print(
        f"{distinct_id}: unsuppressed in Customer.io (sent unsuppress by {_describe_identifiers(sent)})",
        markup=False,
        soft_wrap=True,
    )


# -- serve -----------------------------------------------------------------------------
WebhookToken = Annotated[
    str | None,
    typer.Option(
        "--webhook-token", help="Require Authorization: Bearer <token> [env WEBHOOK_TOKEN]", show_default=False
    ),
]
SigningSecret = Annotated[
    str | None,
    typer.Option(
        "--webhook-signing-secret",
        help="Verify Standard Webhooks signatures [env WEBHOOK_SIGNING_SECRET]",
        show_default=False,
    ),
]
OpsToken = Annotated[
    str | None,
    typer.Option(
        "--ops-token",
        help="Guard /status and /api/* (Bearer, or Basic password) [env OPS_TOKEN; default WEBHOOK_TOKEN]",
        show_default=False,
    ),
]
AllowUnauthenticated = Annotated[
    bool | None,
    typer.Option(
        "--allow-unauthenticated/--no-allow-unauthenticated",
        help="Serve a non-loopback host with no token [env ALLOW_UNAUTHENTICATED; default false]",
        show_default=False,
    ),
]
_LOOPBACK_NAMES = ("localhost", "localhost.", "ip6-localhost")


def _is_loopback(host: str) -> bool:
    """Whether ``--host`` only accepts connections from this machine."""
    import ipaddress

    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _unauthenticated_host(settings: Settings, host: str) -> str | None:
    """Why ``serve`` must not start: a non-loopback host with no token at all (``None`` when fine)."""
    configured = any(
        secret is not None and secret.get_secret_value().strip()
        for secret in (settings.ops_token, settings.webhook_token, settings.webhook_signing_secret)
    )
    if configured or settings.allow_unauthenticated or _is_loopback(host):
        return None
    return (
        f"--host {host} is reachable from other machines and no OPS_TOKEN, WEBHOOK_TOKEN or"
        " WEBHOOK_SIGNING_SECRET is set; set one, or ALLOW_UNAUTHENTICATED=true to serve people's data to anyone"
    )


@app.command()
@_setting_flags(MAPPING_FLAGS, DELIVERY_FLAGS, HOLD_FLAGS, STORE_FLAGS, SERVICE_FLAGS, PROXY_FLAGS, PIPELINES_FLAGS)
def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port")] = 8080,
    site_id: SiteId = None,
    api_key: ApiKey = None,
    region: Region = None,
    track_url: TrackUrl = None,
    api: Api = None,
    identify_by_email: ByEmail = None,
    anonymous: Anonymous = None,
    events_to_send: Allowlist = None,
    events_to_skip: Skiplist = None,
    convert_dates: ConvertDates = None,
    data_dir: DataDir = None,
    max_rps: MaxRps = None,
    concurrency: Concurrency = None,
    plugin_config: PluginConfig = None,
    sandbox: Sandbox = False,
    webhook_token: WebhookToken = None,
    webhook_signing_secret: SigningSecret = None,
    ops_token: OpsToken = None,
    allow_unauthenticated: AllowUnauthenticated = None,
    max_body_bytes: Annotated[
        int | None,
        typer.Option("--max-body-bytes", help="[env MAX_BODY_BYTES; default 5000000]", show_default=False),
    ] = None,
    max_queue: Annotated[
        int | None,
        typer.Option(
            "--max-queue",
            help="Answer 503 above this outbox depth [env MAX_QUEUE; default 1000000]",
            show_default=False,
        ),
    ] = None,
    shutdown_grace_s: Annotated[
        float | None,
        typer.Option(
            "--shutdown-grace-s", help="Flush time on SIGTERM [env SHUTDOWN_GRACE_S; default 10]", show_default=False
        ),
    ] = None,
    log_format: Annotated[
        str | None, typer.Option("--log-format", help="json, text or auto [env LOG_FORMAT]", show_default=False)
    ] = None,
    outbox_url: Annotated[
        str | None,
        typer.Option(
            "--outbox-url", help="sqlite:///path or postgresql://user@host/db [env OUTBOX_URL]", show_default=False
        ),
    ] = None,
    role: Annotated[str, typer.Option("--role", help="all, ingest (receivers only) or deliver (workers only)")] = "all",
    max_events_per_request: Annotated[
        int | None,
        typer.Option(
            "--max-events-per-request",
            help="Answer 413 above this many events in one request [env MAX_EVENTS_PER_REQUEST; default 10000]",
            show_default=False,
        ),
    ] = None,
    timeout_keep_alive: Annotated[
        float | None,
        typer.Option(
            "--timeout-keep-alive",
            help="Close idle keep-alive connections after this many seconds [env HTTP_KEEP_ALIVE_S; default 5]",
            show_default=False,
        ),
    ] = None,
    http_read_timeout_s: Annotated[
        float | None,
        typer.Option(
            "--http-read-timeout-s",
            help="Close a connection whose request (headers and body) takes longer"
            " [env HTTP_READ_TIMEOUT_S; default 30]",
            show_default=False,
        ),
    ] = None,
    posthog_host: Annotated[
        str | None,
        typer.Option(
            "--posthog-host",
            help="Forward PostHog paths to this PostHog, e.g. https://us.i.posthog.com [env POSTHOG_HOST]",
            show_default=False,
        ),
    ] = None,
    cors_origins: Annotated[
        str | None,
        typer.Option(
            "--cors-origins",
            help="Origins allowed on the browser-facing paths, comma list or * [env CORS_ORIGINS; default *]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the HTTP service: PostHog webhook + capture receivers, delivery in the background."""
    if role not in ("all", "ingest", "deliver"):
        raise _fail("--role must be all, ingest or deliver", EXIT_CONFIG)
    _check_port(port)

    from .logs import configure_logging
    from .service import create_app
    from .service.http_timeouts import uvicorn_config

    throwaway = _sandbox_data_dir(sandbox, data_dir)
    with _exits():
        settings = _settings(
            plugin_config,
            site_id=site_id,
            api_key=api_key,
            region=region,
            track_url=track_url,
            api=api,
            identify_by_email=identify_by_email,
            anonymous=anonymous,
            events_to_send=events_to_send,
            events_to_skip=events_to_skip,
            convert_dates=convert_dates,
            data_dir=throwaway or data_dir,
            max_rps=max_rps,
            concurrency=concurrency,
            webhook_token=webhook_token,
            webhook_signing_secret=webhook_signing_secret,
            ops_token=ops_token,
            allow_unauthenticated=allow_unauthenticated,
            max_body_bytes=max_body_bytes,
            max_queue=max_queue,
            shutdown_grace_s=shutdown_grace_s,
            log_format=log_format,
            outbox_url=outbox_url,
            max_events_per_request=max_events_per_request,
            http_keep_alive_s=timeout_keep_alive,
            http_read_timeout_s=http_read_timeout_s,
            posthog_host=posthog_host,
            cors_origins=cors_origins,
        )
        refusal = _unauthenticated_host(settings, host)
        if refusal is not None:
            raise ConfigError(refusal)
        if not sandbox:
            settings.require_credentials()
        listening = _listen(host, port, throwaway)
        configure_logging(settings.log_format, settings.log_level, settings.secret_values())
        runtime = Runtime(settings, sandbox=sandbox, fallback_to_us=True)
    try:
        with _exits((DeliveryLockError, "{exc}")):
            application = create_app(runtime, deliver=role in ("all", "deliver"), ingest=role in ("all", "ingest"))
            if runtime.sandbox is not None:
                where = settings.posthog_customerio_data_dir
                kept = "throwaway, deleted on stop" if throwaway is not None else "kept"
                logging.getLogger(__name__).info(
                    "sandbox Customer.io at %s/_sandbox/people; data dir %s (%s; `posthog-customerio status"
                    " --data-dir %s` reads it)",
                    runtime.sandbox.url,
                    where,
                    kept,
                    shlex.quote(str(where)),
                )
            config = uvicorn_config(
                application,
                host,
                port,
                settings,
                timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_s)),
            )
            _run_until_signalled(_server_marking_shutdown(config, application), [listening])
    finally:
        listening.close()
        runtime.close(grace_s=0)
        if throwaway is not None:
            shutil.rmtree(throwaway, ignore_errors=True)


# -- consume (Kafka) ---------------------------------------------------------------------------
@app.command()
@_setting_flags(MAPPING_FLAGS, DELIVERY_FLAGS, HOLD_FLAGS, STORE_FLAGS, SERVICE_FLAGS, PIPELINES_FLAGS)
def consume(
    kafka_bootstrap: Annotated[
        str,
        typer.Option(
            "--kafka-bootstrap",
            envvar="KAFKA_BOOTSTRAP_SERVERS",
            help="HOST:PORT[,HOST:PORT...] of the Kafka / Redpanda brokers",
            show_default=False,
        ),
    ],
    topic: Annotated[
        str,
        typer.Option(
            "--topic",
            envvar="KAFKA_TOPIC",
            help="Topic of PostHog events, e.g. clickhouse_events_json",
            show_default=False,
        ),
    ],
    group: Annotated[
        str, typer.Option("--group", envvar="KAFKA_GROUP_ID", help="Consumer group; offsets are committed for it")
    ] = "posthog-customerio",
    kafka_config: Annotated[
        list[str] | None,
        typer.Option(
            "--kafka-config",
            help="librdkafka setting KEY=VALUE, repeatable (e.g. security.protocol=SASL_SSL)",
            show_default=False,
        ),
    ] = None,
    kafka_config_file: Annotated[
        Path | None,
        typer.Option(
            "--kafka-config-file",
            envvar="KAFKA_CONFIG_FILE",
            help="File of key=value librdkafka settings, keeps sasl.password off the command line",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Messages per outbox transaction and offset commit")
    ] = 500,
    max_messages: Annotated[
        int | None,
        typer.Option(
            "--max-messages", min=1, help="Stop after this many messages (backfills, tests)", show_default=False
        ),
    ] = None,
    site_id: SiteId = None,
    api_key: ApiKey = None,
    region: Region = None,
    track_url: TrackUrl = None,
    api: Api = None,
    identify_by_email: ByEmail = None,
    anonymous: Anonymous = None,
    events_to_send: Allowlist = None,
    events_to_skip: Skiplist = None,
    convert_dates: ConvertDates = None,
    data_dir: DataDir = None,
    max_rps: MaxRps = None,
    concurrency: Concurrency = None,
    plugin_config: PluginConfig = None,
    sandbox: Sandbox = False,
    shutdown_grace_s: Annotated[
        float | None,
        typer.Option(
            "--shutdown-grace-s",
            help="On stop, keep delivering this long [env SHUTDOWN_GRACE_S; default 10]",
            show_default=False,
        ),
    ] = None,
    log_format: Annotated[
        str | None, typer.Option("--log-format", help="json, text or auto [env LOG_FORMAT]", show_default=False)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
) -> None:
    """Read PostHog events from a Kafka topic (self-hosted PostHog) and deliver them.

    Works with Apache Kafka, Redpanda and other Kafka-compatible brokers. Offsets are
    committed only after the events are in the outbox (at least once; dedupe ids make
    replays harmless). Runs until SIGTERM/SIGINT (or --max-messages), then delivers for
    SHUTDOWN_GRACE_S and keeps the rest queued. Exit 0 after a graceful stop, 1 when
    consuming failed (nothing unstored was committed), 2 for bad configuration.
    """
    import threading

    from .logs import configure_logging
    from .sources.kafka import KafkaConsumeError, load_kafka_config, secret_values
    from .sources.kafka import consume as consume_topic

    throwaway = _sandbox_data_dir(sandbox, data_dir)
    with _exits(config=ValueError):  # ConfigError is a ValueError; so are bad Kafka settings
        settings = _settings(
            plugin_config,
            site_id=site_id,
            api_key=api_key,
            region=region,
            track_url=track_url,
            api=api,
            identify_by_email=identify_by_email,
            anonymous=anonymous,
            events_to_send=events_to_send,
            events_to_skip=events_to_skip,
            convert_dates=convert_dates,
            data_dir=throwaway or data_dir,
            max_rps=max_rps,
            concurrency=concurrency,
            shutdown_grace_s=shutdown_grace_s,
            log_format=log_format,
        )
        if not sandbox:
            settings.require_credentials()
        extra = load_kafka_config(kafka_config or (), kafka_config_file)
    configure_logging(settings.log_format, settings.log_level, [*settings.secret_values(), *secret_values(extra)])
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda _number, _frame: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    failure, report = None, None
    try:
        with (
            _exits((DeliveryLockError, "{exc}"), config=ValueError),
            Runtime(settings, sandbox=sandbox, fallback_to_us=True) as runtime,
        ):
            deliverer = runtime.deliverer(pause_on_auth_error=True)
            deliverer.start()
            try:
                report = consume_topic(
                    runtime,
                    kafka_bootstrap,
                    topic,
                    group,
                    batch_size=batch_size,
                    stop=stop,
                    max_messages=max_messages,
                    config=extra,
                )
            except KafkaConsumeError as exc:
                failure = str(exc)
            if max_messages is not None:  # a bounded run (like send): nothing more comes to adopt what is held
                runtime.outbox.input_finished()
            # stopped by a signal: what is still held stays queued for the next start (which may adopt it)
            deliverer.wait_until_drained(settings.shutdown_grace_s)
            summary = {
                **(report.as_dict() if report else {}),
                "operations_delivered": deliverer.stats.delivered,
                "queued": runtime.outbox.depth(),
                "error": failure,
            }
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if throwaway is not None:
            shutil.rmtree(throwaway, ignore_errors=True)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        out.print(
            f"messages read      {summary.get('messages', 0)} ({summary.get('invalid', 0)} invalid, skipped)\n"
            f"events stored      {summary.get('events', 0)}\n"
            f"offsets committed  {summary.get('commits', 0)} commits ({summary.get('commit_failures', 0)} failed)\n"
            f"operations sent    {summary['operations_delivered']}, still queued {summary['queued']}",
            markup=False,
            soft_wrap=True,
        )
    if failure:
        raise _fail(failure, EXIT_FAILED)
    raise typer.Exit(EXIT_OK)


def _server_marking_shutdown(config: Any, application: Any) -> Any:
    """A uvicorn server that notes when the stop signal came (the whole shutdown then fits the grace)."""
    import uvicorn

    from .service.app import mark_shutdown

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            mark_shutdown(application)
            super().handle_exit(sig, frame)

    return Server(config)


def _listen(host: str, port: int, throwaway: Path | None) -> socket.socket:
    """The bound listening socket for ``serve``, or one line and exit 1 (a busy port, an address not here)
    before anything starts."""
    name = host.strip().strip("[]")
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in name else socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        raise _fail(f"cannot listen on {host}:{port}: {exc.strerror}", EXIT_FAILED) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((name, port))
    except OSError as exc:
        sock.close()
        if throwaway is not None:
            shutil.rmtree(throwaway, ignore_errors=True)
        reason = "the port is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise _fail(f"cannot listen on {host}:{port}: {reason}", EXIT_FAILED) from None
    return sock


def _run_until_signalled(server: Any, sockets: list[socket.socket] | None = None) -> None:
    """Run uvicorn; SIGTERM/SIGINT shut it down gracefully and the command exits 0.

    uvicorn re-raises the signal it handled once it has shut down; with our own
    handler installed first, that re-raise lands here instead of killing the
    process before the outbox is closed cleanly.
    """
    received: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda number, _frame: received.append(number))
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        server.run(sockets=sockets)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@app.command()
@_setting_flags(STORE_FLAGS)
def status(
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Show queue depth, dead letters and the service's last figures, from the data dir."""
    from .status import offline_status

    with _exits():
        settings = _settings(data_dir=data_dir)
        _require_data(settings)
        with Runtime(settings) as runtime:
            report = offline_status(runtime)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    out.print(_status_text(report), markup=False, soft_wrap=True)


def _status_text(report: dict[str, Any]) -> str:
    outbox, delivery, ingest = report["outbox"], report["delivery"] or {}, report["ingest"] or {}
    service = report.get("service")
    lines = [
        f"outbox             {outbox['depth']} queued, oldest {outbox['oldest_age_s']:.0f}s",
        f"dead letters       {outbox['dead_letters']}",
        f"people known       {report['persons']}",
    ]
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
        lines += _replica_lines(report.get("replicas") or [])
    else:
        lines.append("service            no snapshot (the service has not run with this data dir)")
    for error in (report.get("recent_errors") or [])[-5:]:
        lines.append(f"error              {time.strftime('%H:%M:%S', time.localtime(error['at']))} {error['message']}")
    for letter in report["dead_letters"][:10]:
        lines.append(
            f"  #{letter['id']} {letter['person_key']} {letter['action']} {letter['name'] or ''}: {letter['reason']}"
        )
    return "\n".join(lines)


def _replica_lines(replicas: list[dict[str, Any]]) -> list[str]:
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


# -- person ----------------------------------------------------------------------------
@app.command("person")
@_setting_flags(STORE_FLAGS)
def person(
    person_id: Annotated[str, typer.Argument(help="A distinct_id of the person, or their email")],
    data_dir: DataDir = None,
    identify_by_email: ByEmail = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """What did we send for this person? Their distinct_ids and merges, the identifier Customer.io knows
    them by, attributes last sent (with event times), queued operations, recent deliveries, dead letters."""
    from .people import lookup_person, person_text

    with _exits():
        settings = _settings(data_dir=data_dir, identify_by_email=identify_by_email)
        _require_data(settings)
        with Runtime(settings) as runtime:
            record = lookup_person(runtime, person_id)
    if record is None:
        raise _fail(f"no person {person_id!r} (neither a distinct_id nor an email we know)", EXIT_FAILED)
    if as_json:
        typer.echo(json.dumps(record, indent=2))
        return
    out.print(person_text(record), markup=False, soft_wrap=True)


# -- dead letters ----------------------------------------------------------------------
def _require_data(settings: Settings) -> None:
    """The read-only commands never create a data dir: stop (exit 1) when there is no database."""
    url = settings.outbox_url
    if url and not url.startswith("sqlite:///"):
        return  # PostgreSQL: the server says whether it exists
    path = Path(url.removeprefix("sqlite:///")) if url else settings.database_path
    if not path.is_file():
        where = f"OUTBOX_URL {path}" if url else f"{settings.posthog_customerio_data_dir.resolve()}"
        raise _fail(
            f"no data in {where}: nothing has run with it yet"
            " (choose the data dir with --data-dir or POSTHOG_CUSTOMERIO_DATA_DIR; without one, serve --sandbox"
            " and send --sandbox use a throwaway data dir, which serve --sandbox logs when it starts)",
            EXIT_FAILED,
        )


@app.command("dead-letters")
@_setting_flags(STORE_FLAGS)
def dead_letters(
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines")] = False,
    limit: Annotated[int | None, typer.Option("--limit", help="Show at most this many")] = None,
) -> None:
    """List dead-lettered operations with the reason Customer.io gave."""
    with _exits():
        settings = _settings(data_dir=data_dir)
        _require_data(settings)
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
        payload = json.loads(letter.payload)
        what = f"{payload.get('action')} {payload.get('name', '')}".strip()
        out.print(f"#{letter.id} {letter.person_key} {what}: {letter.reason}", markup=False, soft_wrap=True)
    out.print(f"{len(letters)} dead letters; re-queue them with: posthog-customerio retry-dead-letters")


@app.command("retry-dead-letters")
@_setting_flags(STORE_FLAGS)
def retry_dead_letters(
    data_dir: DataDir = None,
    ids: Annotated[list[int] | None, typer.Argument(help="Dead-letter ids (default: all)", show_default=False)] = None,
) -> None:
    """Re-queue dead-lettered operations (delivered by the next send or the running server)."""
    with _exits():
        settings = _settings(data_dir=data_dir)
        _require_data(settings)
        with Runtime(settings) as runtime:
            requeued = runtime.outbox.requeue_dead_letters(ids or None)
    out.print(f"re-queued {len(requeued)} operations")
    unknown = sorted(set(ids or ()) - set(requeued))
    if unknown:
        listed = ", ".join(f"#{number}" for number in unknown)
        raise _fail(f"no dead letter {listed} (see posthog-customerio dead-letters)", EXIT_FAILED)


# -- sandbox ---------------------------------------------------------------------------
@app.command("sandbox")
def sandbox_command(
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1")] = 8765,
    host: Annotated[str, typer.Option("--host", help="Interface to bind")] = "127.0.0.1",
    site_id: Annotated[str, typer.Option("--site-id", help="Accepted site ID")] = "sandbox",
    api_key: Annotated[str, typer.Option("--api-key", help="Accepted API key")] = "sandbox",
    region: Annotated[str, typer.Option("--region", help="Region it reports")] = "us",
) -> None:
    """Run the local Customer.io-compatible Track API (people and events kept in memory)."""
    _check_port(port)
    from .sandbox import serve

    err.print(
        f"sandbox Track API on http://{host}:{port} (site ID {site_id!r}, API key {api_key!r});"
        f" see http://{host}:{port}/_sandbox/people",
        markup=False,
    )
    serve(host=host, port=port, site_id=site_id, api_key=api_key, region=region)
