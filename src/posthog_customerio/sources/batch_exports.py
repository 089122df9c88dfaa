"""Read the files a PostHog batch export writes (S3 destination): persons and events, typed.

Groundwork for reading a downloaded export (``aws s3 sync`` of the bucket, or single files) instead of
asking PostHog's API. What PostHog writes, from its source (PostHog/posthog, read for this module):

* **File names** — ``products/batch_exports/backend/temporal/destinations/s3_batch_export.py``
  (``get_s3_key``, ``FILE_FORMAT_EXTENSIONS``, ``COMPRESSION_EXTENSIONS``): ``{prefix}/{interval start}-{interval
  end}[-{file number}].{jsonl|parquet}[.{gz|zst|br|sz|lz4}]``; the file number only when a maximum file size is
  set. JSON Lines may be compressed with gzip or brotli (``SUPPORTED_COMPRESSIONS``); Parquet with zstd, lz4,
  snappy, gzip or brotli, *inside* the Parquet file (``ParquetStreamTransformer`` in
  ``products/batch_exports/backend/temporal/pipeline/transformer.py`` hands the codec to pyarrow's writer), yet
  the name still gets the codec's extension (``.parquet.zst``). We also read ``.jsonl.zst`` (zstd-compressed JSON
  Lines), which people produce when they recompress an export.
* **Manifest** — the same file (``get_manifest_key``, ``upload_manifest_file``): with a maximum file size,
  ``{prefix}/{start}-{end}_manifest.json`` holding ``{"files": [key, ...]}``; the keys are whole S3 keys (with the
  prefix), so a key is looked up below the manifest's folder and its parents (the bucket root of a sync), then by
  its name beside the manifest.
* **JSON Lines** — ``dump_record_batch`` / ``dump_dict`` in ``pipeline/transformer.py``: one ``orjson.dumps(row,
  default=str)`` object per line, each line gzip-compressed on its own (a multi-member gzip stream); the
  ``properties``, ``person_properties``, ``set`` and ``set_once`` columns are cast to a JSON type first
  (``cast_record_batch_json_columns``, ``JsonType`` in ``products/batch_exports/backend/temporal/utils.py``), so
  they are JSON *objects* in a line; timestamps are ISO 8601 strings.
* **Parquet** — the same record batches through ``pyarrow.parquet.ParquetWriter`` (``ParquetStreamTransformer``;
  earlier ``ParquetBatchExportWriter`` in ``products/batch_exports/backend/temporal/temporary_file.py``): the JSON
  columns keep their *string* storage (JSON text, under the extension name ``json``), timestamps are Arrow
  timestamps, versions 64-bit integers, ``is_deleted`` a bool.
* **Persons model** — ``products/batch_exports/backend/temporal/sql/persons.py`` (``SELECT_FROM_PERSONS``,
  ``SELECT_FROM_PERSONS_BACKFILL``): one row per distinct_id with ``team_id``, ``distinct_id``, ``person_id``
  (``toString`` of the UUID), ``properties``, ``person_distinct_id_version``, ``person_version``, ``created_at``,
  ``_inserted_at`` and ``is_deleted`` (``toBool``); each export run holds the latest version of what changed in its
  interval, so across runs (and backfills, which are not deduplicated) a later version supersedes.
* **Events model** — ``s3_default_fields`` in ``s3_batch_export.py`` over ``default_fields`` of
  ``products/batch_exports/backend/temporal/batch_exports.py``: ``uuid``, ``timestamp``, ``_inserted_at``,
  ``created_at``, ``event``, ``properties``, ``distinct_id``, ``elements_chain``, ``person_properties``,
  ``person_id`` (no ``team_id``, ``set``, ``set_once`` by default).

Public API: :func:`is_export`, :func:`export_files`, :func:`require_extras`, :func:`read_rows`, :func:`read_persons`
(:class:`ExportedPerson`), :func:`read_events`; every problem with the input is a :class:`BatchExportError` naming
the file (and the line or row). Parquet needs ``pyarrow`` and zstd needs ``zstandard``: the ``exports`` extra
(``pip install 'posthog-customerio[exports]'``), imported only when such a file is read (:func:`require_extras`
checks ahead).
"""

from __future__ import annotations

