"""Reading PostHog batch-export files (sources/batch_exports.py): formats, manifests, persons, events.

The fixture files are written (``write_export_jsonl``, ``write_export_parquet`` in ``tests/helpers.py``) the way
PostHog's S3 exporter writes them (PostHog/posthog, ``products/batch_exports/backend/temporal/pipeline/transformer.py``:
``dump_record_batch`` writes one ``orjson.dumps`` object per line, each line gzip-compressed on its own, the JSON
columns as objects; ``ParquetStreamTransformer`` hands the record batches, JSON columns as JSON text, to
``pyarrow.parquet.ParquetWriter`` with the chosen codec; ``destinations/s3_batch_export.py``: the names
``{start}-{end}[-{n}].jsonl.gz`` / ``.parquet.zst`` and ``{start}-{end}_manifest.json`` holding
``{"files": [key, ...]}``).
"""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from posthog_customerio.sources.batch_exports import (
    EXTRA_HINT,
    BatchExportError,
    ExportedPerson,
    MissingExtra,
    export_files,
    is_export,
    read_events,
    read_persons,
    read_rows,
    require_extras,
)

from ..helpers import export_line, export_schema, write_export_jsonl, write_export_parquet

START, END = "2024-01-01T00:00:00+00:00", "2024-01-01T01:00:00+00:00"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
P1, P2, P3 = (
    "018c5f6e-0000-7000-8000-000000000001",
    "018c5f6e-0000-7000-8000-000000000002",
    "018c5f6e-0000-7000-8000-000000000003",
)

PERSONS_SCHEMA = export_schema("persons")


def person_row(
    distinct_id: str,
    person_id: str,
    *,
    version: int = 1,
    pdi_version: int = 0,
    properties: dict[str, Any] | None = None,
    inserted_minute: int = 0,
    is_deleted: bool = False,
) -> dict[str, Any]:
    """A persons-model row (``sql/persons.py``), JSON columns as objects, times as datetimes."""
    return {
        "team_id": 1,
        "distinct_id": distinct_id,
        "person_id": person_id,
        "properties": {"email": f"{distinct_id}@example.com"} if properties is None else properties,
        "person_distinct_id_version": pdi_version,
        "person_version": version,
        "created_at": T0,
        "_inserted_at": T0.replace(minute=inserted_minute),
        "is_deleted": is_deleted,
    }


def event_row(uuid: str, distinct_id: str = "user-1", **overrides: Any) -> dict[str, Any]:
    """An events-model row (``s3_default_fields``)."""
    return {
        "uuid": uuid,
        "event": "signed_up",
        "distinct_id": distinct_id,
        "person_id": P1,
        "properties": {"plan": "pro", "$set": {"name": "Ada"}},
        "person_properties": {"email": "ada@example.com"},
        "elements_chain": "",
        "timestamp": T0,
        "created_at": T0,
        "_inserted_at": T0,
        **overrides,
    }


WRITERS: dict[str, tuple[str, Callable[[Path, list[dict[str, Any]]], Path]]] = {
    "jsonl": (".jsonl", lambda path, rows: write_export_jsonl(path, rows)),
    "jsonl-gzip": (".jsonl.gz", lambda path, rows: write_export_jsonl(path, rows, "gzip")),
    "jsonl-zstd": (".jsonl.zst", lambda path, rows: write_export_jsonl(path, rows, "zstd")),
    "parquet": (".parquet", lambda path, rows: write_export_parquet(path, rows)),
    "parquet-zstd": (".parquet.zst", lambda path, rows: write_export_parquet(path, rows, compression="zstd")),
    "parquet-gzip": (".parquet.gz", lambda path, rows: write_export_parquet(path, rows, compression="gzip")),
    "parquet-snappy": (".parquet.sz", lambda path, rows: write_export_parquet(path, rows, compression="snappy")),
}


