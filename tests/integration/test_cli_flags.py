"""Every documented flag of every command, exercised the way a user types it.

:data:`COVERAGE` maps each ``(command, flag)`` of the typer app to the test that passes that flag on
that command's command line and checks what the docs (docs/configuration.md, docs/commands.md) say it does.
:func:`test_every_flag_of_every_command_has_a_test` enumerates the app's commands and options
(click introspection), so a flag added without a test fails here, naming it. A flag that defaults
one way is given against an environment variable set the other way wherever possible: the effect
seen is then the flag's, not the default's ("flags win over --plugin-config, which wins over the
environment").

Most flags show their effect in the sandbox (what Customer.io received), in the command's output
or over HTTP (``serve`` runs as a real process). The few whose effect cannot be seen in a short test
(``--lease-s``, ``--sqlite-synchronous``, ``--delivery-linger-s`` outside ``send``...) are checked to
reach the settings the command runs with, and a bad value to stop the command naming the variable
(:func:`test_flags_without_a_visible_effect_reach_the_settings`).
"""

from __future__ import annotations

import ast
import base64
import contextlib
import functools
import hashlib
import hmac
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer

from posthog_customerio import cli as cli_module
from posthog_customerio.cli import options as cli_options
from posthog_customerio.config import Settings
from posthog_customerio.ids import event_ulid
from posthog_customerio.output import pipelines as pipelines_output
from posthog_customerio.output import track as track_output
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources import parse_payload

from ..activity_helpers import activity_body, post_activity
from ..conftest import API_KEY, SITE_ID, Cli, write_jsonl
from ..helpers import assert_exactly_once, ev, free_port, profiles, wait_for, wait_serving
from ..posthog_api_standin import STANDIN_KEY, PersonsStandin, running_persons_standin
from ..posthog_capture_standin import running_capture_standin

TESTS = Path(__file__).resolve().parents[1]
SRC = TESTS.parent / "src"
#: nothing listens there: a Customer.io (or region) that must not be the one used
DEAD_URL = "http://127.0.0.1:9"
#: how long the sandbox takes to answer in the timeout tests (a 0.2 s timeout gives up before)
SLOW_S = 1.0


# -- the coverage table ---------------------------------------------------------------------------
#: (command, flag) -> the test exercising it: a test of this module, or ``file.py::test`` of another
#: test file that passes the flag on that command's command line. ``posthog-customerio`` is the root.
_SEND = "test_send_mapping_and_delivery_flags"
_SEND_OFF = "test_send_mapping_and_delivery_flags"
_SETTINGS = "test_flags_without_a_visible_effect_reach_the_settings"
_DELETE = "test_delete_person_and_unsuppress_flags"
_DELETE_DELIVERY = "test_delete_person_and_unsuppress_delivery_flags"
_READ_ONLY = "test_read_only_commands_read_the_store_the_flags_name"
_SERVE_EDGE = "test_serve_ingest_role_auth_limits_and_connections"
_SERVE_ON = "test_serve_mapping_delivery_and_logging_flags"
_SERVE_OFF = "test_serve_negated_flags_proxy_and_shutdown"
_CONSUME = "test_consume_mapping_and_kafka_flags"
_PERSONS = "test_sync_persons_mapping_and_delivery_flags"
_PERSONS_RESTART = "test_sync_persons_restart_and_dry_run_flags"
_PERSONS_TIMING = "test_sync_persons_delivery_timing_flags"
_PERSONS_EVENT_FLAGS = "test_sync_persons_event_flags_leave_persons_alone"
_POSTHOG_API = "test_sync_persons_posthog_api_flags"
_COHORTS = "test_sync_cohorts_mapping_and_delivery_flags"
_COHORTS_DRY = "test_sync_cohorts_dry_run_allow_empty_and_json_flags"
_COHORTS_TIMING = "test_sync_cohorts_delivery_timing_flags"
_COHORTS_SETTINGS = "test_sync_cohorts_flags_without_a_visible_effect_reach_the_settings"
_COHORTS_API = "test_sync_cohorts_posthog_api_flags"
_ACTIVITY = "test_serve_customerio_activity_flags"
_ACTIVITY_CLI = "test_activity_commands_flags"
COVERAGE: dict[str, dict[str, str]] = {
    "posthog-customerio": {"--version": "test_cli.py::test_version_prints_the_version"},
    "check": {
        "--site-id": "test_check_credentials_flags",
        "--api-key": "test_check_credentials_flags",
        "--track-url": "test_check_credentials_flags",
        "--region": "test_check_region_flag",
        "--plugin-config": "test_check_plugin_config_and_sandbox",
        "--sandbox": "test_check_plugin_config_and_sandbox",
        "--api": "test_check_pipelines_flags",
        "--customerio-pipelines-api-key": "test_check_pipelines_flags",
        "--customerio-pipelines-url": "test_check_pipelines_flags",
        "--customerio-timeout-s": "test_check_timeout_flag",
        "--retry-after-max-s": _SETTINGS,
    },
    "send": {
        "--site-id": _SEND,
        "--api-key": _SEND,
        "--track-url": _SEND,
        "--region": "test_send_region_flag",
        "--api": _SEND,
        "--identify-by-email": _SEND,
        "--no-identify-by-email": _SEND_OFF,
        "--send-events-from-anonymous-users": _SEND,
        "--events-to-send": _SEND,
        "--events-to-skip": _SEND,
        "--convert-dates": _SEND,
        "--no-convert-dates": _SEND_OFF,
        "--data-dir": _SEND,
        "--max-rps": _SEND,
        "--concurrency": _SETTINGS,
        "--plugin-config": _SEND_OFF,
        "--sandbox": "test_cli.py::test_send_sandbox_runs_the_bundled_sample",
        "--timeout": "test_data_dir.py::test_send_with_data_dir_keeps_the_directory_and_its_queue",
        "--json": "test_cli.py::test_invalid_lines_are_reported_with_line_numbers_and_skipped",
        "--merge-people": _SEND,
        "--no-merge-people": _SEND_OFF,
        "--anonymous-events": _SEND,
        "--group-type-map": _SEND,
        "--suppress-on-delete": _SEND,
        "--no-suppress-on-delete": _SEND_OFF,
        "--limits": _SEND,
        "--properties-to-exclude": _SEND,
        "--properties-to-include": _SEND,
        "--event-name-map": _SEND,
        "--delivery-linger-s": "test_send_delivery_timing_flags",
        "--customerio-timeout-s": "test_send_delivery_timing_flags",
        "--retry-after-max-s": "test_send_delivery_timing_flags",
        "--anonymous-hold-s": "test_anonymous_hold.py::"
        "test_send_adopts_within_the_file_and_does_not_wait_for_the_hold_at_the_end",
        "--anonymous-max-age-s": _SETTINGS,
        "--anonymous-backlog-max": "test_anonymous_status.py::test_send_enforces_the_bounds_before_it_delivers",
        "--outbox-max-queued": "test_send_outbox_max_queued_flag",
        "--outbox-url": _SEND_OFF,
        "--lease-s": _SETTINGS,
        "--sqlite-synchronous": _SETTINGS,
        "--customerio-pipelines-api-key": "test_send_pipelines_flags",
        "--customerio-pipelines-url": "test_send_pipelines_flags",
    },
    "sync-persons": {
        "--from": _PERSONS,
        "--restart": _PERSONS_RESTART,
        "--dry-run": _PERSONS_RESTART,
        "--sandbox": "test_sync_persons_sandbox_and_timeout_flags",
        "--timeout": "test_sync_persons_sandbox_and_timeout_flags",
        "--json": _PERSONS,
        "--site-id": _PERSONS,
        "--api-key": _PERSONS,
        "--region": "test_sync_persons_region_flag",
        "--track-url": _PERSONS,
        "--api": _PERSONS,
        "--customerio-pipelines-api-key": "test_sync_persons_pipelines_flags",
        "--customerio-pipelines-url": "test_sync_persons_pipelines_flags",
        "--customerio-timeout-s": _PERSONS_TIMING,
        "--retry-after-max-s": _PERSONS_TIMING,
        "--delivery-linger-s": _PERSONS_TIMING,
        "--identify-by-email": _PERSONS,
        "--no-identify-by-email": _PERSONS,
        "--send-events-from-anonymous-users": _PERSONS,
        "--events-to-send": _PERSONS_EVENT_FLAGS,
        "--events-to-skip": _PERSONS_EVENT_FLAGS,
        "--convert-dates": _PERSONS,
        "--no-convert-dates": _PERSONS,
        "--merge-people": _PERSONS,
        "--no-merge-people": _PERSONS,
        "--anonymous-events": _PERSONS,
        "--group-type-map": _PERSONS_EVENT_FLAGS,
        "--suppress-on-delete": _PERSONS,
        "--no-suppress-on-delete": _PERSONS,
        "--limits": _PERSONS,
        "--properties-to-exclude": _PERSONS,
        "--properties-to-include": _PERSONS,
        "--event-name-map": _PERSONS_EVENT_FLAGS,
        "--max-rps": _PERSONS,
        "--concurrency": _SETTINGS,
        "--anonymous-hold-s": _SETTINGS,
        "--anonymous-max-age-s": _SETTINGS,
        "--anonymous-backlog-max": _SETTINGS,
        "--outbox-max-queued": "test_sync_persons_outbox_max_queued_flag",
        "--data-dir": _PERSONS,
        "--outbox-url": _PERSONS,
        "--lease-s": _SETTINGS,
        "--sqlite-synchronous": _SETTINGS,
        "--posthog-api-host": _POSTHOG_API,
        "--posthog-project-id": _POSTHOG_API,
        "--posthog-personal-api-key": _POSTHOG_API,
        "--posthog-api-max-per-minute": _POSTHOG_API,
        "--plugin-config": _PERSONS,
    },
    "sync-cohorts": {
        "--dry-run": _COHORTS_DRY,
        "--allow-empty": _COHORTS_DRY,
        "--json": _COHORTS_DRY,
        "--sandbox": "test_sync_cohorts_sandbox_and_timeout_flags",
        "--timeout": "test_sync_cohorts_sandbox_and_timeout_flags",
        "--site-id": _COHORTS,
        "--api-key": _COHORTS,
        "--region": "test_sync_cohorts_region_flag",
        "--track-url": _COHORTS,
        "--api": _COHORTS,
        "--customerio-pipelines-api-key": "test_sync_cohorts_pipelines_flags",
        "--customerio-pipelines-url": "test_sync_cohorts_pipelines_flags",
        "--customerio-timeout-s": _COHORTS_TIMING,
        "--retry-after-max-s": _COHORTS_TIMING,
        "--delivery-linger-s": _COHORTS_TIMING,
        "--identify-by-email": _COHORTS,
        "--no-identify-by-email": _COHORTS,
        "--send-events-from-anonymous-users": _COHORTS,
        "--events-to-send": _COHORTS_SETTINGS,
        "--events-to-skip": _COHORTS_SETTINGS,
        "--convert-dates": _COHORTS,
        "--no-convert-dates": _COHORTS,
        "--merge-people": _COHORTS,
        "--no-merge-people": _COHORTS,
        "--anonymous-events": _COHORTS,
        "--group-type-map": _COHORTS_SETTINGS,
        "--suppress-on-delete": _COHORTS,
        "--no-suppress-on-delete": _COHORTS,
        "--limits": _COHORTS,
        "--properties-to-exclude": _COHORTS,
        "--properties-to-include": _COHORTS,
        "--event-name-map": _COHORTS_SETTINGS,
        "--max-rps": _COHORTS,
        "--concurrency": _COHORTS_SETTINGS,
        "--anonymous-hold-s": _COHORTS_SETTINGS,
        "--anonymous-max-age-s": _COHORTS_SETTINGS,
        "--anonymous-backlog-max": _COHORTS_SETTINGS,
        "--outbox-max-queued": "test_sync_cohorts_outbox_max_queued_flag",
        "--data-dir": _COHORTS,
        "--outbox-url": _COHORTS,
        "--lease-s": _COHORTS_SETTINGS,
        "--sqlite-synchronous": _COHORTS_SETTINGS,
        "--posthog-api-host": _COHORTS_API,
        "--posthog-project-id": _COHORTS_API,
        "--posthog-personal-api-key": _COHORTS_API,
        "--posthog-api-max-per-minute": _COHORTS_API,
        "--cohort-segments": _COHORTS,
        "--cohort-attributes": _COHORTS,
        "--cohort-attribute-prefix": _COHORTS,
        "--plugin-config": _COHORTS,
    },
    "delete-person": {
        "--site-id": _DELETE,
        "--api-key": _DELETE,
        "--region": "test_delete_person_and_unsuppress_region_and_plugin_config",
        "--track-url": _DELETE,
        "--api": _DELETE,
        "--identify-by-email": _DELETE,
        "--no-identify-by-email": _DELETE,
        "--data-dir": _DELETE,
        "--plugin-config": "test_delete_person_and_unsuppress_region_and_plugin_config",
        "--sandbox": "test_operator_view.py::test_delete_person_sandbox_deletes_in_the_in_process_sandbox",
        "--suppress": _DELETE,
        "--no-suppress": _DELETE,
        "--timeout": "test_delete_person_and_unsuppress_timeout_and_outbox_url",
        "--delivery-linger-s": _SETTINGS,
        "--customerio-timeout-s": _DELETE_DELIVERY,
        "--retry-after-max-s": _DELETE_DELIVERY,
        "--outbox-url": "test_delete_person_and_unsuppress_timeout_and_outbox_url",
        "--lease-s": _SETTINGS,
        "--sqlite-synchronous": _SETTINGS,
        "--customerio-pipelines-api-key": _DELETE_DELIVERY,
        "--customerio-pipelines-url": _DELETE_DELIVERY,
    },
    "unsuppress": {
        "--site-id": _DELETE,
        "--api-key": _DELETE,
        "--region": "test_delete_person_and_unsuppress_region_and_plugin_config",
        "--track-url": _DELETE,
        "--api": _DELETE,
        "--data-dir": _DELETE,
        "--plugin-config": "test_delete_person_and_unsuppress_region_and_plugin_config",
        "--timeout": "test_delete_person_and_unsuppress_timeout_and_outbox_url",
        "--delivery-linger-s": _SETTINGS,
        "--customerio-timeout-s": _DELETE_DELIVERY,
        "--retry-after-max-s": _DELETE_DELIVERY,
        "--outbox-url": "test_delete_person_and_unsuppress_timeout_and_outbox_url",
        "--lease-s": _SETTINGS,
        "--sqlite-synchronous": _SETTINGS,
        "--customerio-pipelines-api-key": _DELETE_DELIVERY,
        "--customerio-pipelines-url": _DELETE_DELIVERY,
    },
    "serve": {
        "--host": _SERVE_EDGE,
        "--port": _SERVE_EDGE,
        "--site-id": _SERVE_ON,
        "--api-key": _SERVE_ON,
        "--region": _SERVE_ON,
        "--track-url": _SERVE_OFF,
        "--api": _SERVE_ON,
        "--identify-by-email": _SERVE_ON,
        "--no-identify-by-email": _SERVE_OFF,
        "--send-events-from-anonymous-users": _SERVE_ON,
        "--events-to-send": _SERVE_ON,
        "--events-to-skip": _SERVE_ON,
        "--convert-dates": _SERVE_ON,
        "--no-convert-dates": _SERVE_OFF,
        "--data-dir": _SERVE_ON,
        "--max-rps": _SERVE_ON,
        "--concurrency": _SERVE_ON,
        "--plugin-config": _SERVE_OFF,
        "--sandbox": "test_data_dir.py::test_serve_with_data_dir_keeps_the_directory",
        "--webhook-token": _SERVE_EDGE,
        "--webhook-signing-secret": _SERVE_EDGE,
        "--ops-token": _SERVE_EDGE,
        "--allow-unauthenticated": "test_serve_allow_unauthenticated_flags",
        "--no-allow-unauthenticated": "test_serve_allow_unauthenticated_flags",
        "--max-body-bytes": _SERVE_EDGE,
        "--max-queue": _SERVE_EDGE,
        "--shutdown-grace-s": _SERVE_OFF,
        "--log-format": _SERVE_ON,
        "--outbox-url": _SERVE_EDGE,
        "--role": _SERVE_EDGE,
        "--max-events-per-request": _SERVE_EDGE,
        "--timeout-keep-alive": _SERVE_EDGE,
        "--http-read-timeout-s": _SERVE_EDGE,
        "--posthog-host": _SERVE_OFF,
        "--cors-origins": _SERVE_EDGE,
        "--merge-people": _SERVE_ON,
        "--no-merge-people": _SERVE_OFF,
        "--anonymous-events": _SERVE_ON,
        "--group-type-map": _SERVE_ON,
        "--suppress-on-delete": _SERVE_ON,
        "--no-suppress-on-delete": _SERVE_OFF,
        "--limits": _SERVE_ON,
        "--properties-to-exclude": _SERVE_ON,
        "--properties-to-include": _SERVE_ON,
        "--event-name-map": _SERVE_ON,
        "--delivery-linger-s": _SETTINGS,
        "--customerio-timeout-s": _SETTINGS,
        "--retry-after-max-s": _SETTINGS,
        "--anonymous-hold-s": _SETTINGS,
        "--anonymous-max-age-s": _SETTINGS,
        "--anonymous-backlog-max": _SETTINGS,
        "--outbox-max-queued": "test_serve_outbox_max_queued_flag",
        "--workers": "test_serve_workers_flag",
        "--lease-s": _SETTINGS,
        "--sqlite-synchronous": _SETTINGS,
        "--auth-retry-s": _SERVE_ON,
        "--log-level": _SERVE_ON,
        "--posthog-timeout-s": _SERVE_OFF,
        "--customerio-pipelines-api-key": _SERVE_EDGE,
        "--customerio-pipelines-url": _SERVE_EDGE,
        "--person-sync-interval-s": "test_serve_person_sync_flags",
        "--posthog-api-host": "test_serve_person_sync_flags",
        "--posthog-project-id": "test_serve_person_sync_flags",
        "--posthog-personal-api-key": "test_serve_person_sync_flags",
        "--posthog-api-max-per-minute": "test_serve_person_sync_flags",
        "--cohort-segments": "test_serve_cohort_sync_flags",
        "--cohort-attributes": "test_serve_cohort_sync_flags",
        "--cohort-attribute-prefix": "test_serve_cohort_sync_flags",
        "--cohort-sync-interval-s": "test_serve_cohort_sync_flags",
        "--customerio-webhook-signing-key": _ACTIVITY,
        "--customerio-webhook-tolerance-s": _ACTIVITY,
        "--posthog-project-api-key": _ACTIVITY,
    },
    "consume": {
        "--kafka-bootstrap": _CONSUME,
        "--topic": _CONSUME,
        "--group": _CONSUME,
        "--kafka-config": _CONSUME,
        "--kafka-config-file": _CONSUME,
        "--batch-size": _CONSUME,
        "--max-messages": _CONSUME,
        "--site-id": _CONSUME,
        "--api-key": _CONSUME,
        "--region": _CONSUME,
        "--track-url": _CONSUME,
        "--api": _CONSUME,
        "--identify-by-email": _CONSUME,
        "--no-identify-by-email": _CONSUME,
        "--send-events-from-anonymous-users": _CONSUME,
        "--events-to-send": _CONSUME,
        "--events-to-skip": _CONSUME,
        "--convert-dates": _CONSUME,
        "--no-convert-dates": _CONSUME,
        "--data-dir": "test_consume_sandbox_data_dir_and_pipelines_flags",
        "--max-rps": _CONSUME,
        "--concurrency": _CONSUME,
        "--plugin-config": _CONSUME,
        "--sandbox": "test_consume_sandbox_data_dir_and_pipelines_flags",
        "--shutdown-grace-s": _CONSUME,
        "--log-format": _CONSUME,
        "--json": _CONSUME,
        "--merge-people": _CONSUME,
        "--no-merge-people": _CONSUME,
        "--anonymous-events": _CONSUME,
        "--group-type-map": _CONSUME,
        "--suppress-on-delete": _CONSUME,
        "--no-suppress-on-delete": _CONSUME,
        "--limits": _CONSUME,
        "--properties-to-exclude": _CONSUME,
        "--properties-to-include": _CONSUME,
        "--event-name-map": _CONSUME,
        "--delivery-linger-s": _CONSUME,
        "--customerio-timeout-s": _CONSUME,
        "--retry-after-max-s": _CONSUME,
        "--anonymous-hold-s": _CONSUME,
        "--anonymous-max-age-s": _CONSUME,
        "--anonymous-backlog-max": _CONSUME,
        "--reorder-window-s": _CONSUME,
        "--reorder-stale-s": _CONSUME,
        "--outbox-max-queued": "test_consume_outbox_max_queued_flag",
        "--outbox-url": _CONSUME,
        "--lease-s": _CONSUME,
        "--sqlite-synchronous": _CONSUME,
        "--auth-retry-s": _CONSUME,
        "--log-level": _CONSUME,
        "--customerio-pipelines-api-key": "test_consume_sandbox_data_dir_and_pipelines_flags",
        "--customerio-pipelines-url": "test_consume_sandbox_data_dir_and_pipelines_flags",
    },
    "status": {
        "--data-dir": _READ_ONLY,
        "--json": _READ_ONLY,
        "--outbox-url": _READ_ONLY,
        "--lease-s": _READ_ONLY,
        "--sqlite-synchronous": _READ_ONLY,
    },
    "compact": {
        "--data-dir": "test_disk.py::test_compact_converts_and_shrinks_an_older_file",
        "--outbox-url": "test_disk.py::test_compact_converts_and_shrinks_an_older_file",
        "--lease-s": "test_disk.py::test_compact_converts_and_shrinks_an_older_file",
        "--sqlite-synchronous": "test_disk.py::test_compact_converts_and_shrinks_an_older_file",
    },
    "person": {
        "--data-dir": "test_person_view.py::test_person_flags",
        "--json": "test_person_view.py::test_person_flags",
        "--outbox-url": "test_person_view.py::test_person_flags",
        "--lease-s": "test_person_view.py::test_person_flags",
        "--sqlite-synchronous": "test_person_view.py::test_person_flags",
        "--identify-by-email": "test_person_view.py::test_person_flags",
        "--no-identify-by-email": "test_person_view.py::test_person_flags",
    },
    "dead-letters": {
        "--data-dir": _READ_ONLY,
        "--json": _READ_ONLY,
        "--limit": _READ_ONLY,
        "--outbox-url": _READ_ONLY,
        "--lease-s": _READ_ONLY,
        "--sqlite-synchronous": _READ_ONLY,
    },
    "retry-dead-letters": {
        "--data-dir": _READ_ONLY,
        "--outbox-url": _READ_ONLY,
        "--lease-s": _READ_ONLY,
        "--sqlite-synchronous": _READ_ONLY,
    },
    "activity": {
        "--json": _ACTIVITY_CLI,
        "--data-dir": _ACTIVITY_CLI,
        "--outbox-url": _ACTIVITY_CLI,
        "--lease-s": _ACTIVITY_CLI,
        "--sqlite-synchronous": _ACTIVITY_CLI,
    },
    "activity-retry": {
        "--unplaced": _ACTIVITY_CLI,
        "--dead": _ACTIVITY_CLI,
        "--data-dir": _ACTIVITY_CLI,
        "--outbox-url": _ACTIVITY_CLI,
        "--lease-s": _ACTIVITY_CLI,
        "--sqlite-synchronous": _ACTIVITY_CLI,
    },
    "sandbox": {
        "--port": "test_sandbox_command_flags",
        "--host": "test_sandbox_command_flags",
        "--site-id": "test_sandbox_command_flags",
        "--api-key": "test_sandbox_command_flags",
        "--region": "test_sandbox_command_flags",
    },
}