import gzip
import io
import json
import re
import uuid as uuid_module
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from ..events import PostHogEvent, as_aware, parse_iso
from .json_strict import loads_strict
from .parsing import EventParseError, _distinct_id, parse_event

__all__ = [
    "EXTRA_HINT",
    "JSON_COLUMNS",
    "PARQUET_BATCH_ROWS",
    "BatchExportError",
    "ExportFile",
    "ExportedPerson",
    "MissingExtra",
    "classify",
    "export_files",
    "is_export",
    "read_events",
    "read_persons",
    "read_rows",
    "require_extras",
]

#: how to install what Parquet and zstd files need
EXTRA_HINT = "pip install 'posthog-customerio[exports]'"

#: columns PostHog writes as JSON (objects in JSON Lines, JSON text in Parquet): ``cast_record_batch_json_columns``
JSON_COLUMNS = ("properties", "person_properties", "set", "set_once")

#: rows read from Parquet at a time (a row group is read in batches of this many rows)
PARQUET_BATCH_ROWS = 1024


class BatchExportError(ValueError):
    """A batch-export file, manifest or row that cannot be read; the message names the file (and line or row)."""


class MissingExtra(ImportError):
    """A module of the ``exports`` extra is not installed."""


@dataclass(frozen=True, slots=True)
class ExportFile:
    """A data file of an export: its ``format`` (``"jsonl"`` or ``"parquet"``) and, for JSON Lines, the
    ``compression`` of the whole file (``"gzip"``, ``"zstd"`` or ``None``; a Parquet file compresses inside)."""

    path: Path
    format: str
    compression: str | None = None


# ----------------------------------------------------------------------------------------------- finding files

#: the name's ending -> (format, compression of the whole file)
_JSONL_ENDINGS = {".jsonl": None, ".jsonl.gz": "gzip", ".jsonl.zst": "zstd"}
#: Parquet with the codec's extension PostHog appends although the codec is internal (``COMPRESSION_EXTENSIONS``)
_PARQUET_ENDINGS = (".parquet", ".parquet.gz", ".parquet.zst", ".parquet.sz", ".parquet.br", ".parquet.lz4")
_KNOWN = ", ".join([*_JSONL_ENDINGS, *_PARQUET_ENDINGS])


def classify(path: Path) -> ExportFile:
    """The format and compression of a data file, from its name; :class:`BatchExportError` for any other name."""
    name = path.name.lower()
    for ending, compression in _JSONL_ENDINGS.items():
        if name.endswith(ending):
            return ExportFile(path, "jsonl", compression)
    if name.endswith(_PARQUET_ENDINGS):
        return ExportFile(path, "parquet")
    if name.endswith(".jsonl.br"):
        raise BatchExportError(
            f"{path}: brotli-compressed JSON Lines are not supported; decompress it first (brotli -d) or choose gzip"
            " or no compression for the export"
        )
    raise BatchExportError(f"{path}: not a batch-export data file (expected a name ending in {_KNOWN})")


#: names only an export's data files have (a plain ``.jsonl`` is any JSON Lines file); ``.jsonl.br`` to refuse it
_EXPORT_ONLY_ENDINGS = (*(end for end, packed in _JSONL_ENDINGS.items() if packed), ".jsonl.br", *_PARQUET_ENDINGS)


def is_export(path: Path) -> bool:
    """Whether ``path`` is read as a batch export (by ``send``): a directory, a manifest, or a file whose name
    only an export's data files have (compressed JSON Lines, Parquet). A plain ``.jsonl`` or ``.json`` is not."""
    return path.is_dir() or _is_manifest(path) or path.name.lower().endswith(_EXPORT_ONLY_ENDINGS)


def _is_manifest(path: Path) -> bool:
    """``manifest.json`` or PostHog's ``{start}-{end}_manifest.json``."""
    name = path.name.lower()
    return name == "manifest.json" or name.endswith("_manifest.json")


_DIGITS = re.compile(r"(\d+)")