def write(tmp_path: Path, kind: str, rows: list[dict[str, Any]], name: str = f"{START}-{END}") -> Path:
    suffix, writer = WRITERS[kind]
    return writer(tmp_path / f"{name}{suffix}", rows)


# --------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("kind", list(WRITERS))
def test_every_format_and_compression_reads_the_same_rows(tmp_path: Path, kind: str) -> None:
    rows = [person_row("ada", P1, properties={"email": "ada@example.com", "plan": {"tier": 2}}), person_row("bob", P2)]
    path = write(tmp_path, kind, rows)

    read = list(read_rows(path))

    assert [row["distinct_id"] for row in read] == ["ada", "bob"]
    assert read[0]["properties"] == {"email": "ada@example.com", "plan": {"tier": 2}}  # an object, not JSON text
    assert read[0]["person_version"] == 1 and read[0]["is_deleted"] is False
    inserted = read[0]["_inserted_at"]
    assert (inserted if isinstance(inserted, datetime) else datetime.fromisoformat(inserted)) == T0
    persons = read_persons(path)
    assert [(p.person_id, p.distinct_ids) for p in persons] == [(P1, ("ada",)), (P2, ("bob",))]
    assert persons[0].created_at == T0


def test_json_string_properties_in_json_lines_are_decoded(tmp_path: Path) -> None:
    """ClickHouse-style JSON Lines carry the JSON columns as text; read as objects all the same."""
    row = {**person_row("ada", P1), "properties": json.dumps({"email": "ada@example.com"}), "_inserted_at": START}
    path = tmp_path / "persons.jsonl"
    path.write_text(json.dumps(row, default=str) + "\n\n")  # a blank line is passed over

    assert next(read_rows(path))["properties"] == {"email": "ada@example.com"}
    assert read_persons(path)[0].properties == {"email": "ada@example.com"}


def test_an_empty_properties_string_is_no_properties(tmp_path: Path) -> None:
    path = write_export_jsonl(tmp_path / "p.jsonl", [{**person_row("ada", P1), "properties": ""}])

    assert read_persons(path)[0].properties == {}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("data.csv", "not a batch-export data file"),
        ("data.json", "not a batch-export data file"),
        ("data.jsonl.br", "brotli-compressed JSON Lines are not supported"),
    ],
)
def test_unknown_names_are_refused(tmp_path: Path, name: str, message: str) -> None:
    path = tmp_path / name
    path.write_text("{}\n")

    with pytest.raises(BatchExportError, match=message) as raised:
        export_files(path)
    assert name in str(raised.value)


@pytest.mark.parametrize(
    ("name", "export"),
    [
        ("e.parquet", True),
        ("E.PARQUET.ZST", True),
        ("e.parquet.sz", True),
        ("e.jsonl.gz", True),
        ("e.jsonl.zst", True),
        ("e.jsonl.br", True),  # refused by the export reader, with its reason
        ("x_manifest.json", True),
        ("manifest.json", True),
        ("e.jsonl", False),  # any JSON Lines file: read as one
        ("e.json", False),
        ("e.txt", False),
    ],
)
def test_which_paths_are_exports(tmp_path: Path, name: str, export: bool) -> None:
    assert is_export(tmp_path / name) is export  # by the name: the file need not exist
    assert is_export(tmp_path)  # a directory


def test_a_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(BatchExportError, match="no such file"):
        export_files(tmp_path / "nope.jsonl")


def test_a_parquet_name_on_another_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    path.write_bytes(gzip.compress(b"not parquet"))

    with pytest.raises(BatchExportError, match=r"x\.parquet: not a Parquet file"):
        list(read_rows(path))


def test_a_broken_archive_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl.gz"
    path.write_bytes(gzip.compress(export_line(person_row("ada", P1)))[:-12])

    with pytest.raises(BatchExportError, match=r"x\.jsonl\.gz: line 1: cannot read the file"):
        list(read_rows(path))


# ---------------------------------------------------------------------------------- manifest, directory