def app_flags() -> set[tuple[str, str]]:
    """Every ``(command, flag)`` of the app: each option's names and its ``--no-...`` form (``--help`` aside)."""
    root = typer.main.get_command(cli_module.app)
    found = set()
    commands: dict[str, Any] = {"posthog-customerio": root, **getattr(root, "commands", {})}
    for name, command in commands.items():
        for param in command.params:
            if param.param_type_name == "option":
                found.update((name, flag) for flag in (*param.opts, *param.secondary_opts))
    return found


def test_every_flag_of_every_command_has_a_test() -> None:
    flags = app_flags()
    table = {(command, flag) for command, entries in COVERAGE.items() for flag in entries}
    missing = sorted(flags - table)
    assert not missing, (
        "flags without a test (add a test passing each on that command's command line, and its row in"
        f" COVERAGE of {Path(__file__).name}): " + ", ".join(f"{command} {flag}" for command, flag in missing)
    )
    stale = sorted(table - flags)
    assert not stale, "COVERAGE names flags the app does not have: " + ", ".join(f"{c} {f}" for c, f in stale)
    assert len(flags) > 200  # the enumeration found the commands' options (not an empty app)


@functools.cache
def _segments(path: Path) -> dict[str, str]:
    """The source of each top-level function and assignment of a module, by name."""
    text = path.read_text()
    segments: dict[str, str] = {}
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            lines = text.splitlines()[first - 1 : node.end_lineno]
            segments[node.name] = "\n".join(lines)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    segments[target.id] = ast.get_source_segment(text, node) or ""
    return segments


@functools.cache
def _reachable_source(name: str, path: Path) -> str:
    """A test's source and the source of every top-level helper or constant of its module it uses."""
    segments = _segments(path)
    seen, todo, parts = set(), [name], []
    while todo:
        current = todo.pop()
        if current in seen or current not in segments or current == "COVERAGE":
            continue
        seen.add(current)
        parts.append(segments[current])
        with contextlib.suppress(SyntaxError):
            todo.extend(node.id for node in ast.walk(ast.parse(segments[current])) if isinstance(node, ast.Name))
    return "\n".join(parts)


def test_the_table_names_real_tests_that_pass_each_flag() -> None:
    """Every row names a test that exists and passes that flag (and, in another file, that command)."""
    problems = []
    for command, entries in COVERAGE.items():
        for flag, where in entries.items():
            file, _, name = where.rpartition("::")
            path = next(TESTS.glob(f"*/{file}")) if file else Path(__file__)
            segments = _segments(path)
            if not name.startswith("test_") or name not in segments:
                problems.append(f"{command} {flag}: no test {where}")
                continue
            source = _reachable_source(name, path) if not file else segments[name]
            if f'"{flag}"' not in source:
                problems.append(f"{command} {flag}: {where} never passes {flag}")
            if file and command != "posthog-customerio" and f'"{command}"' not in source:
                problems.append(f"{command} {flag}: {where} never runs {command}")
    assert not problems, "\n".join(problems)


# -- helpers ---------------------------------------------------------------------------------------
def no_secrets(output: str, *secrets: str) -> None:
    """None of ``secrets`` appears in a command's output (stdout and stderr)."""
    for secret in secrets:
        assert secret not in output, f"a secret was printed: {secret[:3]}…"


@contextlib.contextmanager
def kept_logging() -> Iterator[None]:
    """``serve`` and ``consume`` configure process-wide logging: give pytest its handlers back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:], root.level = handlers, level


@pytest.fixture
def settings_seen(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """The :class:`Settings` every in-process command built from its flags, in order."""
    seen: list[Settings] = []
    real = cli_options.load_settings

    def recording(*args: Any, **kwargs: Any) -> Settings:
        settings = real(*args, **kwargs)
        seen.append(settings)
        return settings

    monkeypatch.setattr(cli_options, "load_settings", recording)
    return seen


@pytest.fixture
def regions(monkeypatch: pytest.MonkeyPatch, sandbox: SandboxServer) -> SandboxServer:
    """Customer.io's EU hosts (Track and Pipelines) are the sandbox; the US hosts answer nothing."""
    monkeypatch.setitem(track_output.REGION_URLS, "eu", sandbox.url)
    monkeypatch.setitem(track_output.REGION_URLS, "us", DEAD_URL)
    monkeypatch.setitem(pipelines_output.PIPELINES_URLS, "eu", sandbox.url)
    monkeypatch.setitem(pipelines_output.PIPELINES_URLS, "us", DEAD_URL)
    return sandbox


@pytest.fixture
def pipelines_key(sandbox: SandboxServer) -> str:
    """The sandbox's Pipelines API key for this test (a distinctive one, so it can be looked for in outputs)."""
    sandbox.pipelines.api_key = "pk-secret-7e1f0c"
    return sandbox.pipelines.api_key


@pytest.fixture
def plugin_config(tmp_path: Path) -> Path:
    """The original plugin's config JSON: the sandbox's credentials, and identify-by-email on."""
    path = tmp_path / "plugin.json"
    config = {"customerioSiteId": SITE_ID, "customerioToken": API_KEY, "identifyByEmail": "Yes"}
    path.write_text(json.dumps({"config": config}))
    return path


def wait_logged(sandbox: SandboxServer, count: int) -> None:
    """Wait until the sandbox logged ``count`` requests: a slow answer given up on is logged when it is sent,
    and must not land in the next test's log."""
    wait_for(lambda: len(sandbox.state.requests()) >= count, f"{count} requests in the sandbox's log", 10)


def request_gaps(sandbox: SandboxServer) -> list[float]:
    times = sorted(entry["time"] for entry in sandbox.state.requests())
    return [later - earlier for earlier, later in itertools.pairwise(times)]


# -- one stream that shows the mapping flags ---------------------------------------------------------
LONG_NAME = "l" * 101  # over Customer.io's 100-byte event name limit
SCENARIO_ALLOWLIST = "$identify,clicked,noisy_click,$pageleave,$pageview,signed_up,$groupidentify,$delete_person,"
SCENARIO_ALLOWLIST += LONG_NAME
#: flags of the stream with their (non-default) values; the environment says otherwise
SCENARIO_FLAGS = (
    *("--events-to-send", SCENARIO_ALLOWLIST),
    *("--events-to-skip", "noisy_*"),
    *("--send-events-from-anonymous-users", "all"),
    *("--anonymous-events", "person"),
    *("--event-name-map", "clicked=Clicked It"),
    *("--group-type-map", "company=1"),
    *("--limits", "truncate"),
    *("--properties-to-include", "keep_*,signup_at,plan,name,$current_url"),
    *("--properties-to-exclude", "keep_secret"),
    *("--max-rps", "40"),
)
SCENARIO_ON = ("--identify-by-email", "--convert-dates", "--merge-people", "--suppress-on-delete", "--api", "v1")
SCENARIO_OFF = ("--no-identify-by-email", "--no-convert-dates", "--no-merge-people", "--no-suppress-on-delete")
SCENARIO_OFF += ("--api", "v2")
SCENARIO_RPS = 40


def scenario_env(on: bool) -> dict[str, str]:
    """The environment each flag of the stream overrides (wrong credentials, contrary values)."""
    off = str(not on).lower()
    return {
        "CUSTOMERIO_SITE_ID": "env-site",
        "CUSTOMERIO_API_KEY": "env-key",
        "CUSTOMERIO_REGION": "us",
        "CUSTOMERIO_TRACK_URL": DEAD_URL,
        "CUSTOMERIO_API": "v2" if on else "v1",
        "EVENTS_TO_SEND": "other",
        "SEND_EVENTS_FROM_ANONYMOUS_USERS": "identified",
        "ANONYMOUS_EVENTS": "anonymous",
        "EVENT_NAME_MAP": "clicked=Other",
        "GROUP_TYPE_MAP": "company=9",
        "LIMITS": "dead-letter",
        "PROPERTIES_TO_INCLUDE": "plan",
        "PROPERTIES_TO_EXCLUDE": "keep_a",
        "IDENTIFY_BY_EMAIL": off,
        "CONVERT_DATES": off,
        "MERGE_PEOPLE": off,
        "SUPPRESS_ON_DELETE": off,
        "CUSTOMERIO_MAX_RPS": "100000",
        "SQLITE_SYNCHRONOUS": "NORMAL",
    }


def scenario_events() -> list[dict[str, Any]]:
    visitor = {"$is_identified": False, "$device_id": "dev-1"}
    profile = {"email": "ann@example.com", "signup_at": "2024-02-01T10:00:00Z", "plan": "pro", "drop_attr": "x"}
    acme = {"name": "Acme"}
    return [
        ev("$pageview", "dev-1", 0, **visitor, **{"$current_url": "https://x.io/"}),
        ev("$identify", "ann", 10, **{"$anon_distinct_id": "dev-1"}, top={"$set": profile}),
        ev("clicked", "ann", 20, keep_a=1, keep_secret=2, drop_me=3),
        ev("noisy_click", "ann", 21),
        ev("$pageleave", "ann", 22, **{"$current_url": "https://x.io/a"}),
        ev("not_listed", "ann", 23),
        ev(LONG_NAME, "ann", 24),
        ev("clicked", "bob", 30),  # a server-side user who never identified
        ev("$groupidentify", "ann", 40, **{"$group_type": "company", "$group_key": "acme", "$group_set": acme}),
        ev("signed_up", "carol", 50, top={"$set": {"email": "carol@example.com"}}),
        ev("$delete_person", "carol", 60),
    ]


def check_scenario(sandbox: SandboxServer, on: bool) -> None:
    """What Customer.io holds after :func:`scenario_events` with :data:`SCENARIO_FLAGS` (and the on/off set)."""
    ann = sandbox.state.person("ann@example.com")
    assert ann is not None, sandbox.state.people()
    names = [event["name"] for event in ann["events"]]
    # --event-name-map (env: clicked=Other), --events-to-send (env: other), --events-to-skip (env: the default
    # list, which holds $pageleave)
    assert "Clicked It" in names and "$pageleave" in names, names
    assert "not_listed" not in names and "noisy_click" not in names, names
    assert "l" * 100 in names  # --limits truncate (env: dead-letter): the name is cut, not rejected
    # --properties-to-include / --properties-to-exclude (env: plan / keep_a); email is always sent
    (clicked,) = [event for event in ann["events"] if event["name"] == "Clicked It"]
    assert clicked["data"] == {"keep_a": 1}
    assert ann["email"] == "ann@example.com" and ann["attributes"]["plan"] == "pro"
    assert "drop_attr" not in ann["attributes"]
    # --send-events-from-anonymous-users all (env: identified): bob never identified, his event arrives
    assert [event["name"] for event in sandbox.state.events("bob")] == ["Clicked It"]
    # --anonymous-events person (env: anonymous): the visitor was made a person, never an anonymous event
    requests = sandbox.state.requests()
    assert sandbox.state.anonymous_events() == []
    assert not [entry for entry in requests if entry["path"] == "/api/v1/events"]
    # --group-type-map company=1 (env: company=9)
    assert [(o["object_type_id"], o["object_id"], o["attributes"]) for o in sandbox.state.objects()] == [
        ("1", "acme", {"name": "Acme"})
    ]
    persons = [entry for entry in requests if entry["path"] != "/api/v2/batch" or _has_person_item(entry)]
    if on:
        assert ann["id"] is None  # --identify-by-email: ann is addressed by her email only
        assert ann["attributes"]["signup_at"] == 1_706_781_600  # --convert-dates
        assert sandbox.state.person("dev-1") is None and "https://x.io/" in names  # --merge-people
        assert any(s.get("id") == "carol" for s in sandbox.state.suppressions())  # --suppress-on-delete
        assert persons and all(entry["path"].startswith("/api/v1/") for entry in persons)  # --api v1
        gaps = request_gaps(sandbox)  # --max-rps (env: 100000): requests spaced 1/40 s apart
        assert len(gaps) >= 10 and sum(gaps) / len(gaps) >= 0.8 / SCENARIO_RPS, gaps
    else:
        assert ann["id"] == "ann"  # --no-identify-by-email
        assert ann["attributes"]["signup_at"] == "2024-02-01T10:00:00Z"  # --no-convert-dates
        visitor = sandbox.state.person("dev-1")  # --no-merge-people
        assert visitor is not None and [event["name"] for event in visitor["events"]] == ["https://x.io/"]
        assert sandbox.state.suppressions() == [] and sandbox.state.person("carol") is None  # --no-suppress-on-delete
        assert {entry["path"] for entry in requests} == {"/api/v2/batch"}  # --api v2


def _has_person_item(entry: dict[str, Any]) -> bool:
    return any(item.get("type") == "person" for item in (entry.get("body") or {}).get("batch", []))