def _natural(path: Path) -> tuple[tuple[int, int | str], ...]:
    """A sort key by name with numbers compared as numbers (``…-2.jsonl`` before ``…-10.jsonl``)."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(path.as_posix()) if part)


def export_files(path: str | Path) -> list[Path]:
    """The data files of an export at ``path``, in reading order.

    ``path`` is a data file (returned as is, once its name is checked), a manifest (``manifest.json`` or
    ``…_manifest.json``: the files it lists, in its order) or a directory (its data files, recursively, sorted by
    path with numbers compared as numbers; hidden files and manifests are passed over). A name that is no data file
    of an export is refused (:class:`BatchExportError`), so nothing in a directory is silently left out.
    """
    return [found.path for found in _export_files(Path(path))]


def _export_files(path: Path) -> list[ExportFile]:
    if path.is_dir():
        found = [
            file
            for file in path.rglob("*")
            if file.is_file()
            and not any(part.startswith(".") for part in file.relative_to(path).parts)
            and not _is_manifest(file)
        ]
        return [classify(file) for file in sorted(found, key=lambda file: _natural(file.relative_to(path)))]
    if not path.exists():
        raise BatchExportError(f"{path}: no such file or directory")
    if _is_manifest(path):
        return [classify(file) for file in _manifest_files(path)]
    return [classify(path)]


def _manifest_files(manifest: Path) -> list[Path]:
    """The files a manifest lists: ``{"files": [key, ...]}`` (``upload_manifest_file`` in ``s3_batch_export.py``)."""
    try:
        content = loads_strict(manifest.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        raise BatchExportError(f"{manifest}: not a readable manifest: {exc}") from None
    keys = content.get("files") if isinstance(content, dict) else None
    if not isinstance(keys, list) or not all(isinstance(key, str) and key.strip() for key in keys):
        raise BatchExportError(f'{manifest}: a manifest is {{"files": ["<key>", ...]}} (a list of file names)')
    return [_resolve_key(manifest, key) for key in keys]


def _resolve_key(manifest: Path, key: str) -> Path:
    parts = [part for part in key.split("/") if part]
    if not parts or ".." in parts:
        raise BatchExportError(f"{manifest}: refusing the listed file {key!r} (empty, or it climbs out with '..')")
    folder = manifest.parent
    candidates = [*(base.joinpath(*parts) for base in (folder, *folder.parents)), folder / parts[-1]]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise BatchExportError(f"{manifest}: the listed file {key!r} is neither below {folder} nor beside the manifest")


# ------------------------------------------------------------------------------------------------- reading rows


def require_extras(files: Iterable[Path]) -> None:
    """Raise :class:`MissingExtra` now, before anything is read, when a file needs a package not installed."""
    for file in map(classify, files):
        if file.format == "parquet":
            _parquet()
        elif file.compression == "zstd":
            _zstandard()


def _zstandard() -> Any:
    try:
        import zstandard
    except ImportError:
        raise MissingExtra(f"reading zstd-compressed files needs the zstandard package: {EXTRA_HINT}") from None
    return zstandard


def _parquet() -> Any:
    try:
        import pyarrow.parquet
    except ImportError:
        raise MissingExtra(f"reading Parquet files needs the pyarrow package: {EXTRA_HINT}") from None
    return pyarrow.parquet


def read_rows(file: str | Path) -> Iterator[dict[str, Any]]:
    """The rows of one data file, one at a time, with the JSON columns decoded (:data:`JSON_COLUMNS`).

    JSON Lines (plain, gzip or zstd) are read line by line, Parquet a batch of :data:`PARQUET_BATCH_ROWS` rows at a
    time (never the whole file). A JSON column that holds JSON text (Parquet, or ClickHouse-style JSON Lines) is
    decoded to its value; ``""`` and ``null`` become ``None``. Timestamps are left as they are (an ISO string in JSON
    Lines, an aware ``datetime`` in Parquet). A line or value that cannot be decoded raises :class:`BatchExportError`
    naming the file and the line (or row).
    """
    for _, row in _located_rows(classify(Path(file))):
        yield row


def _located_rows(file: ExportFile) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, row)`` pairs: where is ``"<file>: line N"`` or ``"<file>: row N"``."""
    if file.format == "parquet":
        yield from _parquet_rows(file.path)
    else:
        yield from _jsonl_rows(file)


def _open_text(file: ExportFile) -> IO[str]:
    """The file as text, decompressed as it is read (closing it closes the file underneath)."""
    if file.compression == "gzip":  # reads every member: PostHog gzips each line on its own
        return gzip.open(file.path, "rt", encoding="utf-8")
    if file.compression == "zstd":
        zstandard = _zstandard()
        handle = file.path.open("rb")
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(handle, read_across_frames=True, closefd=True)
        except BaseException:
            handle.close()
            raise
        return io.TextIOWrapper(reader, encoding="utf-8")
    return file.path.open(encoding="utf-8")