def test_a_manifest_lists_whole_s3_keys_found_below_the_synced_bucket(tmp_path: Path) -> None:
    """``upload_manifest_file`` writes the keys with the prefix; a sync of the bucket puts the manifest beside them."""
    prefix = tmp_path / "bucket" / "posthog" / "persons"
    first = write(prefix, "jsonl-gzip", [person_row("ada", P1)], name=f"{START}-{END}-0")
    second = write(prefix, "jsonl-gzip", [person_row("bob", P2)], name=f"{START}-{END}-1")
    write(prefix, "jsonl-gzip", [person_row("eve", P3)], name="not-listed")
    manifest = prefix / f"{START}-{END}_manifest.json"
    manifest.write_text(json.dumps({"files": [f"posthog/persons/{p.name}" for p in (first, second)]}))

    assert export_files(manifest) == [first, second]
    assert [p.distinct_ids for p in read_persons(manifest)] == [("ada",), ("bob",)]


def test_a_manifest_of_bare_names_and_a_missing_file(tmp_path: Path) -> None:
    data = write(tmp_path, "parquet", [person_row("ada", P1)])
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"files": [data.name]}))
    assert export_files(manifest) == [data]

    manifest.write_text(json.dumps({"files": [data.name, "gone.jsonl"]}))
    with pytest.raises(BatchExportError, match=r"manifest\.json: the listed file 'gone\.jsonl'"):
        export_files(manifest)


@pytest.mark.parametrize(
    "content", ['{"files": "a.jsonl"}', '["a.jsonl"]', '{"files": ["../../etc/passwd.jsonl"]}', "{not json"]
)
def test_a_bad_manifest_is_refused(tmp_path: Path, content: str) -> None:
    manifest = tmp_path / "x_manifest.json"
    manifest.write_text(content)

    with pytest.raises(BatchExportError, match=r"x_manifest\.json"):
        export_files(manifest)


def test_a_directory_is_read_recursively_in_name_order_numbers_as_numbers(tmp_path: Path) -> None:
    files = [
        write(tmp_path / "2024" / "01", "jsonl", [person_row(f"u{n}", P1)], name=f"{START}-{END}-{n}")
        for n in (10, 2, 0)
    ]
    later = write(tmp_path / "2024" / "02", "parquet", [person_row("later", P2)])
    (tmp_path / "2024" / "01" / f"{START}-{END}_manifest.json").write_text('{"files": []}')  # passed over
    (tmp_path / ".DS_Store").write_text("")  # hidden: passed over

    assert export_files(tmp_path) == [files[2], files[1], files[0], later]


def test_an_unknown_file_in_a_directory_is_refused_not_skipped(tmp_path: Path) -> None:
    write(tmp_path, "jsonl", [person_row("ada", P1)])
    (tmp_path / "notes.txt").write_text("hello")

    with pytest.raises(BatchExportError, match=r"notes\.txt: not a batch-export data file"):
        export_files(tmp_path)


# ------------------------------------------------------------------------------------------------ persons


def test_a_newer_person_version_supersedes_across_files(tmp_path: Path) -> None:
    write(tmp_path, "jsonl", [person_row("ada", P1, version=3, properties={"plan": "pro"})], name="b-newer")
    write(
        tmp_path,
        "parquet",
        [person_row("ada", P1, version=2, properties={"plan": "free"}, inserted_minute=30)],
        name="a-older",
    )
    write(
        tmp_path, "jsonl-gzip", [person_row("ada-phone", P1, version=1, properties={"plan": "trial"})], name="c-oldest"
    )

    (person,) = read_persons(tmp_path)

    assert person == ExportedPerson(P1, ("ada", "ada-phone"), {"plan": "pro"}, T0, False, 3, inserted_at=T0)


def test_an_is_identified_column_is_read_when_the_export_has_one(tmp_path: Path) -> None:
    rows = [{**person_row("ada", P1), "is_identified": 1}, person_row("bob", P2)]
    write(tmp_path, "jsonl", rows)

    ada, bob = read_persons(tmp_path)

    assert (ada.is_identified, bob.is_identified) == (True, None)


