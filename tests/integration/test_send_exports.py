"""``send`` reads PostHog's events batch exports: a directory, a manifest, Parquet (zstd inside), gzip and zstd
JSON Lines, through the same store, delivery and summary as a JSONL file; real HTTP to the sandbox.

The files are written as PostHog's S3 exporter writes them (``write_export_jsonl`` / ``write_export_parquet`` in
``tests/helpers.py``); the end state is read back from the sandbox.
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from posthog_customerio.cli.render import reading_progress
from posthog_customerio.delivery import Deliverer
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources.batch_exports import EXTRA_HINT, export_files
from posthog_customerio.sources.files import FileProgress, send_export

from ..conftest import Cli
from ..helpers import make_runtime, write_export_jsonl, write_export_parquet

pytestmark = pytest.mark.e2e

T0 = datetime(2024, 1, 1, tzinfo=UTC)
START, END = "2024-01-01T00:00:00+00:00", "2024-01-01T01:00:00+00:00"


def uuid_of(n: int) -> str:
    """A UUIDv7 like PostHog's (the n-th event)."""
    return f"018cc251-f400-7000-8000-{n:012d}"


def row(n: int, event: str, distinct_id: str, **properties: Any) -> dict[str, Any]:
    """An events-model row (``s3_default_fields``), at ``T0 + n`` minutes."""
    return {
        "uuid": uuid_of(n),
        "event": event,
        "distinct_id": distinct_id,
        "person_id": "018cc251-f400-7000-8000-ffffffffffff",
        "properties": properties,
        "person_properties": {},
        "elements_chain": "",
        "timestamp": T0 + timedelta(minutes=n),
        "created_at": T0 + timedelta(minutes=n),
        "_inserted_at": T0 + timedelta(minutes=n, seconds=5),
    }


def write_export(root: Path) -> Path:
    """An hour's export as ``aws s3 sync`` brings it: three data files (Parquet with zstd inside, zstd and gzip JSON
    Lines) and the manifest listing them by S3 key. A visitor browses, then identifies as ada (``$identify`` with
    ``$anon_distinct_id``) and buys; bob signs up; the last file repeats ada's purchase (an overlapping backfill).
    Returns the folder holding them."""
    folder = root / "posthog" / "events"
    files = [
        write_export_parquet(
            folder / f"{START}-{END}-0.parquet.zst",
            [row(0, "$pageview", "anon-1", **{"$current_url": "https://x.io/pricing"}), row(1, "clicked", "anon-1")],
            "events",
            compression="zstd",
        ),
        write_export_jsonl(
            folder / f"{START}-{END}-1.jsonl.zst",
            [
                row(2, "$identify", "ada", **{"$anon_distinct_id": "anon-1", "$set": {"email": "ada@example.com"}}),
                row(3, "purchased", "ada", amount=30),
            ],
            "zstd",
        ),
        write_export_jsonl(
            folder / f"{START}-{END}-2.jsonl.gz",
            [
                row(4, "signed_up", "bob", **{"$set": {"email": "bob@example.com"}}),
                row(3, "purchased", "ada", amount=30),
            ],
            "gzip",
        ),
    ]
    keys = [f"posthog/events/{file.name}" for file in files]
    (folder / f"{START}-{END}_manifest.json").write_text(json.dumps({"files": keys}))
    return folder


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """``root`` and every path below it with its mtime, mode and content digest."""
    found = {}
    for path in sorted([root, *root.rglob("*")]):
        info = path.stat()
        digest = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        found[str(path.relative_to(root))] = (info.st_mtime_ns, info.st_mode, digest)
    return found


def events_by_person(sandbox: SandboxServer) -> dict[str, list[tuple[str, str, str]]]:
    """Each profile's id -> its events as (type, name, event id)."""
    return {
        person["id"]: [(e["type"], e["name"], e["id"]) for e in sandbox.state.person(person["cio_id"])["events"]]
        for person in sandbox.state.people()
    }


# ------------------------------------------------------------------------------------------------ a whole export