# -- send ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("on", [True, False], ids=["flags", "negated-flags"])
def test_send_mapping_and_delivery_flags(
    cli: Cli, sandbox: SandboxServer, tmp_path: Path, plugin_config: Path, on: bool
) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", scenario_events())
    env = {**scenario_env(on), "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "env-data")}
    data, outbox = tmp_path / "mine", tmp_path / "outbox.sqlite"
    if on:
        where = ("--site-id", SITE_ID, "--api-key", API_KEY, "--track-url", sandbox.url, "--data-dir", str(data))
        result = cli("send", *where, *SCENARIO_FLAGS, *SCENARIO_ON, str(path), env=env)
    else:
        where = ("--plugin-config", str(plugin_config), "--track-url", sandbox.url)
        where += ("--outbox-url", f"sqlite:///{outbox}")
        result = cli("send", *where, *SCENARIO_FLAGS, *SCENARIO_OFF, str(path), env=env)
    assert result.exit_code == 0, result.output
    no_secrets(result.output, SITE_ID, API_KEY)
    check_scenario(sandbox, on)
    if on:  # --data-dir: the state and outbox live there, and it is kept
        assert (data / "posthog-customerio.sqlite").is_file() and not (tmp_path / "env-data").exists()
    else:  # --outbox-url: the database is that file, not one in the data dir
        assert outbox.is_file() and not (tmp_path / "env-data" / "posthog-customerio.sqlite").exists()
        # --plugin-config gave the credentials (the sandbox refuses the environment's), and its identifyByEmail
        # Yes lost to --no-identify-by-email (checked above): flags win over the plugin's config


def test_send_empty_lists_mean_everything(
    cli: Cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path
) -> None:
    """``--events-to-send ""`` = all, ``--events-to-skip ""`` = skip nothing (over the environment's lists)."""
    path = write_jsonl(tmp_path / "events.jsonl", [ev("clicked", "u1", 0), ev("$pageleave", "u1", 1)])
    env = {**env, "EVENTS_TO_SEND": "other", "EVENTS_TO_SKIP": "clicked"}
    result = cli("send", "--events-to-send", "", "--events-to-skip", "", str(path), env=env)
    assert result.exit_code == 0, result.output
    assert sorted(event["name"] for event in sandbox.state.events("u1")) == ["$pageleave", "clicked"]


def test_send_region_flag(cli: Cli, regions: SandboxServer, tmp_path: Path) -> None:
    """``--region eu`` sends to the EU host (here the sandbox); the environment's ``us`` would not answer."""
    path = write_jsonl(tmp_path / "events.jsonl", [ev("clicked", "u1", 0)])
    env = {"CUSTOMERIO_SITE_ID": SITE_ID, "CUSTOMERIO_API_KEY": API_KEY, "CUSTOMERIO_REGION": "us"}
    env["POSTHOG_CUSTOMERIO_DATA_DIR"] = str(tmp_path / "data")
    result = cli("send", "--region", "eu", "--timeout", "20", str(path), env=env)
    assert result.exit_code == 0, result.output
    assert [event["name"] for event in regions.state.events("u1")] == ["clicked"]
    result = cli("send", "--region", "mars", str(path), env=env)
    assert result.exit_code == 2 and result.stderr.startswith("error: CUSTOMERIO_REGION:")


def test_send_pipelines_flags(cli: Cli, sandbox: SandboxServer, tmp_path: Path, pipelines_key: str) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", [ev("signed_up", "u1", 0, top={"$set": {"email": "u1@example.com"}})])
    env = {
        "CUSTOMERIO_API": "v2",
        "CUSTOMERIO_PIPELINES_API_KEY": "env-pipelines-key",
        "CUSTOMERIO_PIPELINES_URL": DEAD_URL,
        "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "data"),
    }
    pipelines = ("--api", "pipelines", "--customerio-pipelines-url", sandbox.url, "--delivery-linger-s", "0")
    result = cli("send", *pipelines, "--customerio-pipelines-api-key", pipelines_key, str(path), env=env)
    assert result.exit_code == 0, result.output
    no_secrets(result.output, pipelines_key)
    assert [person["userId"] for person in sandbox.pipelines.people()] == ["u1"]
    assert sandbox.state.requests() == []  # nothing went to the Track API
    other = tmp_path / "other"
    wrong = ("--customerio-pipelines-api-key", "wrong-pipelines-key", "--data-dir", str(other), "--timeout", "5")
    result = cli("send", *pipelines, *wrong, str(path), env={**env, "CUSTOMERIO_PIPELINES_API_KEY": pipelines_key})
    assert result.exit_code == 1 and "stays queued" in result.stderr
    no_secrets(result.output, "wrong-pipelines-key")


def check_delivery_timing_flags(
    cli: Cli,
    env: dict[str, str],
    sandbox: SandboxServer,
    tmp_path: Path,
    command: tuple[str, ...],
    operations: int,
    logged: int,
    tail: tuple[str, ...] = (),
) -> None:
    """``--delivery-linger-s`` waits for a fuller batch, ``--customerio-timeout-s`` gives up on a slow answer (and
    retries), ``--retry-after-max-s`` cuts a Retry-After (each against the environment's value): ``command``
    (e.g. ``("send",)``) run with ``--json``, a fresh data dir each time, the flag and ``tail``, sending
    ``operations`` operations; the slow answer is logged as the sandbox's ``logged``-th request."""

    def run(*flags: str, **extra: str) -> tuple[float, dict[str, Any]]:
        started = time.monotonic()
        data = ("--data-dir", str(tmp_path / str(len(os.listdir(tmp_path)))))  # a fresh one: all is new again
        result = cli(*command, "--json", *data, *flags, *tail, env={**env, **extra})
        assert result.exit_code == 0, result.output
        return time.monotonic() - started, json.loads(result.stdout)

    seconds, _ = run("--delivery-linger-s", "0.5", DELIVERY_LINGER_S="0")
    assert seconds >= 0.5  # a trickle waited for more
    sandbox.state.reset()
    sandbox.state.add_fault(delay_s=SLOW_S, count=1)
    seconds, summary = run("--customerio-timeout-s", "0.2", CUSTOMERIO_TIMEOUT_S="30")
    assert summary["retries"] >= 1 and summary["operations_delivered"] == operations  # given up on, sent again
    wait_logged(sandbox, logged)
    sandbox.state.add_fault(status=429, retry_after=3600, count=1)
    seconds, summary = run("--retry-after-max-s", "0.2", RETRY_AFTER_MAX_S="3600")
    assert summary["retries"] >= 1 and summary["operations_delivered"] == operations and seconds < 5


def test_send_delivery_timing_flags(cli: Cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", [ev("clicked", "u1", 0)])
    check_delivery_timing_flags(cli, env, sandbox, tmp_path, ("send",), 2, 2, tail=(str(path),))


def backfill_events(people: int) -> list[dict[str, Any]]:
    """Per person an identify with an email and a click: ``send`` reads 2,000 events a chunk."""
    events = []
    for n in range(people):
        events += [ev("$identify", f"b{n}", n, top={"$set": {"email": f"b{n}@example.com"}}), ev("clicked", f"b{n}", n)]
    return events


def test_send_outbox_max_queued_flag(cli: Cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path) -> None:
    """``--outbox-max-queued 10`` (env: a million): reading waits for delivery before each chunk after the first
    (3 chunks of 2,000 events), and everything is delivered; with the environment's bound it never waits."""
    path = write_jsonl(tmp_path / "events.jsonl", backfill_events(2_050))
    env = {**env, "OUTBOX_MAX_QUEUED": "1000000"}
    result = cli("send", str(path), "--outbox-max-queued", "10", env=env)
    assert result.exit_code == 0, result.output
    assert "reading waited     2 times, " in result.stdout and "s for delivery (OUTBOX_MAX_QUEUED)\n" in result.stdout
    assert len(sandbox.state.people()) == 2_050 and len(sandbox.state.events()) == 4_100  # $identify too
    other = ("--data-dir", str(tmp_path / "other"), "--json")
    summary = json.loads(cli("send", str(path), *other, env=env).stdout)
    assert summary["outbox_waits"] == {"times": 0, "seconds": 0.0, "timed_out": False} and summary["queued"] == 0


# -- sync-persons ----------------------------------------------------------------------------------
#: persons the PostHog stand-in serves, 10 a page: a third anonymous (``anon-i``), the rest identified
#: (``anon-i`` and ``user-i``, ``user{i}@example.com``, plan free or pro)
API_PERSONS, API_PAGE = 30, 10
API_IDENTIFIED = [i for i in range(API_PERSONS) if i % 3]
#: a personal API key given where the flag's must win (never valid at the stand-in)
ENV_POSTHOG_KEY = "phx_env_key_never_valid_41c7"


@dataclass
class PostHogApi:
    """The PostHog stand-in of this module (its persons list) and its base URL."""

    standin: PersonsStandin
    url: str

    def wrong_env(self) -> dict[str, str]:
        """The PostHog API settings each flag overrides: another path, project and key; 1 request a minute."""
        return {
            "POSTHOG_API_HOST": f"{self.url}/elsewhere",
            "POSTHOG_PROJECT_ID": "2",
            "POSTHOG_PERSONAL_API_KEY": ENV_POSTHOG_KEY,
            "POSTHOG_API_MAX_PER_MINUTE": "1",
        }

    def reads(self) -> list[str]:
        """The query of each request the stand-in answered 200 (``""``: the first page)."""
        with self.standin.lock:
            return [seen.query for seen in self.standin.requests if seen.status == 200]


@pytest.fixture(scope="module")
def _posthog_standin() -> Iterator[PostHogApi]:
    standin = PersonsStandin(API_PERSONS, default_limit=API_PAGE)
    with running_persons_standin(standin) as url:
        yield PostHogApi(standin, url)


@pytest.fixture
def posthog_api(_posthog_standin: PostHogApi) -> PostHogApi:
    """The PostHog stand-in, its request log emptied for this test."""
    with _posthog_standin.standin.lock:
        _posthog_standin.standin.requests.clear()
    return _posthog_standin


def person_row(
    distinct_id: str,
    person: str,
    properties: dict[str, Any],
    *,
    day: int = 1,
    distinct_id_version: int = 0,
    deleted: bool = False,
) -> dict[str, Any]:
    """A row of a PostHog persons export (``sources/batch_exports.py`` ``read_persons``), as of March ``day``."""
    return {
        "team_id": 1,
        "distinct_id": distinct_id,
        "person_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"person:{person}")),
        "properties": properties,
        "person_distinct_id_version": distinct_id_version,
        "person_version": day,
        "created_at": "2024-01-01T00:00:00Z",
        "_inserted_at": f"2024-03-{day:02d}T00:00:00Z",
        "is_deleted": deleted,
    }


#: a visitor PostHog never identified (an SDK-made id, no email, one distinct_id)
VISITOR = "0190a8f2-5b1c-7d3e-9f4a-1b2c3d4e5f60"
ANN = {"email": "ann@example.com", "signup_at": "2024-02-01T10:00:00Z", "plan": "pro", "bio": "b" * 1500}
ANN |= {"keep_a": 1, "keep_secret": 2, "drop_attr": "x"}
#: identified persons besides ann, bob and carol (enough v1 requests to measure --max-rps)
OTHERS = 12


def persons_exports(tmp_path: Path) -> tuple[Path, Path]:
    """Two persons exports of one project: the first as of March 1; the second (March 2) links bob's
    distinct_id to ann's person (PostHog merged them), deletes carol and has the visitor unchanged."""
    first = [
        person_row("ann", "ann", ANN),
        person_row("bob", "bob", {"email": "bob@example.com"}),
        person_row("carol", "carol", {"email": "carol@example.com"}),
        person_row(VISITOR, "visitor", {}),
        *(person_row(f"p{n}", f"p{n}", {"email": f"p{n}@example.com"}) for n in range(OTHERS)),
    ]
    second = [
        person_row("ann", "ann", ANN, day=2),
        person_row("bob", "ann", ANN, day=2, distinct_id_version=1),
        person_row("carol", "carol", {"email": "carol@example.com"}, day=2, deleted=True),
        person_row(VISITOR, "visitor", {}, day=2),
    ]
    return write_jsonl(tmp_path / "persons-1.jsonl", first), write_jsonl(tmp_path / "persons-2.jsonl", second)


#: the mapping and pacing flags of the persons scenario (both runs); :func:`scenario_env` says otherwise
PERSONS_FLAGS = (
    *("--send-events-from-anonymous-users", "all"),
    *("--anonymous-events", "person"),
    *("--limits", "truncate"),
    *("--properties-to-include", "keep_*,signup_at,plan,bio"),
    *("--properties-to-exclude", "keep_secret"),
    *("--max-rps", str(SCENARIO_RPS)),
)


@pytest.mark.parametrize("on", [True, False], ids=["flags", "negated-flags"])
def test_sync_persons_mapping_and_delivery_flags(
    cli: Cli, sandbox: SandboxServer, tmp_path: Path, plugin_config: Path, on: bool
) -> None:
    """Two persons exports (``--from``) synced in turn, each flag against :func:`scenario_env`."""
    exports = persons_exports(tmp_path)
    env = {**scenario_env(on), "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "env-data")}
    data, outbox = tmp_path / "mine", tmp_path / "outbox.sqlite"
    if on:
        where = ("--site-id", SITE_ID, "--api-key", API_KEY, "--track-url", sandbox.url, "--data-dir", str(data))
        flags = (*where, *PERSONS_FLAGS, *SCENARIO_ON)
    else:
        where = ("--plugin-config", str(plugin_config), "--track-url", sandbox.url)
        where += ("--outbox-url", f"sqlite:///{outbox}")
        flags = (*where, *PERSONS_FLAGS, *SCENARIO_OFF)
    summaries = []
    for export in exports:
        result = cli("sync-persons", "--from", str(export), "--json", *flags, env=env)
        assert result.exit_code == 0, result.output
        no_secrets(result.output, SITE_ID, API_KEY)
        summaries.append(json.loads(result.stdout))  # --json
    first, second = summaries
    # --from: every person of each export, the second's unchanged visitor not sent again
    assert (first["read"], first["skipped"], first["actions"]) == (4 + OTHERS, {}, {"identify": 4 + OTHERS})
    assert (second["read"], second["skipped"]) == (3, {"unchanged": 1}) and second["dead_lettered"] == 0
    found = {person["email"] or person["id"]: person for person in profiles(sandbox)}
    ann = found["ann@example.com"]
    # --properties-to-include / --properties-to-exclude (env: plan / keep_a); --limits truncate (env: dead-letter):
    # the 1,500-byte bio is cut to Customer.io's 1,000, not dead-lettered
    assert set(ann["attributes"]) == {"signup_at", "plan", "bio", "keep_a"}, ann
    assert ann["attributes"]["bio"] == "b" * 1000 and ann["attributes"]["keep_a"] == 1
    # --anonymous-events person, --send-events-from-anonymous-users all (env: anonymous, identified): the
    # visitor PostHog never identified is a profile too
    assert found[VISITOR]["id"] == VISITOR
    others = [found[f"p{n}@example.com"] for n in range(OTHERS)]
    requests = sandbox.state.requests()
    if on:
        assert all(person["id"] is None for person in others)  # --identify-by-email: addressed by email only
        assert ann["attributes"]["signup_at"] == 1_706_781_600  # --convert-dates
        # --merge-people: PostHog merged bob into ann's person, so bob's profile was merged into one with ann's
        assert second["actions"] == {"merge": 1, "suppress": 2}  # ann keeps her profile: nothing else changed
        assert "bob@example.com" not in found and len(found) == OTHERS + 2
        # --suppress-on-delete: carol, deleted in PostHog, is suppressed by her id and email
        assert sandbox.state.suppressions() == [{"id": "carol"}, {"email": "carol@example.com"}]
        assert all(entry["path"].startswith("/api/v1/") for entry in requests)  # --api v1
        gaps = request_gaps(sandbox)  # --max-rps (env: 100000): requests spaced 1/40 s apart
        assert len(gaps) >= 10 and sum(gaps) / len(gaps) >= 0.8 / SCENARIO_RPS, gaps
        # --data-dir: the state and outbox live there, and it is kept
        assert (data / "posthog-customerio.sqlite").is_file() and not (tmp_path / "env-data").exists()
    else:
        assert [person["id"] for person in others] == [f"p{n}" for n in range(OTHERS)]  # --no-identify-by-email
        assert ann["attributes"]["signup_at"] == "2024-02-01T10:00:00Z"  # --no-convert-dates
        # --no-merge-people: bob's profile stays beside ann's
        assert "merge" not in second["actions"] and found["bob@example.com"]["id"] == "bob"
        assert not [entry for entry in requests if "merge" in entry["path"]]
        assert not sandbox.state.attribute_update_failures()  # ann's email stays on ann's profile only
        # --no-suppress-on-delete: carol is deleted, not suppressed
        assert second["actions"]["delete"] == 2 and sandbox.state.suppressions() == []
        assert "carol@example.com" not in found and len(found) == OTHERS + 3
        assert {entry["path"] for entry in requests} == {"/api/v2/batch"}  # --api v2
        # --outbox-url: the database is that file, not one in the data dir; --plugin-config gave the credentials
        # (the sandbox refuses the environment's) and its identifyByEmail Yes lost to --no-identify-by-email
        assert outbox.is_file() and not (tmp_path / "env-data" / "posthog-customerio.sqlite").exists()


def test_sync_persons_posthog_api_flags(
    cli: Cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path, posthog_api: PostHogApi
) -> None:
    """The stand-in's persons through the PostHog API flags, over an environment with another host path, project
    and key, and 1 request a minute (the three pages would take two minutes)."""
    url = posthog_api.url
    api = ("--posthog-api-host", url, "--posthog-project-id", "1", "--posthog-personal-api-key", STANDIN_KEY)
    api += ("--posthog-api-max-per-minute", "1000")
    env = {**env, **posthog_api.wrong_env(), "IDENTIFY_BY_EMAIL": "false"}
    env |= {"ANONYMOUS_EVENTS": "anonymous", "SEND_EVENTS_FROM_ANONYMOUS_USERS": "all"}
    mapping = ("--anonymous-events", "person", "--send-events-from-anonymous-users", "with_email")
    started = time.monotonic()
    result = cli("sync-persons", *api, *mapping, "--identify-by-email", "--json", env=env)
    assert result.exit_code == 0, result.output
    no_secrets(result.output, STANDIN_KEY, ENV_POSTHOG_KEY, SITE_ID, API_KEY)
    assert time.monotonic() - started < 30  # --posthog-api-max-per-minute 1000 (env: 1)
    # --posthog-api-host, --posthog-project-id, --posthog-personal-api-key: the three pages, each accepted
    assert posthog_api.reads() == ["", "limit=10&offset=10", "limit=10&offset=20"]
    assert [(seen.path, seen.authorized) for seen in posthog_api.standin.requests] == [
        ("/api/projects/1/persons/", True)
    ] * 3
    summary = json.loads(result.stdout)
    # --anonymous-events person (env: anonymous) made the anonymous persons candidates (else "anonymous_person"),
    # --send-events-from-anonymous-users with_email (env: all) left them out: they have no email
    assert (summary["read"], summary["skipped"]) == (API_PERSONS, {"anonymous_user": API_PERSONS - len(API_IDENTIFIED)})
    people = profiles(sandbox)
    assert sorted(person["email"] for person in people) == sorted(f"user{i}@example.com" for i in API_IDENTIFIED)
    assert {person["id"] for person in people} == {None}  # --identify-by-email (env: false)
    # each flag wins over a right environment: the wrong flag is the one used (fresh data dirs: a checkpoint is
    # of one host and project)
    right = {**env, "POSTHOG_API_HOST": url, "POSTHOG_PROJECT_ID": "1", "POSTHOG_PERSONAL_API_KEY": STANDIN_KEY}
    right["POSTHOG_API_MAX_PER_MINUTE"] = "1000"
    wrong_key = "phx_flag_key_wrong_9d2e"
    for flags, refusal in (
        (("--posthog-personal-api-key", wrong_key), "error: PostHog refused the key: "),
        (("--posthog-project-id", "2"), "error: PostHog refused the key: PostHog refused access (HTTP 403 "),
        (("--posthog-api-host", f"{url}/elsewhere"), f"error: HTTP 404 from {url}/elsewhere/api/projects/1/"),
    ):
        data = ("--data-dir", str(tmp_path / flags[0]))
        refused = cli("sync-persons", *flags, *data, env=right)
        assert refused.exit_code == 1 and refused.stderr.startswith(refusal), refused.output
        no_secrets(refused.output, wrong_key, STANDIN_KEY)
    bad = cli("sync-persons", "--posthog-api-max-per-minute", "0", env=right)
    assert bad.exit_code == 2 and bad.stderr.startswith("error: POSTHOG_API_MAX_PER_MINUTE: "), bad.output


def test_sync_persons_outbox_max_queued_flag(
    cli: Cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path, posthog_api: PostHogApi
) -> None:
    """``--outbox-max-queued 1`` (env: a million): before asking for each next page the sync waits for delivery."""
    env = {**env, **posthog_api.wrong_env(), "OUTBOX_MAX_QUEUED": "1000000"}
    env |= {"POSTHOG_API_HOST": posthog_api.url, "POSTHOG_PROJECT_ID": "1", "POSTHOG_PERSONAL_API_KEY": STANDIN_KEY}
    env["POSTHOG_API_MAX_PER_MINUTE"] = "1000"
    result = cli("sync-persons", "--outbox-max-queued", "1", "--json", env=env)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["outbox_waits"]["times"] >= 2 and summary["queued"] == 0, summary  # after pages 1 and 2
    assert len(profiles(sandbox)) == len(API_IDENTIFIED)
    result = cli("sync-persons", "--json", "--restart", "--data-dir", str(tmp_path / "other"), env=env)
    assert json.loads(result.stdout)["outbox_waits"]["times"] == 0, result.output


@contextlib.contextmanager
def revoked_after_the_first_page(monkeypatch: pytest.MonkeyPatch, api: PostHogApi) -> Iterator[None]:
    """The stand-in refuses the key for every page after the first (the key was revoked mid-run)."""
    answer = api.standin.answer

    def revoking(base_url: str, path: str, query: str, authorization: str | None) -> Any:
        return answer(base_url, path, query, None if "offset=" in query else authorization)

    with monkeypatch.context() as patch:
        patch.setattr(api.standin, "answer", revoking)
        yield


def test_sync_persons_restart_and_dry_run_flags(
    cli: Cli,
    env: dict[str, str],
    sandbox: SandboxServer,
    tmp_path: Path,
    posthog_api: PostHogApi,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {**env, "POSTHOG_API_HOST": posthog_api.url, "POSTHOG_PROJECT_ID": "1"}
    env |= {"POSTHOG_PERSONAL_API_KEY": STANDIN_KEY, "POSTHOG_API_MAX_PER_MINUTE": "1000"}
    checkpoint = tmp_path / "data" / "posthog-persons.checkpoint"
    every_page = ["", "limit=10&offset=10", "limit=10&offset=20"]
    # --dry-run: every person read and mapped, what would be sent shown; nothing stored, sent or checkpointed
    dry = cli("sync-persons", "--dry-run", env=env)
    assert dry.exit_code == 0, dry.output
    assert f"persons read       {API_PERSONS}\n" in dry.stdout
    assert f"operations         {len(API_IDENTIFIED)} would be sent: identify {len(API_IDENTIFIED)}" in dry.stdout
    assert "dry run            nothing was stored or sent; examples:" in dry.stdout
    assert posthog_api.reads() == every_page
    assert sandbox.state.requests() == [] and not checkpoint.exists()
    status = json.loads(cli("status", "--json", env=env).stdout)
    assert (status["persons"], status["outbox"]["depth"]) == (0, 0), status  # no state stored either
    # a run PostHog stops after its first page: that page is stored and checkpointed
    with revoked_after_the_first_page(monkeypatch, posthog_api):
        stopped = cli("sync-persons", env=env)
    assert stopped.exit_code == 1 and stopped.stderr.startswith("error: PostHog refused the key: "), stopped.output
    assert json.loads(checkpoint.read_text())["persons"] == API_PAGE
    # --restart: the read starts over from the first page, not where the checkpoint says
    posthog_api.standin.requests.clear()
    restarted = cli("sync-persons", "--restart", "--json", env=env)
    assert restarted.exit_code == 0, restarted.output
    summary = json.loads(restarted.stdout)
    assert (summary["read"], summary["resumed_after"]) == (API_PERSONS, 0)
    assert posthog_api.reads() == every_page
    # without --restart, a run stopped after its first page is resumed from the second
    with revoked_after_the_first_page(monkeypatch, posthog_api):
        assert cli("sync-persons", env=env).exit_code == 1
    posthog_api.standin.requests.clear()
    resumed = cli("sync-persons", "--json", env=env)
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads(resumed.stdout)
    assert (summary["read"], summary["resumed_after"]) == (API_PERSONS - API_PAGE, API_PAGE)
    assert posthog_api.reads() == every_page[1:]
    # an unreadable checkpoint stops a run (exit 1, naming it); --restart starts over without it
    checkpoint.write_text("{not json")
    unreadable = cli("sync-persons", env=env)
    assert unreadable.exit_code == 1 and unreadable.stderr.startswith(f"error: the checkpoint {checkpoint} ")
    assert "(or run sync-persons --restart)" in unreadable.stderr
    assert cli("sync-persons", "--restart", env=env).exit_code == 0
    assert json.loads(checkpoint.read_text())["persons"] == API_PERSONS
    no_secrets(dry.output + stopped.output + restarted.output + resumed.output, STANDIN_KEY)
    assert sorted(p["id"] for p in profiles(sandbox)) == sorted(f"user-{i}" for i in API_IDENTIFIED)


def test_sync_persons_sandbox_and_timeout_flags(
    cli: Cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path
) -> None:
    export, _ = persons_exports(tmp_path)
    identified = 3 + OTHERS  # the visitor stays out (ANONYMOUS_EVENTS anonymous, the default)
    # --sandbox: no Customer.io settings at all; the in-process sandbox receives them, the summary lists them
    result = cli("sync-persons", "--from", str(export), "--sandbox", env={})
    assert result.exit_code == 0, result.output
    assert f"sandbox            {identified} people identified," in result.stdout
    assert "  ann  ann@example.com\n" in result.stdout and sandbox.state.requests() == []
    # --timeout: Customer.io answers 503; the wait for delivery ends after 0.5 s, the rest stays queued (exit 1)
    sandbox.state.add_fault(status=503, duration_s=60)
    started = time.monotonic()
    result = cli("sync-persons", "--from", str(export), "--timeout", "0.5", env=env)
    assert result.exit_code == 1, result.output
    assert time.monotonic() - started < 10
    assert f"still queued       {identified} (timed out; run sync-persons again to deliver)" in result.stdout
    status = cli("status", "--json", env=env)
    assert json.loads(status.stdout)["outbox"]["depth"] == identified


def test_sync_persons_region_flag(cli: Cli, regions: SandboxServer, tmp_path: Path) -> None:
    """``--region eu`` sends to the EU host (here the sandbox); the environment's ``us`` would not answer."""
    export, _ = persons_exports(tmp_path)
    env = {"CUSTOMERIO_SITE_ID": SITE_ID, "CUSTOMERIO_API_KEY": API_KEY, "CUSTOMERIO_REGION": "us"}
    env["POSTHOG_CUSTOMERIO_DATA_DIR"] = str(tmp_path / "data")
    result = cli("sync-persons", "--from", str(export), "--region", "eu", "--timeout", "20", env=env)
    assert result.exit_code == 0, result.output
    assert regions.state.person("ann@example.com") is not None
    result = cli("sync-persons", "--from", str(export), "--region", "mars", env=env)
    assert result.exit_code == 2 and result.stderr.startswith("error: CUSTOMERIO_REGION:"), result.output


def test_sync_persons_pipelines_flags(cli: Cli, sandbox: SandboxServer, tmp_path: Path, pipelines_key: str) -> None:
    export = write_jsonl(tmp_path / "persons.jsonl", [person_row("u1", "u1", {"email": "u1@example.com"})])
    env = {
        "CUSTOMERIO_API": "v2",
        "CUSTOMERIO_PIPELINES_API_KEY": "env-pipelines-key",
        "CUSTOMERIO_PIPELINES_URL": DEAD_URL,
        "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "data"),
    }
    pipelines = ("--api", "pipelines", "--customerio-pipelines-url", sandbox.url, "--delivery-linger-s", "0")
    key = ("--customerio-pipelines-api-key", pipelines_key)
    result = cli("sync-persons", "--from", str(export), *pipelines, *key, env=env)
    assert result.exit_code == 0, result.output
    no_secrets(result.output, pipelines_key)
    assert [(person["userId"], person["email"]) for person in sandbox.pipelines.people()] == [("u1", "u1@example.com")]
    assert sandbox.state.requests() == []  # nothing went to the Track API
    wrong = ("--customerio-pipelines-api-key", "wrong-pipelines-key", "--data-dir", str(tmp_path / "other"))
    env["CUSTOMERIO_PIPELINES_API_KEY"] = pipelines_key
    result = cli("sync-persons", "--from", str(export), *pipelines, *wrong, env=env)
    assert result.exit_code == 1 and "stays queued" in result.stderr, result.output
    no_secrets(result.output, "wrong-pipelines-key", pipelines_key)


def test_sync_persons_delivery_timing_flags(
    cli: Cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path
) -> None:
    export = write_jsonl(tmp_path / "persons.jsonl", [person_row("u1", "u1", {"email": "u1@example.com"})])
    check_delivery_timing_flags(cli, env, sandbox, tmp_path, ("sync-persons", "--from", str(export)), 1, 2)


def test_sync_persons_event_flags_leave_persons_alone(
    cli: Cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path, settings_seen: list[Settings]
) -> None:
    """``--events-to-send``, ``--events-to-skip``, ``--event-name-map`` and ``--group-type-map`` shape events;
    a person is no event: it is synced whatever they say (as ``send`` applies a ``$set`` whatever they say).
    They reach the settings; a bad map stops the command naming its variable."""
    export, _ = persons_exports(tmp_path)
    flags = ("--events-to-send", "clicked", "--events-to-skip", "*", "--event-name-map", "clicked=Clicked It")
    flags += ("--group-type-map", "company=1")
    env = {**env, "EVENT_NAME_MAP": "clicked=Other", "GROUP_TYPE_MAP": "company=9"}
    result = cli("sync-persons", "--from", str(export), "--json", *flags, env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["actions"] == {"identify": 3 + OTHERS}
    assert len(profiles(sandbox)) == 3 + OTHERS
    config = settings_seen[-1].mapping_config()
    assert (config.events_to_send, config.events_to_skip) == (frozenset({"clicked"}), ("*",))
    assert (config.event_name_map, config.group_type_map) == ({"clicked": "Clicked It"}, {"company": "1"})
    for flag, variable in (("--event-name-map", "EVENT_NAME_MAP"), ("--group-type-map", "GROUP_TYPE_MAP")):
        bad = cli("sync-persons", "--from", str(export), flag, "nonsense", env=env)
        assert bad.exit_code == 2 and bad.stderr.startswith(f"error: {variable}: "), bad.output


# -- sync-cohorts ----------------------------------------------------------------------------------
#: the cohort the sync-cohorts tests mirror (cohort 7): ann (every kind of property), the visitor PostHog never
#: identified, and OTHERS identified persons (enough v1 requests to measure --max-rps); five members a page
COHORT_PAGE = 5
COHORT_NAME = "Power users (EU)"
#: --cohort-attribute-prefix ph_ + the slug of the cohort's name
COHORT_ATTRIBUTE = "ph_power_users_eu"
#: the cohort flags of the scenario; the environment says otherwise (another segment, cohort and prefix)
COHORT_FLAGS = ("--cohort-segments", "7=12", "--cohort-attributes", "7", "--cohort-attribute-prefix", "ph_")
COHORT_ENV = {"COHORT_SEGMENTS": "7=99", "COHORT_ATTRIBUTES": "8", "COHORT_ATTRIBUTE_PREFIX": "env_"}


def cohort_member(distinct_ids: list[str], properties: dict[str, Any], identified: bool = True) -> dict[str, Any]:
    """A member as PostHog's persons of a cohort list it."""
    person = str(uuid.uuid5(uuid.NAMESPACE_URL, f"member:{distinct_ids[-1]}"))
    return {
        "id": person,
        "uuid": person,
        "name": properties.get("email", person),
        "distinct_ids": distinct_ids,
        "properties": properties,
        "created_at": "2024-01-01T00:00:00Z",
        "is_identified": identified,
    }


COHORT_MEMBERS = [
    cohort_member(["anon-ann", "ann"], ANN),
    cohort_member([VISITOR], {}, identified=False),
    *(cohort_member([f"p{n}"], {"email": f"p{n}@example.com"}) for n in range(OTHERS)),
]
#: the members that are profiles without --anonymous-events person (the visitor is not)
COHORT_IDENTIFIED = 1 + OTHERS


@dataclass
class CohortApi:
    """The PostHog stand-in serving cohort 7 (:data:`COHORT_MEMBERS`), and its base URL."""

    standin: PersonsStandin
    url: str

    def env(self) -> dict[str, str]:
        """PostHog's API settings that reach the stand-in (unpaced)."""
        return {
            "POSTHOG_API_HOST": self.url,
            "POSTHOG_PROJECT_ID": "1",
            "POSTHOG_PERSONAL_API_KEY": STANDIN_KEY,
            "POSTHOG_API_MAX_PER_MINUTE": "100000",
        }

    def reads(self) -> list[tuple[str, str]]:
        """(path, query) of each request the stand-in answered 200."""
        with self.standin.lock:
            return [(seen.path, seen.query) for seen in self.standin.requests if seen.status == 200]


@pytest.fixture(scope="module")
def _cohort_standin() -> Iterator[CohortApi]:
    standin = PersonsStandin(0, cohort_default_limit=COHORT_PAGE)
    with running_persons_standin(standin) as url:
        yield CohortApi(standin, url)


@pytest.fixture
def cohort_api(_cohort_standin: CohortApi) -> CohortApi:
    """The stand-in with cohort 7 as :data:`COHORT_MEMBERS`, no faults, its request log emptied."""
    standin = _cohort_standin.standin
    with standin.lock:
        standin.requests.clear()
        standin.path_faults.clear()
        standin.cohorts.clear()
    standin.add_cohort(7, name=COHORT_NAME, members=COHORT_MEMBERS)
    return _cohort_standin


def segment_members(sandbox: SandboxServer, segment_id: str = "12") -> list[str]:
    """A manual segment's members, each by its id (or its email when it has none), sorted."""
    who = {person["cio_id"]: person["id"] or person["email"] for person in sandbox.state.people()}
    return sorted(who[cio_id] for cio_id in sandbox.state.segments().get(segment_id, []))


def segment_calls(sandbox: SandboxServer) -> list[tuple[str, str, list[str]]]:
    """(path, query, ids) of each segment request the sandbox accepted."""
    return [
        (entry["path"], entry["query"], entry["body"]["ids"])
        for entry in sandbox.state.requests()
        if entry["path"].startswith("/api/v1/segments/") and entry["status"] == 200
    ]


@pytest.mark.parametrize("on", [True, False], ids=["flags", "negated-flags"])
def test_sync_cohorts_mapping_and_delivery_flags(
    cli: Cli,
    sandbox: SandboxServer,
    tmp_path: Path,
    plugin_config: Path,
    cohort_api: CohortApi,
    settings_seen: list[Settings],
    on: bool,
) -> None:
    """Cohort 7 into segment 12 and an attribute, each flag against :func:`scenario_env` and :data:`COHORT_ENV`:
    the members Customer.io does not know are created first, through the mapping flags of ``sync-persons``."""
    env = {**scenario_env(on), **cohort_api.env(), **COHORT_ENV}
    env["POSTHOG_CUSTOMERIO_DATA_DIR"] = str(tmp_path / "env-data")
    data, outbox = tmp_path / "mine", tmp_path / "outbox.sqlite"
    if on:
        where = ("--site-id", SITE_ID, "--api-key", API_KEY, "--track-url", sandbox.url, "--data-dir", str(data))
        flags = (*where, *PERSONS_FLAGS, *SCENARIO_ON, *COHORT_FLAGS)
    else:
        where = ("--plugin-config", str(plugin_config), "--track-url", sandbox.url)
        where += ("--outbox-url", f"sqlite:///{outbox}")
        flags = (*where, *PERSONS_FLAGS, *SCENARIO_OFF, *COHORT_FLAGS)
    result = cli("sync-cohorts", "--json", *flags, env=env)
    assert result.exit_code == 0, result.output
    no_secrets(result.output, SITE_ID, API_KEY, STANDIN_KEY)
    (report,) = json.loads(result.stdout)["cohorts"]  # --json
    # --cohort-segments 7=12, --cohort-attributes 7, --cohort-attribute-prefix ph_ (env: 7=99, 8, env_): cohort 8
    # is not read, segment 99 gets nobody; --anonymous-events person, --send-events-from-anonymous-users all (env:
    # anonymous, identified): the visitor PostHog never identified is a member with a profile too
    members = len(COHORT_MEMBERS)
    targets = {"segment 12": members, f"attribute {COHORT_ATTRIBUTE}": members}
    assert (report["outcome"], report["added"], report["skipped"]) == ("ok", targets, {})
    assert report["profiles_created"] == members and json.loads(result.stdout)["dead_lettered"] == 0
    assert {path.split("/")[5] for path, _ in cohort_api.reads()} == {"7"}
    assert set(sandbox.state.segments()) == {"12"} and len(segment_members(sandbox)) == members
    found = {person["email"] or person["id"]: person for person in profiles(sandbox)}
    assert all(person["attributes"][COHORT_ATTRIBUTE] is True for person in found.values())
    ann = found["ann@example.com"]
    # --properties-to-include / --properties-to-exclude, --limits truncate (env: plan / keep_a, dead-letter): ann is
    # created first from her person properties as sync-persons would, the 1,500-byte bio cut to 1,000
    assert set(ann["attributes"]) == {"signup_at", "plan", "bio", "keep_a", COHORT_ATTRIBUTE}, ann
    assert ann["attributes"]["bio"] == "b" * 1000
    assert found[VISITOR]["id"] == VISITOR
    others = [found[f"p{n}@example.com"] for n in range(OTHERS)]
    requests = sandbox.state.requests()
    calls = segment_calls(sandbox)
    ran = settings_seen[-1]  # --merge-people and --suppress-on-delete shape merges and deletions: none here
    assert (ran.merge_people, ran.suppress_on_delete) == (on, on)
    if on:
        assert all(person["id"] is None for person in others)  # --identify-by-email: addressed by email only
        emails = sorted(ids for path, query, batch in calls if query == "id_type=email" for ids in batch)
        assert emails == sorted(["ann@example.com", *(f"p{n}@example.com" for n in range(OTHERS))])
        assert [ids for _, query, ids in calls if query == "id_type=id"] == [[VISITOR]]  # it has no email
        assert ann["attributes"]["signup_at"] == 1_706_781_600  # --convert-dates
        assert all(entry["path"].startswith("/api/v1/") for entry in requests)  # --api v1
        assert "/api/v1/customers/ann%40example.com" in {entry["path"] for entry in requests}
        gaps = request_gaps(sandbox)  # --max-rps (env: 100000): requests spaced 1/40 s apart
        assert len(gaps) >= 10 and sum(gaps) / len(gaps) >= 0.8 / SCENARIO_RPS, gaps
        assert (data / "posthog-customerio.sqlite").is_file() and not (tmp_path / "env-data").exists()  # --data-dir
    else:
        assert [person["id"] for person in others] == [f"p{n}" for n in range(OTHERS)]  # --no-identify-by-email
        assert {query for _, query, _ in calls} == {"id_type=id"}
        assert ann["id"] == "ann" and ann["attributes"]["signup_at"] == "2024-02-01T10:00:00Z"  # --no-convert-dates
        # --api v2: the profiles and attributes in v2 batches; segments have only their v1 endpoints
        assert {entry["path"] for entry in requests} == {"/api/v2/batch", "/api/v1/segments/12/add_customers"}
        # --outbox-url: the database is that file; --plugin-config gave the credentials (the sandbox refuses the
        # environment's), its identifyByEmail Yes lost to --no-identify-by-email
        assert outbox.is_file() and not (tmp_path / "env-data" / "posthog-customerio.sqlite").exists()


def test_sync_cohorts_dry_run_allow_empty_and_json_flags(
    cli: Cli, env: dict[str, str], sandbox: SandboxServer, cohort_api: CohortApi
) -> None:
    env = {**env, **cohort_api.env(), "COHORT_SEGMENTS": "7=12"}
    # --dry-run: every member read, the planned adds shown; nothing stored or sent
    dry = cli("sync-cohorts", "--dry-run", env=env)
    assert dry.exit_code == 0, dry.output
    assert f"cohort 7 ({COHORT_NAME}): ok, {len(COHORT_MEMBERS)} members in PostHog" in dry.stdout
    assert f"  would add      +{COHORT_IDENTIFIED} segment 12\n" in dry.stdout
    assert "  e.g. add ann to segment 12\n" in dry.stdout and "dry run: nothing was stored or sent" in dry.stdout
    assert sandbox.state.requests() == []
    # --json: the summary as JSON; the pass is the first (the dry run remembered nothing)
    done = cli("sync-cohorts", "--json", env=env)
    assert done.exit_code == 0, done.output
    (report,) = json.loads(done.stdout)["cohorts"]
    assert (report["pass_no"], report["added"]) == (1, {"segment 12": COHORT_IDENTIFIED})
    assert len(segment_members(sandbox)) == COHORT_IDENTIFIED
    # the cohort reads as empty: refused (exit 1), the segment untouched; --allow-empty empties it
    cohort_api.standin.set_cohort_members(7, [])
    guarded = cli("sync-cohorts", "--json", env=env)
    assert guarded.exit_code == 1, guarded.output
    assert json.loads(guarded.stdout)["cohorts"][0]["outcome"] == "suspicious_empty"
    assert len(segment_members(sandbox)) == COHORT_IDENTIFIED
    allowed = cli("sync-cohorts", "--allow-empty", "--json", env=env)
    assert allowed.exit_code == 0, allowed.output
    (report,) = json.loads(allowed.stdout)["cohorts"]
    assert (report["outcome"], report["removed"]) == ("ok", {"segment 12": COHORT_IDENTIFIED})
    assert segment_members(sandbox) == []


def test_sync_cohorts_posthog_api_flags(
    cli: Cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path, cohort_api: CohortApi
) -> None:
    """The cohort through the PostHog API flags, over an environment with another host path, project and key, and
    1 request a minute (the cohort and its three pages would take three minutes)."""
    url = cohort_api.url
    api = ("--posthog-api-host", url, "--posthog-project-id", "1", "--posthog-personal-api-key", STANDIN_KEY)
    api += ("--posthog-api-max-per-minute", "1000")
    wrong = PostHogApi(cohort_api.standin, url).wrong_env()
    env = {**env, **wrong, "COHORT_SEGMENTS": "7=12"}
    started = time.monotonic()
    result = cli("sync-cohorts", *api, "--json", env=env)
    assert result.exit_code == 0, result.output
    no_secrets(result.output, STANDIN_KEY, ENV_POSTHOG_KEY, SITE_ID, API_KEY)
    assert time.monotonic() - started < 30  # --posthog-api-max-per-minute 1000 (env: 1)
    # --posthog-api-host, --posthog-project-id, --posthog-personal-api-key: the cohort and its pages, each accepted
    members = "/api/projects/1/cohorts/7/persons/"
    assert cohort_api.reads() == [
        ("/api/projects/1/cohorts/7/", ""),
        (members, ""),
        (members, "offset=5"),
        (members, "offset=10"),
    ]
    assert all(seen.authorized for seen in cohort_api.standin.requests)
    assert len(segment_members(sandbox)) == COHORT_IDENTIFIED
    # each flag wins over a right environment: the wrong flag is the one used
    right = {**env, **cohort_api.env()}
    wrong_key = "phx_flag_key_wrong_9d2e"
    for flags, refusal in (
        (("--posthog-personal-api-key", wrong_key), "error: PostHog refused the key: "),
        (("--posthog-project-id", "2"), "error: PostHog refused the key: PostHog refused access (HTTP 403 "),
    ):
        refused = cli("sync-cohorts", *flags, "--data-dir", str(tmp_path / flags[0]), env=right)
        assert refused.exit_code == 1 and refused.stderr.startswith(refusal), refused.output
        no_secrets(refused.output, wrong_key, STANDIN_KEY)
    elsewhere = cli("sync-cohorts", "--posthog-api-host", f"{url}/elsewhere", env=right)
    assert elsewhere.exit_code == 1, elsewhere.output
    assert "cohort 7: not_found, pass 0\n" in elsewhere.stdout
    assert f"(HTTP 404 from {url}/elsewhere/api/projects/1/cohorts/7/:" in elsewhere.stdout
    bad = cli("sync-cohorts", "--posthog-api-max-per-minute", "0", env=right)
    assert bad.exit_code == 2 and bad.stderr.startswith("error: POSTHOG_API_MAX_PER_MINUTE: "), bad.output


def test_sync_cohorts_sandbox_and_timeout_flags(
    cli: Cli, env: dict[str, str], sandbox: SandboxServer, cohort_api: CohortApi
) -> None:
    posthog = {**cohort_api.env(), "COHORT_SEGMENTS": "7=12"}
    # --sandbox: no Customer.io settings at all; the in-process sandbox receives them, the summary lists them
    result = cli("sync-cohorts", "--sandbox", env=posthog)
    assert result.exit_code == 0, result.output
    assert f"sandbox            {COHORT_IDENTIFIED} people identified," in result.stdout
    assert "  ann  ann@example.com\n" in result.stdout and sandbox.state.requests() == []
    # --timeout: Customer.io answers 503; the wait for delivery ends after 0.5 s, the rest stays queued (exit 1)
    sandbox.state.add_fault(status=503, duration_s=60)
    started = time.monotonic()
    result = cli("sync-cohorts", "--timeout", "0.5", env={**env, **posthog})
    assert result.exit_code == 1, result.output
    assert time.monotonic() - started < 10
    queued = 2 * COHORT_IDENTIFIED  # each member's profile, then its add
    assert f"still queued       {queued} (timed out; run sync-cohorts again to deliver)" in result.stdout
    assert json.loads(cli("status", "--json", env=env).stdout)["outbox"]["depth"] == queued


def test_sync_cohorts_region_flag(cli: Cli, regions: SandboxServer, tmp_path: Path, cohort_api: CohortApi) -> None:
    """``--region eu`` sends to the EU host (here the sandbox); the environment's ``us`` would not answer."""
    env = {"CUSTOMERIO_SITE_ID": SITE_ID, "CUSTOMERIO_API_KEY": API_KEY, "CUSTOMERIO_REGION": "us"}
    env |= {"POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "data"), **cohort_api.env(), "COHORT_SEGMENTS": "7=12"}
    result = cli("sync-cohorts", "--region", "eu", "--timeout", "20", env=env)
    assert result.exit_code == 0, result.output
    assert len(segment_members(regions)) == COHORT_IDENTIFIED
    result = cli("sync-cohorts", "--region", "mars", env=env)
    assert result.exit_code == 2 and result.stderr.startswith("error: CUSTOMERIO_REGION:"), result.output


def test_sync_cohorts_pipelines_flags(
    cli: Cli, sandbox: SandboxServer, tmp_path: Path, pipelines_key: str, cohort_api: CohortApi
) -> None:
    env = {
        "CUSTOMERIO_API": "v2",
        "CUSTOMERIO_PIPELINES_API_KEY": "env-pipelines-key",
        "CUSTOMERIO_PIPELINES_URL": DEAD_URL,
        "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "data"),
        "COHORT_ATTRIBUTES": "7",
        **cohort_api.env(),
    }
    pipelines = ("--api", "pipelines", "--customerio-pipelines-url", sandbox.url, "--delivery-linger-s", "0")
    key = ("--customerio-pipelines-api-key", pipelines_key)
    result = cli("sync-cohorts", *pipelines, *key, env=env)
    assert result.exit_code == 0, result.output
    no_secrets(result.output, pipelines_key)
    people = sandbox.pipelines.people()
    assert len(people) == COHORT_IDENTIFIED
    assert all(person["attributes"]["posthog_cohort_power_users_eu"] is True for person in people)
    assert sandbox.state.requests() == []  # nothing went to the Track API
    # manual segments are the Track API's: refused before anything is read
    segments = cli("sync-cohorts", *pipelines, *key, "--cohort-segments", "7=12", env=env)
    assert segments.exit_code == 2 and "COHORT_SEGMENTS needs the Track API" in segments.stderr, segments.output
    wrong = ("--customerio-pipelines-api-key", "wrong-pipelines-key", "--data-dir", str(tmp_path / "other"))
    env["CUSTOMERIO_PIPELINES_API_KEY"] = pipelines_key
    result = cli("sync-cohorts", *pipelines, *wrong, env=env)
    assert result.exit_code == 1 and "stays queued" in result.stderr, result.output
    no_secrets(result.output, "wrong-pipelines-key", pipelines_key)


def test_sync_cohorts_delivery_timing_flags(
    cli: Cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path, cohort_api: CohortApi
) -> None:
    cohort_api.standin.add_cohort(9, name="One", members=[COHORT_MEMBERS[2]])
    env = {**env, **cohort_api.env(), "COHORT_SEGMENTS": "9=19"}

    check_delivery_timing_flags(cli, env, sandbox, tmp_path, ("sync-cohorts",), 2, 3)
    assert segment_members(sandbox, "19") == ["p0"]


def test_sync_cohorts_outbox_max_queued_flag(
    cli: Cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path, cohort_api: CohortApi
) -> None:
    """``--outbox-max-queued 1`` (env: a million): before each next page of members the pass waits for delivery."""
    env = {**env, **cohort_api.env(), "COHORT_SEGMENTS": "7=12", "OUTBOX_MAX_QUEUED": "1000000"}
    result = cli("sync-cohorts", "--outbox-max-queued", "1", "--json", env=env)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["outbox_waits"]["times"] >= 2 and summary["queued"] == 0, summary  # 14 members, 5 a page
    assert len(segment_members(sandbox)) == COHORT_IDENTIFIED
    result = cli("sync-cohorts", "--json", "--data-dir", str(tmp_path / "other"), env=env)
    assert json.loads(result.stdout)["outbox_waits"]["times"] == 0, result.output


#: (flag, value, Settings field, expected, a bad value, its variable): flags a pass of cohorts has no use for
#: (no events, no anonymous visitors) or whose effect a short test cannot see
COHORT_PLUMBING = [
    ("--concurrency", "3", "delivery_concurrency", 3, "65", "DELIVERY_CONCURRENCY"),
    ("--anonymous-hold-s", "7", "anonymous_hold_s", 7.0, "-1", "ANONYMOUS_HOLD_S"),
    ("--anonymous-max-age-s", "7", "anonymous_max_age_s", 7.0, "-5.5", "ANONYMOUS_MAX_AGE_S"),
    ("--anonymous-backlog-max", "7", "anonymous_backlog_max", 7, "-3", "ANONYMOUS_BACKLOG_MAX"),
    ("--lease-s", "7", "lease_s", 7.0, "1.5", "LEASE_S"),
    ("--sqlite-synchronous", "normal", "sqlite_synchronous", "NORMAL", "sometimes", "SQLITE_SYNCHRONOUS"),
    ("--events-to-send", "clicked", "events_to_send", "clicked", "", ""),
    ("--events-to-skip", "*", "events_to_skip", "*", "", ""),
    ("--event-name-map", "clicked=Clicked It", "event_name_map", "clicked=Clicked It", "nonsense", "EVENT_NAME_MAP"),
    ("--group-type-map", "company=1", "group_type_map", "company=1", "nonsense", "GROUP_TYPE_MAP"),
    ("--cohort-segments", "7=12", "cohort_segments", "7=12", "7=12,8=12", "COHORT_SEGMENTS"),
    ("--cohort-attributes", "7", "cohort_attributes", "7", "seven", "COHORT_ATTRIBUTES"),
    ("--cohort-attribute-prefix", "ph_", "cohort_attribute_prefix", "ph_", "", "COHORT_ATTRIBUTE_PREFIX"),
]


def test_sync_cohorts_flags_without_a_visible_effect_reach_the_settings(
    cli: Cli, env: dict[str, str], sandbox: SandboxServer, cohort_api: CohortApi, settings_seen: list[Settings]
) -> None:
    """Run as typed, each flag lands in the settings the pass runs with (over its environment variable); the
    event flags shape events, and a member is no event: it is synced whatever they say. A bad value stops the
    command with one line naming the variable."""
    env = {**env, **cohort_api.env(), "DELIVERY_CONCURRENCY": "8", "ANONYMOUS_HOLD_S": "20", "LEASE_S": "20"}
    env |= {"ANONYMOUS_MAX_AGE_S": "20", "ANONYMOUS_BACKLOG_MAX": "20", "SQLITE_SYNCHRONOUS": "FULL"}
    env |= {"EVENT_NAME_MAP": "clicked=Other", "GROUP_TYPE_MAP": "company=9", "COHORT_SEGMENTS": "7=99"}
    result = cli(
        "sync-cohorts", "--json", *(part for flag, value, *_ in COHORT_PLUMBING for part in (flag, value)), env=env
    )
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)["cohorts"]
    assert report["added"] == {"segment 12": COHORT_IDENTIFIED, "attribute ph_power_users_eu": COHORT_IDENTIFIED}
    assert len(segment_members(sandbox)) == COHORT_IDENTIFIED
    for flag, _value, field, expected, _bad, _variable in COHORT_PLUMBING:
        assert getattr(settings_seen[-1], field) == expected, flag
    for flag, _value, _field, _expected, bad, variable in COHORT_PLUMBING:
        if not variable:
            continue
        result = cli("sync-cohorts", flag, bad, env=env)
        assert result.exit_code == 2 and result.stderr.startswith(f"error: {variable}: "), (flag, result.output)
        assert result.stderr.count("\n") == 1, result.stderr


# -- check -----------------------------------------------------------------------------------------
def test_check_credentials_flags(cli: Cli, sandbox: SandboxServer) -> None:
    env = {"CUSTOMERIO_SITE_ID": "env-site", "CUSTOMERIO_API_KEY": "env-key", "CUSTOMERIO_TRACK_URL": DEAD_URL}
    flags = ("--site-id", SITE_ID, "--api-key", API_KEY, "--track-url", sandbox.url)
    result = cli("check", *flags, env=env)
    assert result.exit_code == 0, result.output
    assert "credentials OK" in result.stdout and f"track URL  {sandbox.url}" in result.stdout
    assert sandbox.state.requests()[-1]["path"] == "/api/v1/accounts/region"
    no_secrets(result.output, SITE_ID, API_KEY)
    wrong = cli("check", *flags[:2], "--api-key", "wrong-track-key", *flags[4:], env=env)
    assert wrong.exit_code == 1
    no_secrets(wrong.output, SITE_ID, "wrong-track-key")
    bad = cli("check", *flags[:4], "--track-url", "ftp://x", env=env)
    assert bad.exit_code == 2 and bad.stderr.startswith("error: CUSTOMERIO_TRACK_URL:")


def test_check_region_flag(cli: Cli, regions: SandboxServer) -> None:
    env = {"CUSTOMERIO_SITE_ID": SITE_ID, "CUSTOMERIO_API_KEY": API_KEY, "CUSTOMERIO_REGION": "us"}
    for region in ("eu", "track-eu.customer.io"):  # the plugin's host names work too
        result = cli("check", "--region", region, env=env)
        assert result.exit_code == 0, result.output
        assert f"track URL  {regions.url}" in result.stdout
    result = cli("check", "--region", "mars", env=env)
    assert result.exit_code == 2 and result.stderr.startswith("error: CUSTOMERIO_REGION:")


def test_check_plugin_config_and_sandbox(cli: Cli, sandbox: SandboxServer, plugin_config: Path) -> None:
    env = {"CUSTOMERIO_SITE_ID": "env-site", "CUSTOMERIO_API_KEY": "env-key", "CUSTOMERIO_TRACK_URL": sandbox.url}
    result = cli("check", "--plugin-config", str(plugin_config), env=env)
    assert result.exit_code == 0 and "credentials OK" in result.stdout, result.output
    no_secrets(result.output, SITE_ID, API_KEY)
    # --sandbox: no credentials at all, an in-process sandbox answers
    result = cli("check", "--sandbox", env={})
    assert result.exit_code == 0 and "track URL  http://127.0.0.1:" in result.stdout, result.output
    result = cli("check", "--sandbox", "--api", "pipelines", env={})
    assert result.exit_code == 0 and "Pipelines API key OK" in result.stdout, result.output


def test_check_pipelines_flags(cli: Cli, regions: SandboxServer, pipelines_key: str) -> None:
    env = {"CUSTOMERIO_API": "v1", "CUSTOMERIO_PIPELINES_API_KEY": "env-key", "CUSTOMERIO_PIPELINES_URL": DEAD_URL}
    key = ("--customerio-pipelines-api-key", pipelines_key)
    result = cli("check", "--api", "pipelines", *key, "--customerio-pipelines-url", regions.url, env=env)
    assert result.exit_code == 0, result.output
    no_secrets(result.output, pipelines_key)
    assert "Pipelines API key OK" in result.stdout and f"pipelines URL  {regions.url}" in result.stdout
    assert [entry["path"] for entry in regions.pipelines.requests()] == ["/v1/batch"]
    # the Pipelines API has no region lookup: --region eu chooses the EU host (here the sandbox)
    env.pop("CUSTOMERIO_PIPELINES_URL")
    result = cli("check", "--api", "pipelines", *key, "--region", "eu", env=env)
    assert result.exit_code == 0 and f"pipelines URL  {regions.url}" in result.stdout, result.output
    result = cli("check", "--api", "graphql", env=env)
    assert result.exit_code == 2 and result.stderr.startswith("error: CUSTOMERIO_API:")


def test_check_timeout_flag(cli: Cli, env: dict[str, str], sandbox: SandboxServer) -> None:
    sandbox.state.add_fault(delay_s=SLOW_S, count=1)
    started = time.monotonic()
    result = cli("check", "--customerio-timeout-s", "0.2", env={**env, "CUSTOMERIO_TIMEOUT_S": "30"})
    assert result.exit_code == 1 and "cannot reach Customer.io" in result.stderr, result.output
    assert time.monotonic() - started < SLOW_S - 0.05
    wait_logged(sandbox, 1)


# -- delete-person, unsuppress ----------------------------------------------------------------------
def _person_with_email(cli: Cli, sandbox: SandboxServer, tmp_path: Path, who: str, data: str, *flags: str) -> None:
    """``send`` creates ``who`` with the email ``<who>@example.com`` from the data dir ``data``."""
    email = f"{who}@example.com"
    path = write_jsonl(tmp_path / f"{who}.jsonl", [ev("signed_up", who, 0, top={"$set": {"email": email}})])
    env = {"CUSTOMERIO_SITE_ID": SITE_ID, "CUSTOMERIO_API_KEY": API_KEY, "CUSTOMERIO_TRACK_URL": sandbox.url}
    result = cli("send", "--data-dir", data, *flags, str(path), env=env)
    assert result.exit_code == 0, result.output
    assert sandbox.state.person(email) is not None


def test_delete_person_and_unsuppress_flags(
    cli: Cli, sandbox: SandboxServer, tmp_path: Path, settings_seen: list[Settings]
) -> None:
    data = str(tmp_path / "data")
    _person_with_email(cli, sandbox, tmp_path, "dee", data)
    sandbox.state.log.reset()
    env = {
        "CUSTOMERIO_SITE_ID": "env-site",
        "CUSTOMERIO_API_KEY": "env-key",
        "CUSTOMERIO_TRACK_URL": DEAD_URL,
        "CUSTOMERIO_API": "v2",
        "SUPPRESS_ON_DELETE": "false",
        "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "elsewhere"),
    }
    where = ("--site-id", SITE_ID, "--api-key", API_KEY, "--track-url", sandbox.url, "--data-dir", data)
    # --suppress (env: false), --api v1 (env: v2), by every identifier known in --data-dir
    result = cli("delete-person", "dee", *where, "--api", "v1", "--suppress", "--identify-by-email", env=env)
    assert result.exit_code == 0, result.output
    assert "dee: suppressed in Customer.io (sent suppress by id dee, email dee@example.com)" in result.stdout
    assert [entry["path"] for entry in sandbox.state.requests()] == [
        "/api/v1/customers/dee/suppress",
        "/api/v1/customers/dee%40example.com/suppress",
    ]
    assert sandbox.state.suppressions() and sandbox.state.person("dee@example.com") is None
    assert settings_seen[-1].identify_by_email is True  # accepted; a deletion goes by every identifier anyway
    no_secrets(result.output, SITE_ID, API_KEY)
    # unsuppress: the same identifiers, v1's unsuppress path
    result = cli("unsuppress", "dee", *where, "--api", "v1", env=env)
    assert result.exit_code == 0, result.output
    assert "dee: unsuppressed in Customer.io (sent unsuppress by id dee, email dee@example.com)" in result.stdout
    assert sandbox.state.suppressions() == []
    assert sandbox.state.requests()[-1]["path"] == "/api/v1/customers/dee%40example.com/unsuppress"
    no_secrets(result.output, SITE_ID, API_KEY)
    # --no-suppress (env: true) deletes, through v2 (no --api: the environment's)
    _person_with_email(cli, sandbox, tmp_path, "eve", data)
    sandbox.state.log.reset()
    env["SUPPRESS_ON_DELETE"] = "true"
    result = cli("delete-person", "eve", *where, "--no-suppress", "--no-identify-by-email", env=env)
    assert result.exit_code == 0, result.output
    assert "eve: deleted in Customer.io (sent delete by id eve, email eve@example.com)" in result.stdout
    assert settings_seen[-1].identify_by_email is False
    (batch,) = [entry["body"]["batch"] for entry in sandbox.state.requests()]
    assert [item["action"] for item in batch] == ["delete", "delete"]
    assert sandbox.state.suppressions() == [] and sandbox.state.person("eve@example.com") is None


def test_delete_person_and_unsuppress_region_and_plugin_config(
    cli: Cli, regions: SandboxServer, tmp_path: Path, plugin_config: Path
) -> None:
    env = {"CUSTOMERIO_REGION": "us", "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "data")}
    for command in ("delete-person", "unsuppress"):
        regions.state.log.reset()
        flags = ("--plugin-config", str(plugin_config), "--region", "eu", "--timeout", "20")
        result = cli(command, "zed", *flags, env=env)
        assert result.exit_code == 0, result.output
        assert len(regions.state.requests()) == 1  # reached the EU host with the plugin's credentials
        no_secrets(result.output, SITE_ID, API_KEY)


def test_delete_person_and_unsuppress_timeout_and_outbox_url(cli: Cli, sandbox: SandboxServer, tmp_path: Path) -> None:
    outbox = f"sqlite:///{tmp_path / 'outbox.sqlite'}"
    data = str(tmp_path / "data")
    _person_with_email(cli, sandbox, tmp_path, "dee", data, "--outbox-url", outbox)
    env = {"CUSTOMERIO_SITE_ID": SITE_ID, "CUSTOMERIO_API_KEY": API_KEY, "CUSTOMERIO_TRACK_URL": DEAD_URL}
    env["POSTHOG_CUSTOMERIO_DATA_DIR"] = data
    # each stays queued in the --outbox-url database: delete by id and by the email known there (2), then
    # unsuppress by id (the deletion forgot her email)
    for command, what, depth in (("delete-person", "deletion", 2), ("unsuppress", "unsuppress", 3)):
        started = time.monotonic()
        result = cli(command, "dee", "--outbox-url", outbox, "--timeout", "0.5", env=env)
        assert result.exit_code == 1, result.output
        assert result.stderr == f"error: timed out; the {what} stays queued\n"
        assert time.monotonic() - started < 10
        assert "not created by this data dir" not in result.stdout
        status = cli("status", "--json", "--outbox-url", outbox, env=env)
        assert json.loads(status.stdout)["outbox"]["depth"] == depth


def test_delete_person_and_unsuppress_delivery_flags(
    cli: Cli,
    env: dict[str, str],
    sandbox: SandboxServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    pipelines_key: str,
) -> None:
    for command in ("delete-person", "unsuppress"):
        sandbox.state.reset()
        sandbox.state.add_fault(status=429, retry_after=3600, count=1)
        started = time.monotonic()
        result = cli(command, "zed", "--retry-after-max-s", "0.2", env={**env, "RETRY_AFTER_MAX_S": "3600"})
        assert result.exit_code == 0, result.output
        assert time.monotonic() - started < 20 and len(sandbox.state.requests()) == 2  # answered 429, then sent
        sandbox.state.reset()
        sandbox.state.add_fault(delay_s=SLOW_S, count=1)
        caplog.clear()
        result = cli(command, "zed", "--customerio-timeout-s", "0.2", env={**env, "CUSTOMERIO_TIMEOUT_S": "30"})
        assert result.exit_code == 0, result.output
        assert "DeadlineExceeded" in caplog.text  # the slow answer was given up on at the deadline
        wait_logged(sandbox, 2)
        # the Pipelines API with its key and URL as flags (the environment: Track credentials only)
        pipelines = ("--api", "pipelines", "--customerio-pipelines-api-key", pipelines_key, "--delivery-linger-s", "0")
        result = cli(command, "zed", *pipelines, "--customerio-pipelines-url", sandbox.url, env=env)
        assert result.exit_code == 0, result.output
        no_secrets(result.output, pipelines_key)
        calls = [item for entry in sandbox.pipelines.requests() for item in entry["body"]["batch"]]
        assert calls[-1]["event"] == ("Delete Person" if command == "delete-person" else "User Unsuppressed")


# -- status, dead-letters, retry-dead-letters --------------------------------------------------------
def test_read_only_commands_read_the_store_the_flags_name(
    cli: Cli, sandbox: SandboxServer, tmp_path: Path, settings_seen: list[Settings]
) -> None:
    env = {"CUSTOMERIO_SITE_ID": SITE_ID, "CUSTOMERIO_API_KEY": API_KEY, "CUSTOMERIO_TRACK_URL": sandbox.url}
    env["POSTHOG_CUSTOMERIO_DATA_DIR"] = str(tmp_path / "nothing-here")  # without the flags: no data
    outbox = f"sqlite:///{tmp_path / 'outbox.sqlite'}"
    long_names = write_jsonl(tmp_path / "long.jsonl", [ev("a" * 101, "u1", 0), ev("b" * 101, "u2", 1)])
    sent = cli("send", "--limits", "dead-letter", "--outbox-url", outbox, str(long_names), env=env)
    assert sent.exit_code == 1 and "dead-lettered      2" in sent.stdout, sent.output
    store = ("--outbox-url", outbox, "--lease-s", "7", "--sqlite-synchronous", "normal")
    listed = cli("dead-letters", *store, "--json", "--limit", "1", env=env)
    assert listed.exit_code == 0 and len(listed.stdout.splitlines()) == 1, listed.output
    assert json.loads(listed.stdout)["reason"]
    report = cli("status", *store, "--json", env=env)
    assert json.loads(report.stdout)["outbox"]["dead_letters"] == 2
    retried = cli("retry-dead-letters", *store, env=env)
    assert retried.stdout == "re-queued 2 operations\n"
    assert json.loads(cli("status", "--json", "--outbox-url", outbox, env=env).stdout)["outbox"]["depth"] == 2
    # the store flags reach the settings of each read-only command
    stores = [(s.outbox_url, s.lease_s, s.sqlite_synchronous) for s in settings_seen[1:4]]
    assert stores == [(outbox, 7.0, "NORMAL")] * 3
    # --data-dir: another data dir than the environment's
    data = str(tmp_path / "data")
    one = write_jsonl(tmp_path / "one.jsonl", [ev("clicked", "u3", 0)])
    assert cli("send", "--data-dir", data, str(one), env=env).exit_code == 0
    assert cli("status", "--json", env=env).exit_code == 1  # the environment's data dir holds nothing
    assert json.loads(cli("status", "--data-dir", data, "--json", env=env).stdout)["persons"] == 1
    assert cli("dead-letters", "--data-dir", data, env=env).stdout == "no dead letters\n"
    assert cli("retry-dead-letters", "--data-dir", data, env=env).stdout == "re-queued 0 operations\n"
    for command in ("status", "dead-letters", "retry-dead-letters"):
        bad = cli(command, "--data-dir", data, "--lease-s", "1", env=env)
        assert bad.exit_code == 2 and bad.stderr.startswith("error: LEASE_S:"), bad.output
        bad = cli(command, "--data-dir", data, "--sqlite-synchronous", "sometimes", env=env)
        assert bad.exit_code == 2 and bad.stderr.startswith("error: SQLITE_SYNCHRONOUS:"), bad.output


# -- the sandbox command ---------------------------------------------------------------------------
BOOT = (
    "import json, os\n"
    "from posthog_customerio.output import track\n"
    "track.REGION_URLS.update(json.loads(os.environ.pop('TEST_REGION_URLS', '{}')))\n"
    "from posthog_customerio.cli import main\n"
    "main()\n"
)


def command_line(*args: str) -> list[str]:
    """``posthog-customerio ARGS`` run from this checkout (``TEST_REGION_URLS`` redirects a region's host)."""
    return [sys.executable, "-c", BOOT, *args]


def process_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), **extra}


def stop(process: subprocess.Popen[Any], timeout: float = 30) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
        raise


def test_sandbox_command_flags(cli: Cli, tmp_path: Path) -> None:
    port = free_port()
    flags = ("--port", str(port), "--host", "127.0.0.1", "--region", "eu")
    flags += ("--site-id", "box-site", "--api-key", "box-key")
    log = tmp_path / "sandbox.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            command_line("sandbox", *flags), env=process_env(), stdout=output, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def answering() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{url}/_sandbox/people", timeout=1).status_code == 200
            assert process.poll() is None, log.read_text()
            return False

        wait_for(answering, "the sandbox to answer", 30)
        ok = cli("check", "--site-id", "box-site", "--api-key", "box-key", "--track-url", url, env={})
        assert ok.exit_code == 0 and "region     eu" in ok.stdout, ok.output
        refused = cli("check", "--site-id", "box-site", "--api-key", "sandbox", "--track-url", url, env={})
        assert refused.exit_code == 1  # only the --api-key given is accepted
    finally:
        stop(process)
    assert f"sandbox Track API on http://127.0.0.1:{port}" in log.read_text()


# -- flags whose effect a short test cannot see: they reach the settings, a bad value stops the command ----
@pytest.fixture
def taken_port() -> Iterator[str]:
    """A port already listened on: an in-process ``serve`` starts up completely, then cannot bind and stops."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield str(sock.getsockname()[1])


#: command line to the flags -> (flag, value, Settings field, expected value, a bad value, its variable)
PLUMBING: dict[tuple[str, ...], list[tuple[str, str, str, Any, str, str]]] = {
    ("check", "--sandbox"): [("--retry-after-max-s", "7", "retry_after_max_s", 7.0, "4000", "RETRY_AFTER_MAX_S")],
    ("send", "{empty}"): [
        ("--concurrency", "3", "delivery_concurrency", 3, "65", "DELIVERY_CONCURRENCY"),
        ("--anonymous-max-age-s", "7", "anonymous_max_age_s", 7.0, "-5.5", "ANONYMOUS_MAX_AGE_S"),
        ("--lease-s", "7", "lease_s", 7.0, "1.5", "LEASE_S"),
        ("--sqlite-synchronous", "normal", "sqlite_synchronous", "NORMAL", "sometimes", "SQLITE_SYNCHRONOUS"),
    ],
    ("sync-persons", "--from", "{empty}"): [
        ("--concurrency", "3", "delivery_concurrency", 3, "65", "DELIVERY_CONCURRENCY"),
        ("--anonymous-hold-s", "7", "anonymous_hold_s", 7.0, "-1", "ANONYMOUS_HOLD_S"),
        ("--anonymous-max-age-s", "7", "anonymous_max_age_s", 7.0, "-5.5", "ANONYMOUS_MAX_AGE_S"),
        ("--anonymous-backlog-max", "7", "anonymous_backlog_max", 7, "-3", "ANONYMOUS_BACKLOG_MAX"),
        ("--lease-s", "7", "lease_s", 7.0, "1.5", "LEASE_S"),
        ("--sqlite-synchronous", "normal", "sqlite_synchronous", "NORMAL", "sometimes", "SQLITE_SYNCHRONOUS"),
    ],
    ("delete-person", "nobody"): [
        ("--delivery-linger-s", "0.3", "delivery_linger_s", 0.3, "11", "DELIVERY_LINGER_S"),
        ("--lease-s", "7", "lease_s", 7.0, "1.5", "LEASE_S"),
        ("--sqlite-synchronous", "normal", "sqlite_synchronous", "NORMAL", "sometimes", "SQLITE_SYNCHRONOUS"),
    ],
    ("unsuppress", "nobody"): [
        ("--delivery-linger-s", "0.3", "delivery_linger_s", 0.3, "11", "DELIVERY_LINGER_S"),
        ("--lease-s", "7", "lease_s", 7.0, "1.5", "LEASE_S"),
        ("--sqlite-synchronous", "normal", "sqlite_synchronous", "NORMAL", "sometimes", "SQLITE_SYNCHRONOUS"),
    ],
    ("serve", "--port", "{taken}"): [
        ("--delivery-linger-s", "0.3", "delivery_linger_s", 0.3, "11", "DELIVERY_LINGER_S"),
        ("--customerio-timeout-s", "7", "customerio_timeout_s", 7.0, "-7.5", "CUSTOMERIO_TIMEOUT_S"),
        ("--retry-after-max-s", "7", "retry_after_max_s", 7.0, "inf", "RETRY_AFTER_MAX_S"),
        ("--anonymous-hold-s", "7", "anonymous_hold_s", 7.0, "-1", "ANONYMOUS_HOLD_S"),
        ("--anonymous-max-age-s", "7", "anonymous_max_age_s", 7.0, "-5.5", "ANONYMOUS_MAX_AGE_S"),
        ("--anonymous-backlog-max", "7", "anonymous_backlog_max", 7, "-3", "ANONYMOUS_BACKLOG_MAX"),
        ("--lease-s", "7", "lease_s", 7.0, "1.5", "LEASE_S"),
        ("--sqlite-synchronous", "normal", "sqlite_synchronous", "NORMAL", "sometimes", "SQLITE_SYNCHRONOUS"),
    ],
}


@pytest.mark.parametrize("command", list(PLUMBING), ids=lambda command: command[0])
def test_flags_without_a_visible_effect_reach_the_settings(
    cli: Cli,
    env: dict[str, str],
    tmp_path: Path,
    taken_port: str,
    settings_seen: list[Settings],
    command: tuple[str, ...],
) -> None:
    """Run as typed, each flag lands in the settings the command runs with (over its environment variable);
    a bad value stops the command with one line naming the variable, never the value."""
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    args = [{"{empty}": str(empty), "{taken}": taken_port}.get(arg, arg) for arg in command]
    flags = PLUMBING[command]
    env = {**env, "DELIVERY_LINGER_S": "5", "CUSTOMERIO_TIMEOUT_S": "20", "RETRY_AFTER_MAX_S": "20"}
    env |= {"ANONYMOUS_HOLD_S": "20", "LEASE_S": "20", "DELIVERY_CONCURRENCY": "8", "SQLITE_SYNCHRONOUS": "FULL"}
    env |= {"ANONYMOUS_MAX_AGE_S": "20", "ANONYMOUS_BACKLOG_MAX": "20"}
    with kept_logging():
        result = cli(*args, *(part for flag, value, *_ in flags for part in (flag, value)), env=env)
    assert settings_seen, result.output
    for flag, _value, field, expected, _bad, _variable in flags:
        assert getattr(settings_seen[-1], field) == expected, flag
    if args[0] == "serve":  # it got as far as binding the port (taken: one line, exit 1)
        assert result.exit_code == 1 and "the port is already in use" in result.stderr, result.output
    else:
        assert result.exit_code == 0, result.output
    for flag, _value, _field, _expected, bad, variable in flags:
        with kept_logging():
            result = cli(*args, flag, bad, env=env)
        assert result.exit_code == 2 and result.stderr.startswith(f"error: {variable}: "), (flag, result.output)
        assert result.stderr.count("\n") == 1 and bad not in result.stderr, result.stderr


def test_serve_allow_unauthenticated_flags(cli: Cli, env: dict[str, str], taken_port: str) -> None:
    """``--allow-unauthenticated``: ``serve`` starts on a non-loopback host with no token (here it gets as far as
    binding the port, which is taken); ``--no-allow-unauthenticated`` refuses even when the environment allows."""
    host = ("--host", "0.0.0.0", "--port", taken_port)
    with kept_logging():
        allowed = cli("serve", *host, "--allow-unauthenticated", env={**env, "ALLOW_UNAUTHENTICATED": "false"})
        refused = cli("serve", *host, "--no-allow-unauthenticated", env={**env, "ALLOW_UNAUTHENTICATED": "true"})
    assert allowed.exit_code == 1 and "the port is already in use" in allowed.stderr, allowed.output
    assert "ALLOW_UNAUTHENTICATED" not in allowed.output
    assert refused.exit_code == 2 and refused.stderr.startswith("error: --host 0.0.0.0 is reachable"), refused.output
    assert "ALLOW_UNAUTHENTICATED=true" in refused.stderr and refused.stderr.count("\n") == 1


# -- serve: a real process --------------------------------------------------------------------------
@dataclass
class Served:
    url: str
    process: subprocess.Popen[Any]
    log: Path

    def output(self) -> str:
        return self.log.read_text()

    def status(self, token: str | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        answer = httpx.get(f"{self.url}/api/status", headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def drained(self, timeout: float = 30) -> None:
        outbox = lambda: self.status()["outbox"]  # noqa: E731
        wait_for(lambda: outbox()["depth"] == 0, "the outbox to drain", timeout, describe=outbox)

    def stop(self) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds it took to exit)."""
        started = time.monotonic()
        code = stop(self.process)
        return code, time.monotonic() - started


@contextlib.contextmanager
def serving(tmp_path: Path, *args: str, env: dict[str, str], port: int | None = None) -> Iterator[Served]:
    """``posthog-customerio serve --port PORT ARGS`` as a process with only ``env`` configured."""
    port = port or free_port()
    log = tmp_path / f"serve-{port}.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            command_line("serve", "--port", str(port), *args),
            env=process_env(**env),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    served = Served(f"http://127.0.0.1:{port}", process, log)
    try:
        try:
            wait_serving(served.url, process)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{served.output()}") from None
        yield served
    finally:
        if process.poll() is None:
            stop(process)


def post_events(url: str, events: list[dict[str, Any]], path: str = "/webhook", **headers: str) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=events, headers=headers, timeout=30)


def _closed_after(url: str, request: bytes, limit: float = 6.0) -> tuple[float, bytes]:
    """Send ``request`` on a new connection; (seconds until the server closed it, what it answered)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=limit) as sock:
        started = time.monotonic()
        sock.sendall(request)
        received = b""
        with contextlib.suppress(TimeoutError):
            while chunk := sock.recv(65536):
                received += chunk
        return time.monotonic() - started, received


def _signed(body: bytes, secret: str) -> dict[str, str]:
    at = str(int(time.time()))
    digest = hmac.new(base64.b64decode(secret.removeprefix("whsec_")), f"msg_1.{at}.".encode() + body, hashlib.sha256)
    signature = "v1," + base64.b64encode(digest.digest()).decode()
    return {"webhook-id": "msg_1", "webhook-timestamp": at, "webhook-signature": signature}


def test_serve_ingest_role_auth_limits_and_connections(
    cli: Cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path, pipelines_key: str, taken_port: str
) -> None:
    token, ops = "hook-token-3f9a1c", "ops-token-8b2e4d"
    secret = "whsec_" + base64.b64encode(b"flag-test-signing-secret-32bytes").decode()
    # a malformed --webhook-signing-secret stops the start: exit 2, one line, the value never shown
    malformed = cli("serve", "--port", taken_port, "--webhook-signing-secret", "whsec_S3CRETVALUE12", env=env)
    assert malformed.exit_code == 2 and malformed.output.strip().splitlines() == [
        "error: WEBHOOK_SIGNING_SECRET: must be a Standard Webhooks secret: whsec_ followed by base64"
    ]
    outbox, data = tmp_path / "outbox.sqlite", tmp_path / "data"
    env = {
        "WEBHOOK_TOKEN": "env-hook-token",
        "OPS_TOKEN": "env-ops-token",
        "CUSTOMERIO_API": "v2",
        "CUSTOMERIO_PIPELINES_API_KEY": "env-pipelines-key",
        "CUSTOMERIO_PIPELINES_URL": DEAD_URL,
        "HTTP_KEEP_ALIVE_S": "30",
        "HTTP_READ_TIMEOUT_S": "30",
        "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "env-data"),
        "SQLITE_SYNCHRONOUS": "NORMAL",
    }
    port = free_port()
    flags = (
        *("--host", "127.0.0.1", "--port", str(port), "--role", "ingest"),
        *("--webhook-token", token, "--webhook-signing-secret", secret, "--ops-token", ops),
        *("--max-body-bytes", "2000", "--max-events-per-request", "2", "--max-queue", "3"),
        *("--cors-origins", "https://shop.example", "--timeout-keep-alive", "1", "--http-read-timeout-s", "1"),
        *("--outbox-url", f"sqlite:///{outbox}", "--data-dir", str(data)),
        *("--api", "pipelines", "--customerio-pipelines-api-key", pipelines_key),
        *("--customerio-pipelines-url", sandbox.url),
    )
    with serving(tmp_path, *flags, env=env, port=port) as served:
        url = served.url  # --host 127.0.0.1 --port PORT
        health = lambda: httpx.get(f"{url}/healthz").json()  # noqa: E731
        assert health()["delivery"] == "off"  # --role ingest: receivers only
        # --api pipelines with the key and URL flags: the ingest role's credential check uses them
        wait_for(lambda: health()["customerio"]["credentials"] == "ok", "the Pipelines key check", 15, describe=health)
        assert sandbox.pipelines.requests() and sandbox.state.requests() == []
        body = json.dumps(ev("clicked", "u1", 0)).encode()
        hook = {"Content-Type": "application/json"}
        # --webhook-token and --webhook-signing-secret: /webhook wants both
        assert httpx.post(f"{url}/webhook", content=body, headers={**hook, **_signed(body, secret)}).status_code == 401
        bearer = {"Authorization": f"Bearer {token}"}
        assert httpx.post(f"{url}/webhook", content=body, headers={**hook, **bearer}).status_code == 401
        env_bearer = {"Authorization": "Bearer env-hook-token", **_signed(body, secret)}
        assert httpx.post(f"{url}/webhook", content=body, headers={**hook, **env_bearer}).status_code == 401
        # --max-events-per-request 2 and --max-body-bytes 2000 (capture endpoint, token as api_key)
        three = {"api_key": token, "batch": [ev("clicked", f"u{n}", n) for n in range(3)]}
        assert httpx.post(f"{url}/batch", json=three).status_code == 413
        big = {"api_key": token, "batch": [ev("clicked", "u1", 0, blob="x" * 2500)]}
        assert httpx.post(f"{url}/batch", json=big).status_code == 413
        small = {"api_key": "env-hook-token", "batch": [ev("clicked", "u1", 0)]}
        assert httpx.post(f"{url}/batch", json=small).status_code == 401
        # --ops-token guards /api/*: not the webhook token, not the environment's
        for wrong in (token, "env-ops-token"):
            assert httpx.get(f"{url}/api/status", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
        assert served.status(ops)["outbox"]["depth"] == 0
        assert httpx.get(f"{url}/api/status", auth=("anyone", ops)).status_code == 200  # or as Basic's password
        # --cors-origins: that origin is allowed on PostHog's paths, another is not
        preflight = {"Access-Control-Request-Method": "POST"}
        allowed = httpx.options(f"{url}/batch", headers={**preflight, "Origin": "https://shop.example"})
        assert allowed.headers.get("access-control-allow-origin") == "https://shop.example"
        other = httpx.options(f"{url}/batch", headers={**preflight, "Origin": "https://evil.example"})
        assert other.headers.get("access-control-allow-origin") is None
        # --timeout-keep-alive 1 closes an idle connection, --http-read-timeout-s 1 an unfinished request
        with contextlib.ExitStack() as stack:
            from concurrent.futures import ThreadPoolExecutor

            pool = stack.enter_context(ThreadPoolExecutor(2))
            idle = pool.submit(_closed_after, url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            slow = pool.submit(_closed_after, url, b"POST /batch HTTP/1.1\r\nHost: x\r\n")
            (idle_s, answer), (slow_s, _) = idle.result(), slow.result()
        assert answer.startswith(b"HTTP/1.1 200") and 0.8 <= idle_s < 4, idle_s
        assert 0.8 <= slow_s < 4 and slow.result()[1].startswith(b"HTTP/1.1 408"), slow.result()
        # accepted with both credentials; --max-queue 3: the outbox fills (nobody delivers), then 503
        signed = {**hook, **bearer, **_signed(body, secret)}
        assert httpx.post(f"{url}/webhook", content=body, headers=signed).status_code == 200
        answers: list[httpx.Response] = []

        def refused() -> bool:  # the receivers count the outbox at most once a second
            batch = {"api_key": token, "batch": [ev("clicked", f"q{len(answers)}", 0)]}
            answers.append(httpx.post(f"{url}/batch", json=batch))
            return answers[-1].status_code == 503

        wait_for(refused, "a 503 from the full outbox", 10, interval=0.3)
        assert answers[0].status_code == 200 and answers[-1].headers.get("retry-after")
        assert httpx.get(f"{url}/readyz").status_code == 503
        assert served.status(ops)["outbox"]["depth"] >= 3
        # --outbox-url: the database is that file; --data-dir holds no database; the environment's is unused
        assert outbox.is_file() and not (data / "posthog-customerio.sqlite").exists()
        assert not (tmp_path / "env-data").exists()
        code, _ = served.stop()
    assert code == 0
    no_secrets(served.output(), token, ops, secret, pipelines_key)


def test_serve_outbox_max_queued_flag(cli: Cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path) -> None:
    """``--outbox-max-queued 2`` (env: a million), ``--role ingest`` (nobody delivers): at two operations of person
    work the receivers answer 503 with Retry-After, naming the bound; ``/readyz`` says so, ``/api/status`` counts it."""
    env = {**env, "OUTBOX_MAX_QUEUED": "1000000"}
    with serving(tmp_path, "--role", "ingest", "--outbox-max-queued", "2", env=env) as served:
        answers: list[httpx.Response] = []

        def refused() -> bool:  # the receivers count the outbox at most once a second
            answers.append(post_events(served.url, [ev("clicked", f"u{len(answers)}", 0)]))
            return answers[-1].status_code == 503

        wait_for(refused, "a 503 at the bound", 15, interval=0.3)
        assert answers[0].status_code == 200 and answers[-1].headers["retry-after"] == "10"
        assert "(OUTBOX_MAX_QUEUED 2)" in answers[-1].json()["error"]
        ready = httpx.get(f"{served.url}/readyz")
        assert ready.status_code == 503 and "OUTBOX_MAX_QUEUED 2" in " ".join(ready.json()["problems"])
        bound = served.status()["outbox_bound"]
        assert (bound["max_queued"], bound["full"], bound["refused"]["webhook"]) == (2, True, 1), bound
    assert bound["queued"] >= 2


def _receiver_workers(pid: int) -> list[int]:
    """The receiver workers a ``serve`` process started: its children running multiprocessing's ``spawn_main``."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(int(child))
    return found


def test_serve_workers_flag(env: dict[str, str], sandbox: SandboxServer, tmp_path: Path) -> None:
    """``--workers 3``: two receiver processes beside the first answer on the same port and store into the same
    outbox. Events posted on fresh connections (each taken by whichever process accepts it) reach the sandbox once
    each; ``/api/status``, the first process's answer whichever process took the connection, lists the three as
    replicas with what each received, summed; SIGTERM stops them all."""
    env = {**env, "ANONYMOUS_EVENTS": "person", "SQLITE_SYNCHRONOUS": "FULL"}
    posted: list[dict[str, Any]] = []
    with serving(tmp_path, "--workers", "3", env=env) as served:
        wait_for(lambda: len(_receiver_workers(served.process.pid)) == 2, "two receiver workers", 60)
        workers = _receiver_workers(served.process.pid)

        def post_some() -> None:
            for n in range(len(posted), len(posted) + 20):
                event = ev("clicked", f"w{n}", n)
                with httpx.Client(timeout=30) as client:  # a new connection for each
                    answer = client.post(f"{served.url}/webhook", json=event)
                assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text
                posted.append(event)

        received: dict[int, int] = {}

        def spread_over_processes() -> bool:
            status = served.status()
            received.clear()
            received.update({r["pid"]: r["events_received"] for r in status["replicas"] if r["live"]})
            if status["ingest"]["events_received"] != len(posted):  # each process's heartbeat comes every 5 s
                return False
            if not any(received.get(pid) for pid in workers):  # the first process took every connection so far
                post_some()
                return False
            return True

        post_some()
        wait_for(spread_over_processes, "events stored by a receiver worker, counted", 60, describe=lambda: received)
        assert set(received) == {served.process.pid, *workers}
        served.drained()
        expected = (event_ulid(parsed).upper() for event in posted for parsed in parse_payload(event))
        assert_exactly_once(sandbox, expected, "serve --workers 3")
        health = httpx.get(f"{served.url}/healthz", timeout=10).json()
        assert health["delivery"] == "running"  # the first process's answer, whoever took the connection
        code, _ = served.stop()
    assert code == 0
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), "the workers to exit", 30)