def test_inserted_at_breaks_a_version_tie(tmp_path: Path) -> None:
    rows = [
        person_row("ada", P1, version=2, properties={"plan": "late"}, inserted_minute=50),
        person_row("ada", P1, version=2, properties={"plan": "early"}, inserted_minute=10),
    ]

    assert read_persons(write(tmp_path, "jsonl", rows))[0].properties == {"plan": "late"}


def test_a_distinct_id_moved_to_another_person_belongs_to_that_one_only(tmp_path: Path) -> None:
    write(
        tmp_path,
        "parquet-zstd",
        [
            person_row("ada", P1, pdi_version=0),
            person_row("ada-laptop", P1, pdi_version=0),
            person_row("bob", P2, pdi_version=0),
            person_row("only-p3", P3, pdi_version=0),
        ],
        name="1",
    )
    # a later run: ada-laptop was merged into P2 (its distinct-id version went up), as did only-p3
    write(
        tmp_path,
        "jsonl-zstd",
        [
            person_row("ada-laptop", P2, version=2, pdi_version=1, properties={"name": "Bob"}),
            person_row("only-p3", P2, version=2, pdi_version=1, properties={"name": "Bob"}),
        ],
        name="2",
    )

    persons = {p.person_id: p for p in read_persons(tmp_path)}

    assert persons[P1].distinct_ids == ("ada",)
    assert persons[P2].distinct_ids == ("ada-laptop", "bob", "only-p3")
    assert persons[P2].properties == {"name": "Bob"} and persons[P2].person_version == 2
    assert P3 not in persons  # no distinct_id points at it any more


def test_a_person_whose_newest_row_is_deleted_is_deleted(tmp_path: Path) -> None:
    write(tmp_path, "jsonl", [person_row("ada", P1, version=1), person_row("bob", P2, version=4)], name="1")
    write(tmp_path, "parquet", [person_row("ada", P1, version=2, is_deleted=True, properties={})], name="2")
    write(tmp_path, "jsonl", [person_row("bob", P2, version=3, is_deleted=True)], name="3")  # an older version: stale

    persons = {p.person_id: p for p in read_persons(tmp_path)}

    assert persons[P1].is_deleted and persons[P1].distinct_ids == ("ada",) and persons[P1].person_version == 2
    assert not persons[P2].is_deleted and persons[P2].person_version == 4


def test_several_paths_are_read_as_one_export(tmp_path: Path) -> None:
    first = write(tmp_path / "a", "jsonl", [person_row("ada", P1, version=1, properties={"v": 1})])
    second = write(tmp_path / "b", "jsonl", [person_row("ada", P1, version=2, properties={"v": 2})])

    assert read_persons([second, first])[0].properties == {"v": 2}


def test_clickhouse_style_quoted_integers_and_int_flags(tmp_path: Path) -> None:
    row = {**person_row("ada", P1), "person_version": "7", "person_distinct_id_version": "0", "is_deleted": 1}
    path = write_export_jsonl(tmp_path / "p.jsonl", [row])

    (person,) = read_persons(path)
    assert person.person_version == 7 and person.is_deleted


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"person_version": None}, "needs person_version"),
        ({"distinct_id": None, "person_id": None}, "needs distinct_id, person_id"),
        ({"person_version": "v2"}, "person_version must be an integer"),
        ({"person_version": True}, "person_version must be an integer"),
        ({"is_deleted": "yes"}, "is_deleted must be true or false"),
        ({"properties": ["a"]}, "properties must be a JSON object"),
        ({"properties": "{not json"}, "properties is a string but not valid JSON"),
        ({"distinct_id": "  "}, "distinct_id is empty"),
        ({"person_id": 12}, "person_id must be a non-empty string"),
        ({"_inserted_at": "yesterday"}, "_inserted_at must be an ISO 8601 time"),
    ],
)
def test_a_malformed_person_row_names_file_and_line(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    path = write_export_jsonl(tmp_path / "persons.jsonl", [person_row("ada", P1), {**person_row("bob", P2), **change}])

    with pytest.raises(BatchExportError, match=message) as raised:
        read_persons(path)
    assert str(raised.value).startswith(f"{path}: line 2: ")


def test_rows_of_two_projects_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "jsonl", [person_row("ada", P1)], name="a")
    write(tmp_path, "parquet", [person_row("bob", P2), {**person_row("eve", P3), "team_id": 2}], name="b")

    with pytest.raises(BatchExportError, match=r"b\.parquet: row 2: team_id int 2 differs from") as raised:
        read_persons(tmp_path)
    assert "from team_id int 1 (" in str(raised.value) and "a.jsonl: line 1)" in str(raised.value)