def _jsonl_rows(file: ExportFile) -> Iterator[tuple[str, dict[str, Any]]]:
    with _open_text(file) as text:
        number = 0
        while True:
            where = f"{file.path}: line {number + 1}"
            try:
                line = text.readline()
            except Exception as exc:  # a broken archive (OSError, EOFError, zstandard.ZstdError), or not UTF-8
                raise BatchExportError(f"{where}: cannot read the file: {_reason(exc)}") from None
            if not line:
                return
            number += 1
            if not line.strip():
                continue
            try:
                row = loads_strict(line)
            except json.JSONDecodeError as exc:
                raise BatchExportError(f"{where}: invalid JSON: {exc.msg} (column {exc.colno})") from None
            except (ValueError, RecursionError) as exc:
                raise BatchExportError(f"{where}: invalid JSON: {exc}") from None
            if not isinstance(row, dict):
                raise BatchExportError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
            yield where, _decode_json_columns(row, where)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    parquet = _parquet()
    with path.open("rb") as handle:
        if handle.read(4) != b"PAR1":
            raise BatchExportError(f"{path}: not a Parquet file (it does not start with PAR1)")
        handle.seek(0)
        try:
            reader = parquet.ParquetFile(handle)
        except Exception as exc:  # pyarrow.ArrowInvalid and friends
            raise BatchExportError(f"{path}: cannot read the Parquet file: {_reason(exc)}") from None
        maps = {field.name for field in reader.schema_arrow if _is_map(field.type)}
        number = 0
        batches = reader.iter_batches(batch_size=PARQUET_BATCH_ROWS)
        while True:
            try:
                batch = next(batches, None)
            except Exception as exc:
                raise BatchExportError(
                    f"{path}: row {number + 1}: cannot read the Parquet file: {_reason(exc)}"
                ) from None
            if batch is None:
                return
            for row in batch.to_pylist():
                number += 1
                where = f"{path}: row {number}"
                for name in maps & row.keys():
                    if isinstance(row[name], list):  # an Arrow map comes as [(key, value), ...]
                        row[name] = dict(row[name])
                yield where, _decode_json_columns(row, where)


def _is_map(arrow_type: Any) -> bool:
    import pyarrow

    return bool(pyarrow.types.is_map(arrow_type))


def _decode_json_columns(row: dict[str, Any], where: str) -> dict[str, Any]:
    """``row`` with its JSON columns holding JSON text decoded (the repo's strict ``loads_strict``)."""
    for name in JSON_COLUMNS:
        value = row.get(name)
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise BatchExportError(f"{where}: {name} is not UTF-8 text") from None
        if isinstance(value, str):
            if not value.strip():
                row[name] = None
                continue
            try:
                row[name] = loads_strict(value)
            except (ValueError, RecursionError) as exc:
                raise BatchExportError(f"{where}: {name} is a string but not valid JSON: {exc}") from None
    return row