@pytest.mark.parametrize("given", ["directory", "manifest"])
def test_an_export_lands_each_event_once_on_the_right_profile_and_is_left_untouched(
    cli: Cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path, given: str
) -> None:
    folder = write_export(tmp_path / "bucket")
    path = folder if given == "directory" else next(folder.glob("*_manifest.json"))
    before = snapshot(tmp_path / "bucket")

    result = cli("send", str(path), env=env)

    assert result.exit_code == 0, result.output
    assert "events read        6 (0 invalid, 1 duplicate uuid)" in result.stdout
    assert "operations         9 enqueued" in result.stdout and "dead-lettered      0" in result.stdout
    by_person = events_by_person(sandbox)
    assert sorted(by_person) == ["ada", "bob"]  # the visitor's browsing went to ada: no profile of its own
    assert [(kind, name) for kind, name, _ in by_person["ada"]] == [
        ("page", "https://x.io/pricing"),
        ("event", "clicked"),
        ("event", "$identify"),
        ("event", "purchased"),
    ]
    assert [name for _, name, _ in by_person["bob"]] == ["signed_up"]
    assert {p["id"]: p["email"] for p in sandbox.state.people()} == {"ada": "ada@example.com", "bob": "bob@example.com"}
    ids = [event_id for events in by_person.values() for _, _, event_id in events]
    assert len(ids) == len(set(ids)) == 5
    assert sandbox.state.stats()["duplicates"] == 0  # the repeated purchase was never sent
    assert snapshot(tmp_path / "bucket") == before


def test_the_json_summary_of_an_export(cli: Cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path) -> None:
    result = cli("send", "--json", str(write_export(tmp_path / "bucket")), env=env)

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["read"], summary["invalid"], summary["duplicates"], summary["stopped"]) == (6, 0, 1, None)
    assert summary["operations_enqueued"] == summary["operations_delivered"] == 9
    assert (summary["queued"], summary["dead_lettered"], summary["skipped"]) == (0, 0, {})


def test_send_sandbox_reads_an_export(cli: Cli, tmp_path: Path) -> None:
    result = cli("send", "--sandbox", str(write_export(tmp_path / "bucket")))

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "sandbox            2 people identified, 0 visitors never identified (0 anonymous events)" in lines
    assert "    events      4: page /pricing, clicked, $identify, purchased" in lines


def test_a_plain_jsonl_events_export_with_json_text_columns(
    cli: Cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path
) -> None:
    """A ``.jsonl`` is read as any JSON Lines file: flat export rows work as they are, the JSON columns as JSON
    text (as ClickHouse writes them) included, with its extra columns passed over."""

    def clickhouse(line: dict[str, Any]) -> dict[str, Any]:
        texts = {name: json.dumps(line[name]) for name in ("properties", "person_properties")}
        times = {name: f"{line[name]:%Y-%m-%d %H:%M:%S.%f}" for name in ("timestamp", "created_at", "_inserted_at")}
        return {**line, **texts, **times}

    rows = [
        row(0, "clicked", "anon-1", button="buy"),
        {**row(1, "$identify", "ada", **{"$anon_distinct_id": "anon-1"}), "person_properties": {"plan": "pro"}},
        {**row(2, "purchased", "ada", amount=30, **{"$set": {"email": "ada@example.com"}}), "elements_chain": "a:"},
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(clickhouse(line)) + "\n" for line in rows))
    before = snapshot(path)

    result = cli("send", "--json", str(path), env=env)

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["read"], summary["invalid"], summary["duplicates"]) == (3, 0, 0)
    (person,) = sandbox.state.people()
    assert (person["id"], person["email"], person["attributes"]) == ("ada", "ada@example.com", {"plan": "pro"})
    events = sandbox.state.person(person["cio_id"])["events"]
    assert [(e["name"], e["data"]) for e in events] == [
        ("clicked", {"button": "buy"}),
        ("$identify", {"$anon_distinct_id": "anon-1"}),
        ("purchased", {"amount": 30}),  # $set became the person's email, not event data
    ]
    assert events[2]["timestamp"] == int((T0 + timedelta(minutes=2)).timestamp())
    assert snapshot(path) == before


# -------------------------------------------------------------------------------------------- what stops a send


@pytest.mark.parametrize("kind", ["jsonl.gz", "parquet"])
def test_a_malformed_row_names_file_and_row_stops_reading_and_exits_1(
    cli: Cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path, kind: str
) -> None:
    folder = tmp_path / "bucket"
    write_export_jsonl(folder / "a.jsonl.gz", [row(0, "first", "ada"), row(1, "second", "ada")], "gzip")
    rows = [row(2, "third", "ada"), {**row(3, "broken", "ada"), "distinct_id": None}, row(4, "after", "ada")]
    if kind == "parquet":
        bad = write_export_parquet(folder / "b.parquet", rows, "events")
        where = f"{bad}: row 2"
    else:
        bad = write_export_jsonl(folder / "b.jsonl.gz", rows, "gzip")
        where = f"{bad}: line 2"
    before = snapshot(folder)

    result = cli("send", str(folder), env=env)
    as_json = cli("send", "--json", str(folder), env=env)

    assert result.exit_code == as_json.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: {where}: an events row needs distinct_id (missing or empty)\n")
    assert "reading stopped at that row" in result.stderr and "nothing after it was read" in result.stderr
    assert "events read        4 (1 invalid)" in result.stdout  # the summary all the same
    (person,) = sandbox.state.people()
    events = sandbox.state.person(person["cio_id"])["events"]
    assert [e["name"] for e in events] == ["first", "second", "third"]  # before the row: sent; after it: not read
    summary = json.loads(as_json.stdout)
    assert summary["stopped"] == f"{where}: an events row needs distinct_id (missing or empty)"
    assert (summary["read"], summary["invalid"], summary["queued"]) == (4, 1, 0)
    assert snapshot(folder) == before