def test_a_missing_column_in_parquet_names_file_and_row(tmp_path: Path) -> None:
    schema = pa.schema([field for field in PERSONS_SCHEMA if field.name != "person_distinct_id_version"])
    path = write_export_parquet(tmp_path / "p.parquet", [person_row("ada", P1), person_row("bob", P2)], schema)

    with pytest.raises(BatchExportError, match=r"p\.parquet: row 1: a persons row needs person_distinct_id_version"):
        read_persons(path)


@pytest.mark.parametrize(
    ("text", "message"), [("{nope\n", "invalid JSON"), ("[1, 2]\n", "a row must be a JSON object")]
)
def test_a_bad_line_names_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(export_line(person_row("ada", P1)) + b"\n" + text.encode())

    with pytest.raises(BatchExportError, match=rf"p\.jsonl: line 3: {message}"):
        list(read_rows(path))


# ------------------------------------------------------------------------------------------------- events

U1, U2, U3 = (
    "018c5f6e-1111-7000-8000-000000000001",
    "018c5f6e-1111-7000-8000-000000000002",
    "018c5f6e-1111-7000-8000-000000000003",
)


@pytest.mark.parametrize("kind", ["jsonl-gzip", "parquet-zstd"])
def test_events_become_typed_events(tmp_path: Path, kind: str) -> None:
    if kind.startswith("parquet"):
        path = write_export_parquet(tmp_path / "e.parquet.zst", [event_row(U1)], "events", compression="zstd")
    else:
        path = write(tmp_path, kind, [event_row(U1)])

    (event,) = read_events(path)

    assert (event.uuid, event.event, event.distinct_id, event.timestamp) == (U1, "signed_up", "user-1", T0)
    assert event.properties["plan"] == "pro"
    assert event.set == {"name": "Ada"}  # from properties.$set, as every other source
    assert event.person_properties == {"email": "ada@example.com"}  # as the webhook's person.properties: not $set


def test_events_duplicated_by_a_backfill_are_read_once(tmp_path: Path) -> None:
    write(tmp_path, "jsonl", [event_row(U1), event_row(U2), event_row(U1)], name="run")
    write_export_parquet(tmp_path / "backfill.parquet", [event_row(U2.upper()), event_row(U3)], "events")
    duplicates: list[str] = []

    events = list(read_events(tmp_path, on_duplicate=duplicates.append))

    assert [event.uuid for event in events] == [U2.upper(), U3, U1]  # "backfill" sorts first
    assert duplicates == [f"{tmp_path / 'run.jsonl'}: line 2", f"{tmp_path / 'run.jsonl'}: line 3"]


def test_an_event_row_without_uuid_or_a_bad_one_names_file_and_line(tmp_path: Path) -> None:
    path = write_export_jsonl(tmp_path / "e.jsonl", [event_row(U1), {**event_row(U2), "uuid": None}])
    with pytest.raises(BatchExportError, match=r"e\.jsonl: line 2: an events row needs uuid"):
        list(read_events(path))

    path = write_export_jsonl(tmp_path / "f.jsonl", [{**event_row(U1), "timestamp": "soon"}])
    with pytest.raises(BatchExportError, match=r"f\.jsonl: line 1: timestamp is not ISO 8601"):
        list(read_events(path))