def test_serve_mapping_delivery_and_logging_flags(sandbox: SandboxServer, tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {k: v for k, v in scenario_env(True).items() if k != "CUSTOMERIO_TRACK_URL"}
    env |= {"LOG_FORMAT": "text", "LOG_LEVEL": "ERROR", "AUTH_RETRY_S": "600", "DELIVERY_CONCURRENCY": "8"}
    env |= {"POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "env-data")}
    env["TEST_REGION_URLS"] = json.dumps({"eu": sandbox.url, "us": DEAD_URL})  # --region eu reaches the sandbox
    flags = (
        *("--site-id", SITE_ID, "--api-key", API_KEY, "--region", "eu", "--data-dir", str(data)),
        *("--concurrency", "1", "--auth-retry-s", "0.5", "--log-format", "json", "--log-level", "INFO"),
    )
    with serving(tmp_path, *flags, *SCENARIO_FLAGS, *SCENARIO_ON, env=env) as served:
        assert post_events(served.url, scenario_events()).status_code == 200
        served.drained()
        check_scenario(sandbox, on=True)
        health = lambda: httpx.get(f"{served.url}/healthz").json()  # noqa: E731
        assert health()["delivery_workers_alive"] == 1  # --concurrency 1 (env: 8)
        # --auth-retry-s 0.5 (env: 600): rejected credentials are re-checked that often
        sandbox.state.set_credentials(SITE_ID, "rotated-key")
        assert post_events(served.url, [ev("clicked", "bob", 99)]).status_code == 200
        wait_for(lambda: health()["delivery"] == "paused", "delivery to pause on 401", 15, describe=health)
        sandbox.state.set_credentials(SITE_ID, API_KEY)
        started = time.monotonic()
        served.drained(10)
        assert time.monotonic() - started < 5
        code, _ = served.stop()
    assert code == 0
    output = served.output()
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]  # --log-format json (env: text)
    assert any(line["level"] == "INFO" and "serving" in line["message"] for line in lines)  # --log-level INFO
    no_secrets(output, SITE_ID, API_KEY)
    # --data-dir: state and outbox there, kept after the stop
    assert (data / "posthog-customerio.sqlite").is_file() and not (tmp_path / "env-data").exists()


@contextlib.contextmanager
def unanswering_server() -> Iterator[tuple[str, list[bytes]]]:
    """A host that accepts connections and reads requests but never answers; yields (URL, what it read)."""
    received: list[bytes] = []
    done = threading.Event()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.settimeout(0.1)
        connections: list[socket.socket] = []

        def accept() -> None:
            while not done.is_set():
                try:
                    connection, _ = sock.accept()
                except OSError:
                    continue
                connections.append(connection)
                connection.settimeout(2)
                with contextlib.suppress(OSError):
                    received.append(connection.recv(65536))

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}", received
        finally:
            done.set()
            thread.join(5)
            for connection in connections:
                connection.close()