@pytest.mark.parametrize(
    ("module", "kind", "package"),
    [("pyarrow.parquet", "parquet", "pyarrow"), ("zstandard", "jsonl.zst", "zstandard")],
)
def test_a_missing_extra_is_one_line_with_the_pip_hint_before_anything_is_sent(
    cli: Cli,
    env: dict[str, str],
    sandbox: SandboxServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    module: str,
    kind: str,
    package: str,
) -> None:
    folder = tmp_path / "bucket"
    write_export_jsonl(folder / "a.jsonl.gz", [row(0, "first", "ada")], "gzip")  # read first, needs nothing more
    if kind == "parquet":
        write_export_parquet(folder / "b.parquet", [row(1, "second", "ada")], "events")
    else:
        write_export_jsonl(folder / "b.jsonl.zst", [row(1, "second", "ada")], "zstd")
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed

    result = cli("send", str(folder), env=env)

    assert result.exit_code == 2
    files = "Parquet files" if kind == "parquet" else "zstd-compressed files"
    assert result.stderr == f"error: reading {files} needs the {package} package: {EXTRA_HINT}\n"
    assert result.stdout == "" and sandbox.state.stats()["requests"] == 0
    assert not Path(env["POSTHOG_CUSTOMERIO_DATA_DIR"]).exists()  # nothing stored either


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("notes.txt", "notes.txt: not a batch-export data file"),  # in the directory: refused, not skipped
        ("e.jsonl.br", "e.jsonl.br: brotli-compressed JSON Lines are not supported"),
        ("gone.parquet", "gone.parquet: no such file or directory"),
    ],
)
def test_an_input_that_is_no_export_is_one_line_and_exit_2(
    cli: Cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path, name: str, message: str
) -> None:
    folder = tmp_path / "bucket"
    write_export_jsonl(folder / "a.jsonl.gz", [row(0, "first", "ada")], "gzip")
    path = folder / name
    if name == "notes.txt":
        path.write_text("hello")
        path = folder
    elif name.endswith(".br"):
        path.write_bytes(b"\x0b\x02\x80")

    result = cli("send", str(path), env=env)

    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and message in result.stderr and result.stderr.count("\n") == 1
    assert sandbox.state.stats()["requests"] == 0


def test_ctrl_c_during_an_export_says_what_stays_queued_and_how_to_continue(
    cli: Cli, env: dict[str, str], sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_export(tmp_path / "bucket")

    def interrupted(self: Deliverer, *args: Any, **kwargs: Any) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr(Deliverer, "wait_until_empty", interrupted)
    result = cli("send", str(folder), env=env)

    assert result.exit_code == 130
    data = env["POSTHOG_CUSTOMERIO_DATA_DIR"]
    assert "operations stay queued in" in result.stderr
    assert f"  posthog-customerio send --data-dir {data} {folder}\n" in result.stderr


# ------------------------------------------------------------------------------------------------------ progress


def test_the_reading_bar_counts_files_read_and_events_stored(sandbox: SandboxServer, tmp_path: Path) -> None:
    files = export_files(write_export(tmp_path / "bucket"))
    seen: list[FileProgress] = []

    with make_runtime(sandbox, tmp_path / "data") as runtime:
        summary = send_export(runtime, files, chunk_events=1, timeout=30, on_progress=seen.append)

    bars = [reading_progress(where, len(files), files=True) for where in seen]
    shown = list(dict.fromkeys(bars))  # in order, each once (waiting for delivery repeats the last)
    assert shown == [
        (0, 3, "0/3 files, 1 events stored"),
        (0, 3, "0/3 files, 2 events stored"),
        (1, 3, "1/3 files, 3 events stored"),
        (1, 3, "1/3 files, 4 events stored"),
        (2, 3, "2/3 files, 5 events stored"),
        (3, 3, "3/3 files, 5 events stored"),  # all read: full
    ]
    assert summary.read == 6 and summary.duplicates == 1