# ------------------------------------------------------------------------------------------ bounded reading


def test_a_large_parquet_file_is_read_a_batch_at_a_time(tmp_path: Path) -> None:
    """Many row groups: the Arrow memory in use while reading stays a small part of the whole table's."""
    rows = [person_row(f"user-{n}", P1, properties={"bio": "x" * 500, "n": n}) for n in range(20_000)]
    path = write_export_parquet(tmp_path / "big.parquet.zst", rows, compression="zstd", row_group_size=500)
    whole = pq.read_table(path).nbytes
    assert pq.ParquetFile(path).num_row_groups == 40
    del rows

    baseline, peak, count = pa.total_allocated_bytes(), 0, 0
    for row in read_rows(path):
        count += 1
        peak = max(peak, pa.total_allocated_bytes() - baseline)
        assert row["properties"]["n"] == count - 1

    assert count == 20_000
    assert peak < whole / 4, (peak, whole)  # about a tenth here: a batch of rows and the row groups it spans


# --------------------------------------------------------------------------------------------- the extra


def test_a_missing_extra_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parquet = write(tmp_path, "parquet", [person_row("ada", P1)])
    zst = write(tmp_path, "jsonl-zstd", [person_row("ada", P1)])
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    monkeypatch.setitem(sys.modules, "zstandard", None)

    with pytest.raises(MissingExtra, match="needs the pyarrow package") as raised:
        list(read_rows(parquet))
    assert EXTRA_HINT in str(raised.value)
    with pytest.raises(MissingExtra, match="needs the zstandard package"):
        list(read_rows(zst))
    assert list(read_rows(write(tmp_path, "jsonl-gzip", [person_row("ada", P1)])))  # gzip needs nothing more


def test_require_extras_names_the_missing_module_before_any_file_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gz = write(tmp_path, "jsonl-gzip", [person_row("ada", P1)])
    parquet = write(tmp_path, "parquet", [person_row("ada", P1)])
    zst = write(tmp_path, "jsonl-zstd", [person_row("ada", P1)])
    require_extras([gz, parquet, zst])  # all installed: nothing to say
    monkeypatch.setitem(sys.modules, "zstandard", None)

    require_extras([gz, parquet])
    with pytest.raises(MissingExtra, match="needs the zstandard package") as raised:
        require_extras([gz, parquet, zst])
    assert EXTRA_HINT in str(raised.value)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(MissingExtra, match="needs the pyarrow package"):
        require_extras([gz, parquet])


class _PostHogJsonType(pa.ExtensionType):
    """The shape of PostHog's ``JsonType`` (``products/batch_exports/backend/temporal/utils.py``): JSON text stored as
    an Arrow string under the extension name ``json``. Never registered here, as in a reader's process."""

    def __init__(self) -> None:
        super().__init__(pa.string(), "json")

    def __arrow_ext_serialize__(self) -> bytes:
        return b""

    @classmethod
    def __arrow_ext_deserialize__(cls, storage_type: pa.DataType, serialized: bytes) -> _PostHogJsonType:
        return cls()


def test_parquet_json_columns_of_posthogs_extension_type_are_read_as_json(tmp_path: Path) -> None:
    """``cast_record_batch_json_columns`` casts the JSON columns before the Parquet writer: stored as strings."""
    table = pq.read_table(write_export_parquet(tmp_path / "plain.parquet", [person_row("ada", P1)]))
    index = table.schema.get_field_index("properties")
    json_column = pa.ExtensionArray.from_storage(_PostHogJsonType(), table.column(index).combine_chunks())
    table = table.set_column(index, pa.field("properties", _PostHogJsonType()), json_column)
    path = tmp_path / "ext.parquet.zst"
    pq.write_table(table, path, compression="zstd")

    assert next(read_rows(path))["properties"] == {"email": "ada@example.com"}