def test_serve_negated_flags_proxy_and_shutdown(
    cli: Cli, sandbox: SandboxServer, tmp_path: Path, plugin_config: Path
) -> None:
    outbox = f"sqlite:///{tmp_path / 'outbox.sqlite'}"
    env = {**scenario_env(False), "LOG_FORMAT": "json", "LOG_LEVEL": "DEBUG", "SHUTDOWN_GRACE_S": "30"}
    env |= {"POSTHOG_TIMEOUT_S": "30", "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "data")}
    with unanswering_server() as (posthog, received):
        flags = (
            *("--plugin-config", str(plugin_config), "--track-url", sandbox.url, "--outbox-url", outbox),
            *("--posthog-host", posthog, "--posthog-timeout-s", "0.5", "--shutdown-grace-s", "1"),
            *("--log-format", "text", "--log-level", "WARNING"),
        )
        with serving(tmp_path, *flags, *SCENARIO_FLAGS, *SCENARIO_OFF, env=env) as served:
            assert post_events(served.url, scenario_events()).status_code == 200
            served.drained()
            check_scenario(sandbox, on=False)
            # --posthog-host: PostHog's paths go there; --posthog-timeout-s 0.5 (env: 30): no answer is a 502
            started = time.monotonic()
            answer = httpx.post(f"{served.url}/flags/?v=2", json={"token": "phc_x", "distinct_id": "u1"}, timeout=20)
            assert answer.status_code == 502 and 0.4 <= time.monotonic() - started < 5
            assert received and received[0].startswith(b"POST /flags/?v=2 ")
            # --shutdown-grace-s 1 (env: 30): with Customer.io failing, the stop keeps the rest queued after 1 s
            sandbox.state.add_fault(status=503, duration_s=60)
            assert post_events(served.url, [ev("clicked", "late", 0)]).status_code == 200
            code, seconds = served.stop()
    assert code == 0 and seconds < 8, seconds
    status = cli("status", "--json", "--outbox-url", outbox, env={})
    assert json.loads(status.stdout)["outbox"]["depth"] >= 1
    output = served.output()
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines and not [line for line in lines if line.startswith("{")]  # --log-format text (env: json)
    assert " WARNING " in output and " INFO " not in output and " DEBUG " not in output  # --log-level WARNING
    no_secrets(output, SITE_ID, API_KEY)


# -- consume (Kafka) ------------------------------------------------------------------------------
try:
    from .test_kafka_source import Broker, kafka_broker, new_topic, produce  # kafka_broker: the fixture
except pytest.skip.Exception:  # confluent-kafka is not installed (under CI that fails instead)
    kafka_broker = None


def _consume(cli: Cli, *args: str, env: dict[str, str]) -> tuple[dict[str, Any], str]:
    """``consume ARGS``: its JSON summary and its stderr (the log)."""
    with kept_logging():
        result = cli("consume", *args, env=env)
    assert result.exit_code == 0, result.output
    no_secrets(result.output, SITE_ID, API_KEY, KAFKA_SECRET)
    return dict(json.loads(result.stdout)), result.stderr


#: a librdkafka secret given in --kafka-config / --kafka-config-file (unused by the plaintext test broker)
KAFKA_SECRET = "kafka-secret-5c81a"


def _scenario_topic(broker: Any) -> str:
    topic = str(new_topic(broker, partitions=1))  # one partition: the stream's order is kept
    produce(broker, topic, [(None, json.dumps(event).encode()) for event in scenario_events()])
    return topic


@pytest.mark.skipif(kafka_broker is None, reason="confluent-kafka is not installed")
@pytest.mark.parametrize("on", [True, False], ids=["flags", "negated-flags"])
def test_consume_mapping_and_kafka_flags(
    cli: Cli,
    kafka_broker: Broker,
    regions: SandboxServer,
    tmp_path: Path,
    plugin_config: Path,
    settings_seen: list[Settings],
    on: bool,
) -> None:
    from .test_kafka_source import committed_offsets

    sandbox = regions
    topic, group = _scenario_topic(kafka_broker), f"flags-{on}"
    count = len(scenario_events())
    env = {**scenario_env(on), "KAFKA_BOOTSTRAP_SERVERS": DEAD_URL.removeprefix("http://")}
    env |= {"KAFKA_TOPIC": "env-topic", "KAFKA_GROUP_ID": "env-group", "SHUTDOWN_GRACE_S": "0", "LOG_LEVEL": "ERROR"}
    env |= {"POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "env-data"), "DELIVERY_CONCURRENCY": "8"}
    kafka = ("--kafka-bootstrap", kafka_broker.bootstrap, "--topic", topic, "--group", group)
    kafka += ("--batch-size", "4", "--max-messages", str(count), "--json")
    logs = ("--log-format", "json", "--log-level", "INFO") if on else ("--log-format", "text", "--log-level", "WARNING")
    env |= {"LOG_FORMAT": "text", "LOG_LEVEL": "ERROR"} if on else {"LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
    settings = ("--shutdown-grace-s", "20", "--concurrency", "1", "--delivery-linger-s", "0")
    settings += ("--customerio-timeout-s", "7", "--retry-after-max-s", "7", "--anonymous-hold-s", "0")
    settings += ("--anonymous-max-age-s", "86400", "--anonymous-backlog-max", "100000")
    settings += ("--lease-s", "7", "--sqlite-synchronous", "normal", "--auth-retry-s", "7", *logs)
    settings += ("--reorder-window-s", "0.5", "--reorder-stale-s", "9")
    env |= {"REORDER_WINDOW_S": "600", "REORDER_STALE_S": "3600"}  # the flags win (a 10-minute window would hold all)
    kafka_settings = {**kafka_broker.consumer_settings, "sasl.password": KAFKA_SECRET}
    data, outbox = tmp_path / "data", tmp_path / "outbox.sqlite"
    if on:  # the Kafka settings from a file; credentials as flags; --region eu is the sandbox
        config = tmp_path / "kafka.properties"
        config.write_text("".join(f"{key}={value}\n" for key, value in kafka_settings.items()))
        env.pop("CUSTOMERIO_TRACK_URL")
        where = ("--kafka-config-file", str(config), "--site-id", SITE_ID, "--api-key", API_KEY, "--region", "eu")
        where += ("--data-dir", str(data))
        summary, log = _consume(cli, *kafka, *where, *settings, *SCENARIO_FLAGS, *SCENARIO_ON, env=env)
    else:  # the Kafka settings as flags; credentials from the plugin's config; --outbox-url
        where = tuple(f for k, v in kafka_settings.items() for f in ("--kafka-config", f"{k}={v}"))
        where += ("--plugin-config", str(plugin_config), "--track-url", sandbox.url)
        where += ("--outbox-url", f"sqlite:///{outbox}")
        summary, log = _consume(cli, *kafka, *where, *settings, *SCENARIO_FLAGS, *SCENARIO_OFF, env=env)
    # --max-messages, --batch-size 4 (several commits), --shutdown-grace-s 20 (env: 0: delivered before the end)
    assert (summary["messages"], summary["events"], summary["stopped_by"]) == (count, count, "max_messages")
    assert summary["batches"] >= 3 and summary["commits"] == summary["batches"] and summary["queued"] == 0
    assert committed_offsets(kafka_broker, topic, group, partitions=1) == {0: count}  # --group, --topic
    check_scenario(sandbox, on)
    ran = settings_seen[-1]
    assert (ran.delivery_concurrency, ran.delivery_linger_s, ran.customerio_timeout_s) == (1, 0.0, 7.0)
    assert (ran.retry_after_max_s, ran.anonymous_hold_s, ran.lease_s, ran.auth_retry_s) == (7.0, 0.0, 7.0, 7.0)
    assert (ran.sqlite_synchronous, ran.shutdown_grace_s) == ("NORMAL", 20)
    assert (ran.reorder_window_s, ran.reorder_stale_s) == (0.5, 9.0)
    if on:  # --log-format json, --log-level INFO (env: text, ERROR)
        lines = [json.loads(line) for line in log.splitlines() if line.strip()]
        assert f"kafka: consuming {topic} as group {group} from {kafka_broker.bootstrap}" in [
            line["message"] for line in lines if line["level"] == "INFO"
        ]
        assert (data / "posthog-customerio.sqlite").is_file() and not (tmp_path / "env-data").exists()
    else:  # --log-format text, --log-level WARNING (env: json, INFO): no INFO line, no JSON
        assert " INFO " not in log and "kafka: consuming" not in log and not log.lstrip().startswith("{")
        assert outbox.is_file() and not (tmp_path / "env-data" / "posthog-customerio.sqlite").exists()


@pytest.mark.skipif(kafka_broker is None, reason="confluent-kafka is not installed")
def test_consume_sandbox_data_dir_and_pipelines_flags(
    cli: Cli, kafka_broker: Broker, sandbox: SandboxServer, tmp_path: Path, pipelines_key: str
) -> None:
    topic = _scenario_topic(kafka_broker)
    count = str(len(scenario_events()))
    kafka = ("--kafka-bootstrap", kafka_broker.bootstrap, "--topic", topic, "--max-messages", count, "--json")
    kafka += tuple(f for k, v in kafka_broker.consumer_settings.items() for f in ("--kafka-config", f"{k}={v}"))
    # --sandbox with --data-dir: the in-process sandbox gets everything, the directory is kept
    data = tmp_path / "mine"
    summary, _ = _consume(cli, *kafka, "--group", "sandboxed", "--sandbox", "--data-dir", str(data), env={})
    assert summary["operations_delivered"] > 0 and summary["queued"] == 0
    assert (data / "posthog-customerio.sqlite").is_file(), "consume deleted the user's --data-dir"
    # the Pipelines API with the key and URL as flags (the environment has wrong ones)
    env = {"CUSTOMERIO_PIPELINES_API_KEY": "env-key", "CUSTOMERIO_PIPELINES_URL": DEAD_URL}
    env["POSTHOG_CUSTOMERIO_DATA_DIR"] = str(tmp_path / "data")
    pipelines = ("--api", "pipelines", "--customerio-pipelines-api-key", pipelines_key)
    pipelines += ("--customerio-pipelines-url", sandbox.url, "--delivery-linger-s", "0")
    with kept_logging():
        result = cli("consume", *kafka, "--group", "pipelines", *pipelines, env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["queued"] == 0
    assert {person["userId"] for person in sandbox.pipelines.people()} >= {"ann", "bob"}
    no_secrets(result.output, pipelines_key)


@pytest.mark.skipif(kafka_broker is None, reason="confluent-kafka is not installed")
def test_consume_outbox_max_queued_flag(
    cli: Cli, kafka_broker: Broker, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path
) -> None:
    """``--outbox-max-queued 1`` (env: a million): after each batch the partitions pause until delivery made room;
    everything is stored, committed and delivered all the same."""
    from .test_kafka_source import committed_offsets

    topic, count = _scenario_topic(kafka_broker), len(scenario_events())
    env = {**env, "OUTBOX_MAX_QUEUED": "1000000", "SHUTDOWN_GRACE_S": "20", "ANONYMOUS_HOLD_S": "0"}
    kafka = ("--kafka-bootstrap", kafka_broker.bootstrap, "--topic", topic, "--batch-size", "3")
    kafka += ("--max-messages", str(count), "--json")
    kafka += tuple(f for k, v in kafka_broker.consumer_settings.items() for f in ("--kafka-config", f"{k}={v}"))
    summary, _ = _consume(cli, *kafka, "--group", "bounded", "--outbox-max-queued", "1", env=env)
    assert summary["paused"] >= 2 and summary["paused_s"] > 0 and summary["queued"] == 0, summary
    assert summary["messages"] == count and summary["commits"] == summary["batches"]
    assert committed_offsets(kafka_broker, topic, "bounded", partitions=1) == {0: count}
    other = ("--group", "unbounded", "--data-dir", str(tmp_path / "other"))
    summary, _ = _consume(cli, *kafka, *other, env=env)
    assert summary["paused"] == 0 and summary["queued"] == 0, summary


# -- serve: keeping people in sync (PERSON_SYNC_INTERVAL_S) -------------------------------------------------
def test_serve_person_sync_flags(sandbox: SandboxServer, tmp_path: Path) -> None:
    """The schedule and PostHog's API as flags over an environment that would fail (another host, project and
    key; an interval of 10 minutes): the persons become profiles at once and a pass follows 0.5 s later, paced by
    ``--posthog-api-max-per-minute 4`` (the fifth request waits a minute; SIGTERM ends that wait at once)."""
    from ..helpers import profiles
    from ..posthog_api_standin import STANDIN_KEY, PersonsStandin, running_persons_standin

    standin = PersonsStandin(30, default_limit=10)  # three pages a pass
    env = {"CUSTOMERIO_SITE_ID": SITE_ID, "CUSTOMERIO_API_KEY": API_KEY, "CUSTOMERIO_TRACK_URL": sandbox.url}
    env |= {"POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "data"), "LOG_FORMAT": "json"}
    env |= {"PERSON_SYNC_INTERVAL_S": "600", "POSTHOG_API_HOST": DEAD_URL, "POSTHOG_PROJECT_ID": "2"}
    env |= {"POSTHOG_PERSONAL_API_KEY": "phx_env_key_that_is_refused", "POSTHOG_API_MAX_PER_MINUTE": "200"}
    with running_persons_standin(standin) as posthog_url:
        flags = ("--person-sync-interval-s", "0.5", "--posthog-api-host", posthog_url, "--posthog-project-id", "1")
        flags += ("--posthog-personal-api-key", STANDIN_KEY, "--posthog-api-max-per-minute", "4")
        with serving(tmp_path, *flags, env=env) as served:
            wait_for(lambda: len(profiles(sandbox)) == 20, "the identified persons as profiles", 30)

            def second_pass_paced() -> bool:
                sync = served.status()["person_sync"]
                return bool(sync["passes"]["ok"] == 1 and sync["running"] and sync["current_pass"]["persons_read"])

            wait_for(second_pass_paced, "the next pass, 0.5 s later, held after its first page", 30)
            sync = served.status()["person_sync"]
            assert sync["interval_s"] == 0.5 and sync["passes"] == {"ok": 1, "failed": 0, "skipped": 0}
            for _ in range(10):  # the fifth request in a minute waits (without the pace: ten passes by now)
                assert [seen.status for seen in standin.requests] == [200] * 4
                time.sleep(0.1)
            code, seconds = served.stop()
    assert code == 0 and seconds < 10  # the pass's wait ended with the stop
    assert all(seen.authorized and seen.path == "/api/projects/1/persons/" for seen in standin.requests)
    no_secrets(served.output(), STANDIN_KEY, "phx_env_key_that_is_refused")


# -- serve: keeping cohorts in sync (COHORT_SYNC_INTERVAL_S) -------------------------------------------------
def test_serve_cohort_sync_flags(sandbox: SandboxServer, tmp_path: Path) -> None:
    """The cohorts and their schedule as flags over an environment that says otherwise (another segment, cohort and
    prefix; an interval of 10 minutes): the members join segment 12 and get the ``ph_`` attribute at once, and a
    member leaving the cohort leaves both on the next pass, 0.5 s later."""
    from ..posthog_api_standin import STANDIN_KEY, PersonsStandin, make_person, running_persons_standin

    standin = PersonsStandin(0, cohort_default_limit=5)
    members = [index for index in range(1, 13) if index % 3]  # identified: each becomes a profile
    standin.add_cohort(7, name=COHORT_NAME, members=[make_person(index) for index in members])
    env = {"CUSTOMERIO_SITE_ID": SITE_ID, "CUSTOMERIO_API_KEY": API_KEY, "CUSTOMERIO_TRACK_URL": sandbox.url}
    env |= {"POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "data"), "LOG_FORMAT": "json", **COHORT_ENV}
    env |= {"COHORT_SYNC_INTERVAL_S": "600", "POSTHOG_PROJECT_ID": "1", "POSTHOG_PERSONAL_API_KEY": STANDIN_KEY}
    every = [f"user-{index}" for index in members]

    def mirrored(expected: list[str]) -> bool:
        attributed = sorted(p["id"] for p in profiles(sandbox) if p["attributes"].get(COHORT_ATTRIBUTE) is True)
        return segment_members(sandbox) == sorted(expected) == attributed

    with running_persons_standin(standin) as posthog_url:
        flags = (*COHORT_FLAGS, "--cohort-sync-interval-s", "0.5")
        with serving(tmp_path, *flags, env={**env, "POSTHOG_API_HOST": posthog_url}) as served:
            wait_for(lambda: mirrored(every), "the members in segment 12 and with the attribute", 30)
            sync = served.status()["cohort_sync"]
            assert sync["interval_s"] == 0.5  # --cohort-sync-interval-s (env: 600)
            assert [cohort["cohort_id"] for cohort in sync["cohorts"]] == ["7"]  # --cohort-attributes 7 (env: 8)
            standin.remove_from_cohort(7, "user-1")
            wait_for(
                lambda: mirrored(every[1:]), "user-1 out of the segment and without the attribute, 0.5 s later", 30
            )
            code, seconds = served.stop()
    assert code == 0 and seconds < 10
    assert set(sandbox.state.segments()) == {"12"}  # --cohort-segments 7=12 (env: 7=99)
    assert {seen.cohort_id for seen in standin.requests} == {7} and all(seen.authorized for seen in standin.requests)
    no_secrets(served.output(), STANDIN_KEY, SITE_ID, API_KEY)


def test_serve_person_sync_needs_the_posthog_api_settings(cli: Cli, env: dict[str, str], taken_port: str) -> None:
    """``--person-sync-interval-s`` without PostHog's API settings stops ``serve`` at once (exit 2, one line naming
    what is missing); without the interval they are not needed. ``consume`` has no schedule (run ``sync-persons``)."""
    serve = ("serve", "--port", taken_port)
    with kept_logging():
        nothing = cli(*serve, "--person-sync-interval-s", "5", env=env)
        no_key = cli(*serve, "--person-sync-interval-s", "5", "--posthog-api-host", "https://eu.posthog.com", env=env)
        bad_host = cli(*serve, "--person-sync-interval-s", "5", env={**env, **api_env("ftp://eu.posthog.com")})
        zero = cli(*serve, "--person-sync-interval-s", "0", env={**env, **api_env("https://eu.posthog.com")})
        unscheduled = cli(*serve, env=env)
        consume = cli("consume", "--person-sync-interval-s", "5", env=env)
    assert nothing.exit_code == 2 and nothing.stderr.count("\n") == 1, nothing.output
    assert nothing.stderr.startswith("error: PERSON_SYNC_INTERVAL_S is set, so serve reads PostHog's persons API:")
    assert "set POSTHOG_API_HOST, POSTHOG_PROJECT_ID, POSTHOG_PERSONAL_API_KEY" in nothing.stderr
    assert no_key.exit_code == 2 and "set POSTHOG_PROJECT_ID, POSTHOG_PERSONAL_API_KEY\n" in no_key.stderr
    assert bad_host.exit_code == 2 and "must be an http(s) URL" in bad_host.stderr, bad_host.output
    no_secrets(bad_host.output, "phx_flag_test_key")
    assert zero.exit_code == 2 and zero.stderr.startswith("error: PERSON_SYNC_INTERVAL_S: "), zero.output
    assert unscheduled.exit_code == 1 and "the port is already in use" in unscheduled.stderr, unscheduled.output
    assert consume.exit_code == 2 and "--person-sync-interval-s" in consume.output


def api_env(host: str) -> dict[str, str]:
    return {"POSTHOG_API_HOST": host, "POSTHOG_PROJECT_ID": "1", "POSTHOG_PERSONAL_API_KEY": "phx_flag_test_key"}


# -- Customer.io's message activity into PostHog ------------------------------------------------------------------
def test_serve_customerio_activity_flags(tmp_path: Path, sandbox: SandboxServer) -> None:
    """``--customerio-webhook-signing-key`` (env: another key) verifies the webhooks, ``--posthog-project-api-key``
    (env: another key) is the key PostHog's ``/batch/`` gets, ``--customerio-webhook-tolerance-s 5000`` (env: 60)
    accepts a webhook signed 1,000 s ago."""
    env = {
        "CUSTOMERIO_SITE_ID": SITE_ID,
        "CUSTOMERIO_API_KEY": API_KEY,
        "CUSTOMERIO_TRACK_URL": sandbox.url,
        "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "data"),
        "CUSTOMERIO_WEBHOOK_SIGNING_KEY": "the-environment-s-key",
        "CUSTOMERIO_WEBHOOK_TOLERANCE_S": "60",
        "POSTHOG_PROJECT_API_KEY": "phc_environment",
    }
    with running_capture_standin() as standin:
        env["POSTHOG_HOST"] = standin.url
        flags = ("--customerio-webhook-signing-key", "flag-key", "--posthog-project-api-key", "phc_flag")
        with serving(tmp_path, *flags, "--customerio-webhook-tolerance-s", "5000", env=env) as served:
            assert post_events(served.url, [ev("signed_up", "u1")]).status_code == 200
            body = activity_body("01HFLAGS1", "email", "opened", customer_id="u1")
            assert post_activity(served.url, body, key="the-environment-s-key").status_code == 401
            late = post_activity(served.url, body, key="flag-key", timestamp=int(time.time()) - 1000)
            assert late.status_code == 200, late.text
            wait_for(lambda: len(standin.accepted()) == 1, "the activity captured", describe=standin.statuses)
            output = served.output()
        no_secrets(output, "flag-key", "phc_flag")
    assert standin.api_keys == {"phc_flag"}
    assert standin.accepted()[0]["distinct_id"] == "u1" and standin.accepted()[0]["event"] == "Email Opened"


def test_activity_commands_flags(cli: Cli, tmp_path: Path, settings_seen: list[Settings]) -> None:
    """``activity`` and ``activity-retry`` read the store the flags name (``--data-dir``, ``--outbox-url``,
    ``--lease-s``, ``--sqlite-synchronous``); ``--json``; ``--unplaced`` and ``--dead`` choose what is re-queued."""
    from posthog_customerio.activity import ActivityInbox, ActivityStats
    from posthog_customerio.mapping.activity import Activity
    from posthog_customerio.storage import SqliteStorage
    from posthog_customerio.storage.activity_sql import ActivitySettle

    env = {"POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "nothing-here")}
    outbox = tmp_path / "outbox.sqlite"
    db = SqliteStorage(outbox)
    inbox = ActivityInbox(db, ActivityStats())
    for n in range(3):
        inbox.store(Activity(f"01HCLI{n}", "email", "opened", 1_704_067_200, {"id": f"nobody-{n}"}))
    states = {"01HCLI0": "unplaced", "01HCLI1": "unplaced", "01HCLI2": "dead"}
    db.transact(
        lambda tx: tx.settle_activities(
            "test", [ActivitySettle(e, s, None, 1, f"why {s}", 0.0, None) for e, s in states.items()]
        )
    )
    db.close()
    store = ("--outbox-url", f"sqlite:///{outbox}", "--lease-s", "7", "--sqlite-synchronous", "normal")
    listed = cli("activity", *store, "--json", env=env)
    assert listed.exit_code == 0, listed.output
    report = json.loads(listed.stdout)
    assert (report["unplaced"], report["dead"]) == (2, 1)
    assert {row["event_id"]: row["last_error"] for row in report["waiting"]}["01HCLI2"] == "why dead"
    text = cli("activity", *store, env=env).stdout
    assert "2 unplaced, 1 dead" in text and "01HCLI0" in text
    assert cli("activity-retry", *store, "--dead", env=env).stdout == "re-queued 1 activities\n"
    assert cli("activity-retry", *store, "--unplaced", "01HCLI0", env=env).stdout == "re-queued 1 activities\n"
    again = cli("activity-retry", *store, "--dead", "01HCLI1", env=env)
    assert again.exit_code == 1 and again.stdout == "re-queued 0 activities\n"
    report = json.loads(cli("activity", *store, "--json", env=env).stdout)
    assert (report["queued"], report["unplaced"], report["dead"]) == (2, 1, 0)
    seen = [(s.outbox_url, s.lease_s, s.sqlite_synchronous) for s in settings_seen]
    assert set(seen) == {(f"sqlite:///{outbox}", 7.0, "NORMAL")}
    # --data-dir: the environment's holds nothing; the flag's data dir does
    data = tmp_path / "data"
    data.mkdir()
    SqliteStorage(data / "posthog-customerio.sqlite").close()
    assert cli("activity", "--json", env=env).exit_code == 1
    assert json.loads(cli("activity", "--data-dir", str(data), "--json", env=env).stdout)["queued"] == 0
    retried = cli("activity-retry", "--data-dir", str(data), env=env)
    assert retried.exit_code == 0 and retried.stdout == "re-queued 0 activities\n"
    for command in ("activity", "activity-retry"):
        bad = cli(command, "--data-dir", str(data), "--lease-s", "1", env=env)
        assert bad.exit_code == 2 and bad.stderr.startswith("error: LEASE_S:"), bad.output
        bad = cli(command, "--data-dir", str(data), "--sqlite-synchronous", "sometimes", env=env)
        assert bad.exit_code == 2 and bad.stderr.startswith("error: SQLITE_SYNCHRONOUS:"), bad.output