def _rows(paths: str | Path | Iterable[str | Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every row of every file of ``paths`` (each as :func:`export_files` takes it), with where it was read."""
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        for file in _export_files(Path(path)):
            yield from _located_rows(file)


# ------------------------------------------------------------------------------------------------------ persons


@dataclass(frozen=True, slots=True)
class ExportedPerson:
    """One person of a persons export, collapsed over its rows (:func:`read_persons`)."""

    #: PostHog's person UUID, as exported (``toString`` of it)
    person_id: str
    #: the distinct_ids whose newest row points at this person, sorted
    distinct_ids: tuple[str, ...]
    #: the properties of the person's newest version
    properties: dict[str, Any]
    #: when PostHog created the person (``None`` when the export leaves it out)
    created_at: datetime | None
    #: the person's newest version is deleted
    is_deleted: bool
    #: the person's newest version
    person_version: int
    #: ``_inserted_at`` of that version: when these values were PostHog's (``None`` when not exported)
    inserted_at: datetime | None = None
    #: ``is_identified`` when the export has that column (PostHog's persons model does not: ``None``)
    is_identified: bool | None = None


_PERSON_REQUIRED = ("distinct_id", "person_id", "person_distinct_id_version", "person_version")
_OLDEST = datetime.min.replace(tzinfo=UTC)


@dataclass(slots=True)
class _Version:
    """The newest row seen of one person: what :class:`ExportedPerson` takes from it."""

    key: tuple[int, datetime]
    properties: dict[str, Any]
    created_at: datetime | None
    is_deleted: bool
    is_identified: bool | None = None


def read_persons(paths: str | Path | Iterable[str | Path]) -> list[ExportedPerson]:
    """The persons of a persons-model export, collapsed: one :class:`ExportedPerson` per person, sorted by id.

    ``paths``: one path or several, each a file, a manifest or a directory (:func:`export_files`), all of one
    project (rows of two ``team_id`` values are refused: distinct_ids are per project). Every row is
    checked (``distinct_id``, ``person_id``, ``person_distinct_id_version`` and ``person_version`` present and of
    their types; ``properties`` an object or null; ``is_deleted`` a bool or 0/1; times ISO 8601 or timestamps): the
    first bad row raises :class:`BatchExportError` naming the file and the line or row.

    Collapsing, as PostHog's own export query does within a run (``sql/persons.py``): per distinct_id the row with
    the highest (``person_distinct_id_version``, ``person_version``, ``_inserted_at``) wins (on a full tie, the row
    read last), so a distinct_id that moved to another person belongs to that one only. A person's properties,
    ``created_at``, ``is_deleted`` and ``person_version`` come from its row with the highest (``person_version``,
    ``_inserted_at``), whichever distinct_id it was exported with. A person that no distinct_id points at any more
    (all moved away: merged into another) is left out: nothing could address it.

    Memory: the rows are streamed; what is kept is one small entry per distinct_id (its winning versions and person)
    and one per person (its newest properties), the size of the result, never the rows themselves. A list rather
    than an iterator: no person is final before the last row is read.
    """
    owners: dict[str, tuple[tuple[int, int, datetime], str]] = {}
    newest: dict[str, _Version] = {}
    team: tuple[Any, str] | None = None
    for where, row in _rows(paths):
        missing = [name for name in _PERSON_REQUIRED if row.get(name) is None]
        if missing:
            raise BatchExportError(f"{where}: a persons row needs {', '.join(missing)} (missing or null)")
        if row.get("team_id") is not None:  # distinct_ids are per project: two projects' rows must not collapse
            if team is None:
                team = (row["team_id"], where)
            elif row["team_id"] != team[0]:
                raise BatchExportError(
                    f"{where}: team_id {_shown(row['team_id'])} differs from team_id {_shown(team[0])} ({team[1]}):"
                    " read one project's export at a time"
                )
        try:
            distinct_id = _distinct_id(row["distinct_id"])
        except EventParseError as exc:
            raise BatchExportError(f"{where}: {exc}") from None
        person_id = _text(_uuid_text(row["person_id"]), "person_id", where)
        distinct_version = _integer(row["person_distinct_id_version"], "person_distinct_id_version", where)
        person_version = _integer(row["person_version"], "person_version", where)
        inserted_at = _moment(row.get("_inserted_at"), "_inserted_at", where) or _OLDEST
        properties = row.get("properties")
        if properties is None:
            properties = {}
        if not isinstance(properties, dict):
            raise BatchExportError(f"{where}: properties must be a JSON object, got {type(properties).__name__}")
        is_deleted = _flag(row.get("is_deleted"), "is_deleted", where)
        created_at = _moment(row.get("created_at"), "created_at", where)
        is_identified = (
            None if row.get("is_identified") is None else _flag(row["is_identified"], "is_identified", where)
        )

        ownership = (distinct_version, person_version, inserted_at)
        held = owners.get(distinct_id)
        if held is None or ownership >= held[0]:
            owners[distinct_id] = (ownership, person_id)
        key = (person_version, inserted_at)
        version = newest.get(person_id)
        if version is None or key >= version.key:
            newest[person_id] = _Version(key, properties, created_at, is_deleted, is_identified)

    distinct_ids: dict[str, list[str]] = {}
    for distinct_id, (_, person_id) in owners.items():
        distinct_ids.setdefault(person_id, []).append(distinct_id)
    return [
        ExportedPerson(
            person_id=person_id,
            distinct_ids=tuple(sorted(distinct_ids[person_id])),
            properties=version.properties,
            created_at=version.created_at,
            is_deleted=version.is_deleted,
            person_version=version.key[0],
            inserted_at=None if version.key[1] == _OLDEST else version.key[1],
            is_identified=version.is_identified,
        )
        for person_id, version in sorted(newest.items())
        if person_id in distinct_ids
    ]


def _text(value: Any, name: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BatchExportError(f"{where}: {name} must be a non-empty string, got {_shown(value)}")
    return value


def _integer(value: Any, name: str, where: str) -> int:
    """An integer; also as decimal text (ClickHouse's JSON quotes 64-bit integers by default)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,20}", value.strip()):
        return int(value)
    raise BatchExportError(f"{where}: {name} must be an integer, got {_shown(value)}")


def _flag(value: Any, name: str, where: str) -> bool:
    """A bool (``toBool``); also 0/1, as the ClickHouse column itself (``Int8``) is."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise BatchExportError(f"{where}: {name} must be true or false, got {_shown(value)}")


def _moment(value: Any, name: str, where: str) -> datetime | None:
    """A time: an aware ``datetime`` (Parquet) or ISO 8601 text (JSON Lines; UTC when it has no zone)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return as_aware(value)
    if isinstance(value, str):
        try:
            return parse_iso(value.strip())
        except ValueError:
            pass
    raise BatchExportError(f"{where}: {name} must be an ISO 8601 time, got {_shown(value)}")


def _shown(value: Any) -> str:
    """A value for a message: its type, and the value itself when it is short."""
    text = repr(value)
    return f"{type(value).__name__} {text}" if len(text) <= 40 else type(value).__name__


# ------------------------------------------------------------------------------------------------------- events

_EVENT_REQUIRED = ("uuid", "event", "distinct_id", "timestamp")


def read_events(
    paths: str | Path | Iterable[str | Path], on_duplicate: Callable[[str], None] | None = None
) -> Iterator[PostHogEvent]:
    """The events of an events-model export as the repo's :class:`PostHogEvent`, in file order, each uuid once.

    ``paths`` as for :func:`read_persons`. A row is parsed by the same strict parser as every other input
    (:func:`.parsing.parse_event`, the flat shape): ``person_properties`` become the event's
    ``person_properties`` (as the webhook's ``person.properties`` do; not ``$set``), ``$set`` / ``$set_once`` come
    from ``properties`` (and from the ``set`` / ``set_once`` columns when the export includes them). ``uuid``,
    ``event``, ``distinct_id`` and ``timestamp`` are required: a row without one, or that the parser refuses, raises
    :class:`BatchExportError` naming the file and the line or row.

    A uuid seen before in this read is dropped (backfills are not deduplicated against earlier runs), and
    ``on_duplicate`` called with where the row was read (``"<file>: line N"`` or ``"<file>: row N"``); the uuids
    seen are kept as 128-bit integers (the text itself when it is no UUID), so memory grows by about 100 bytes per
    event, not by the events.
    """
    seen: set[int | str] = set()
    for where, row in _rows(paths):
        missing = [name for name in _EVENT_REQUIRED if row.get(name) in (None, "")]
        if missing:
            raise BatchExportError(f"{where}: an events row needs {', '.join(missing)} (missing or empty)")
        row["uuid"] = _uuid_text(row["uuid"])
        for name in ("timestamp", "created_at", "_inserted_at"):
            if isinstance(row.get(name), datetime):
                row[name] = as_aware(row[name]).isoformat()
        try:
            event = parse_event(row)
        except EventParseError as exc:
            raise BatchExportError(f"{where}: {exc}") from None
        assert event.uuid is not None  # required above
        identity = _uuid_key(event.uuid)
        if identity in seen:
            if on_duplicate is not None:
                on_duplicate(where)
            continue
        seen.add(identity)
        yield event


def _uuid_text(value: Any) -> Any:
    """A UUID column as text: Parquet may hold it as a UUID (16 bytes, or ``uuid.UUID``) rather than a string."""
    if isinstance(value, uuid_module.UUID):
        return str(value)
    if isinstance(value, bytes) and len(value) == 16:
        return str(uuid_module.UUID(bytes=value))
    return value


def _uuid_key(text: str) -> int | str:
    try:
        return uuid_module.UUID(text).int
    except ValueError:
        return text
