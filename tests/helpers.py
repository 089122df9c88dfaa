"""Helpers shared by the test files (fixtures stay in ``conftest.py``).

- :func:`wait_for` — poll a condition until it holds or a deadline passes (never a fixed sleep);
- :func:`free_port` — a free TCP port on 127.0.0.1, for servers that cannot bind port 0 themselves;
- :func:`make_settings` — :class:`Settings` for a test (the ``settings`` fixture wraps it);
- :func:`make_runtime` — a :class:`Runtime` pointed at the sandbox with a fresh data dir;
- :func:`sandbox_event_ids` / :func:`assert_exactly_once` — every event id Customer.io holds, once;
- :func:`ev` — a PostHog event dict (plugin/capture shape); :func:`hog` — a Hog webhook body;
- :func:`fixed_clock` — a receive-time clock for ``create_app``/``running_service`` that always says one instant;
- :func:`posthog_js_event` / :func:`posthog_js_capture_body` / :func:`server_sdk_batch` — capture bodies
  shaped as posthog-js and posthog-python/posthog-node send them (with their ``sent_at``);
- :func:`in_ci` / :func:`unavailable` — a missing external thing skips outside CI and fails in CI;
- :func:`npm_install` — install a ``tests/<dir>/package.json``'s pinned packages once;
- :func:`write_export_jsonl` / :func:`write_export_parquet` — PostHog batch-export files, written as PostHog's S3
  exporter writes them (:func:`export_schema`: the Arrow types of its persons and events models).
"""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import pytest

from posthog_customerio.config import Settings, load_settings
from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer

from .conftest import API_KEY, SITE_ID

#: 2024-01-01T00:00:00Z, the default time of :func:`ev` events.
T0 = 1_704_067_200
#: ``ev(..., uuid=DERIVED)`` (the default): a uuid5 of name, distinct id and time.
DERIVED = "derived"


def wait_for(
    check: Callable[[], Any],
    what: str = "the condition",
    timeout: float = 30.0,
    *,
    interval: float = 0.05,
    describe: Callable[[], Any] | None = None,
) -> Any:
    """Call ``check`` until it returns something truthy (returned) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f": {describe()}" if describe is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for subprocesses that need a port number)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_serving(url: str, process: subprocess.Popen[Any], timeout: float = 60.0) -> None:
    """Wait until a ``serve`` subprocess answers ``/healthz`` with 200 (fails if it exits or the deadline passes)."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            output = process.stdout.read() if process.stdout and process.poll() is not None else ""
            raise AssertionError(f"serve did not start: {output}")
        time.sleep(0.05)


def make_settings(data_dir: Path, sandbox: SandboxServer | None = None, **overrides: Any) -> Settings:
    """Settings for a test: the sandbox's site id and key, ``data_dir``, SQLite ``NORMAL`` and, with
    ``sandbox``, its Track URL; ``overrides`` are ``load_settings`` values (``None`` drops a default).

    The ``settings`` fixture (``conftest.py``) calls this with the test's ``tmp_path / "data"``."""
    values: dict[str, Any] = {
        "customerio_site_id": SITE_ID,
        "customerio_api_key": API_KEY,
        "posthog_customerio_data_dir": data_dir,
        "sqlite_synchronous": "NORMAL",
    }
    if sandbox is not None:
        values["customerio_track_url"] = sandbox.url
    values.update(overrides)
    return load_settings({name: value for name, value in values.items() if value is not None})


def make_runtime(sandbox: SandboxServer, data_dir: Path, **overrides: Any) -> Runtime:
    """A runtime delivering to ``sandbox`` from ``data_dir``; ``overrides`` are ``load_settings`` values."""
    return Runtime(make_settings(data_dir, sandbox, **{"customerio_max_rps": 1000, **overrides}))


def sandbox_event_ids(sandbox: SandboxServer) -> list[str]:
    """The id of every (person and anonymous) event the sandbox holds, upper-cased, duplicates kept."""
    return [e["id"].upper() for e in sandbox.state.events() + sandbox.state.anonymous_events() if e.get("id")]


def assert_exactly_once(sandbox: SandboxServer, expected: Iterable[str], context: str = "") -> None:
    """Customer.io holds each expected event id exactly once and nothing else (``context`` ends messages)."""
    ids = sandbox_event_ids(sandbox)
    wanted = set(expected)
    suffix = f" ({context})" if context else ""
    assert len(ids) == len(set(ids)), f"an event reached Customer.io twice{suffix}"
    missing, extra = wanted - set(ids), set(ids) - wanted
    assert not missing, f"{len(missing)} events never reached Customer.io, e.g. {sorted(missing)[:3]}{suffix}"
    assert not extra, f"{len(extra)} events Customer.io got that a clean run would not send{suffix}"


def ev(
    name: str,
    distinct_id: str = "u1",
    t: int = 0,
    *,
    t0: int = T0,
    uuid: str | None = DERIVED,
    iso: bool = False,
    properties: dict[str, Any] | None = None,
    top: dict[str, Any] | None = None,
    **props: Any,
) -> dict[str, Any]:
    """A PostHog event dict at ``t0 + t`` seconds.

    ``properties`` and ``**props`` make its properties; ``top`` adds top-level fields (``$set``,
    ``person``, ``timestamp``, ...). ``uuid``: :data:`DERIVED` (a uuid5 of name/distinct id/time),
    ``None`` (no uuid: the content hash names the event) or a literal. ``iso`` writes the timestamp
    as ISO text with 250 ms (``2024-01-01T00:00:05.250Z``) instead of integer seconds.
    """
    when: Any = t0 + t
    if iso:
        when = datetime.fromtimestamp(t0 + t, UTC).strftime("%Y-%m-%dT%H:%M:%S.250Z")
    if uuid == DERIVED:
        uuid = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"{distinct_id}/{name}/{t}"))
    event: dict[str, Any] = {
        "event": name,
        "distinct_id": distinct_id,
        "timestamp": when,
        "uuid": uuid,
        "properties": {**(properties or {}), **props},
    }
    event.update(top or {})
    return event


def hog(
    distinct_id: str,
    name: str = "clicked",
    n: int = 0,
    *,
    email: str | None = None,
    person: bool = True,
    **properties: Any,
) -> dict[str, Any]:
    """One PostHog webhook (Hog destination) body: ``{"event": ..., "person": ...}``.

    The event's uuid is a uuid5 of (distinct id, name, n); its properties are ``{"n": n, **properties}``;
    ``person=False`` leaves the person out, else its email is ``email`` or ``<distinct_id>@example.com``.
    """
    body: dict[str, Any] = {
        "event": {
            "uuid": str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"{distinct_id}/{name}/{n}")),
            "event": name,
            "distinct_id": distinct_id,
            "properties": {"n": n, **properties},
            "timestamp": "2024-01-01T00:00:00Z",
            "elements_chain": "",
            "url": "https://us.posthog.com/project/1/events/x",
        },
    }
    if person:
        body["person"] = {
            "id": distinct_id,
            "name": distinct_id,
            "url": "https://us.posthog.com/person/x",
            "properties": {"email": email or f"{distinct_id}@example.com"},
        }
    return body


def fixed_clock(moment: datetime) -> Callable[[], datetime]:
    """A clock that always answers ``moment`` (the service's receive time, independent of wall time)."""
    return lambda: moment


def iso_ms(moment: datetime) -> str:
    """``moment`` as JavaScript's ``Date.prototype.toISOString`` writes it: ``2024-01-01T00:00:00.000Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def posthog_js_event(
    name: str, distinct_id: str, when: datetime, token: str = "phc_test", **properties: Any
) -> dict[str, Any]:
    """One event as posthog-js builds it (``posthog-core.ts`` ``capture``): the distinct id and the
    project token inside ``properties``, ``timestamp`` the browser's ``new Date()`` (ISO, ms)."""
    return {
        "uuid": str(uuidlib.uuid4()),
        "event": name,
        "properties": {
            "$lib": "web",
            "$lib_version": "1.449.2",
            "distinct_id": distinct_id,
            "$device_id": distinct_id,
            "$time": when.timestamp(),
            "token": token,
            **properties,
        },
        "timestamp": iso_ms(when),
    }


def posthog_js_capture_body(events: list[dict[str, Any]], sent_at: datetime) -> dict[str, Any]:
    """A posthog-js capture request body (``request.ts`` ``addSentAtToCaptureBody``, "capture-body" mode):
    ``{api_key, batch, sent_at}`` with ``sent_at`` the browser clock when the request left (ISO, ms).

    Older posthog-js sent the bare event array and the send time in the query instead
    (``?sent_at=<ms>``, before that ``?_=<ms>``)."""
    return {"api_key": events[0]["properties"]["token"], "batch": events, "sent_at": iso_ms(sent_at)}


def server_sdk_batch(
    events: list[dict[str, Any]], sent_at: datetime | None, api_key: str = "phc_test"
) -> dict[str, Any]:
    """A ``POST /batch/`` body as posthog-python (``request.py`` ``post``: ``sent_at`` = ``datetime.now(tz=utc)
    .isoformat()``) and posthog-node (``sendBatch``: ``{api_key, batch, sent_at}``) send it; ``sent_at=None``
    leaves it out, as a hand-rolled client might."""
    body: dict[str, Any] = {"batch": events, "api_key": api_key}
    if sent_at is not None:
        body["sent_at"] = sent_at.astimezone(UTC).isoformat()
    return body


def server_sdk_event(name: str, distinct_id: str, when: datetime | None, **properties: Any) -> dict[str, Any]:
    """One message as posthog-python queues it (``client.py`` ``capture``); ``when=None`` sends no timestamp."""
    event: dict[str, Any] = {
        "event": name,
        "distinct_id": distinct_id,
        "uuid": str(uuidlib.uuid4()),
        "type": "capture",
        "library": "posthog-python",
        "library_version": "7.91.1",
        "properties": {"$lib": "posthog-python", "$lib_version": "7.91.1", "$geoip_disable": True, **properties},
    }
    if when is not None:
        event["timestamp"] = when.astimezone(UTC).isoformat()
    return event


def in_ci() -> bool:
    """``CI`` is set to something true: missing external things fail instead of skipping."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> NoReturn:
    """Skip the test for ``reason`` outside CI; fail it in CI (where everything must be provided)."""
    if in_ci():
        pytest.fail(f"{reason} (CI must provide it)")
    pytest.skip(reason)


def npm_install(directory: Path, package: str | None, *args: str, timeout: float = 600) -> Path:
    """``npm <args>`` in ``directory`` unless ``package`` is installed at its pinned version already.

    ``package`` names the dependency of ``directory/package.json`` whose installed version is compared
    (``None``: always run). Node.js and npm missing, or npm failing, is :func:`unavailable`.
    """
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        unavailable(f"node and npm are needed for the tests in {directory.name}/ (apt-get install nodejs npm)")
    # one install per directory at a time, also across parallel test processes (pytest -n)
    with (directory / ".npm-install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _npm_install_locked(npm, directory, package, args, timeout)


def _npm_install_locked(npm: str, directory: Path, package: str | None, args: tuple[str, ...], timeout: float) -> Path:
    if package is not None:
        wanted = json.loads((directory / "package.json").read_text())["dependencies"][package]
        installed = directory / "node_modules" / package / "package.json"
        if installed.exists() and json.loads(installed.read_text())["version"] == wanted:
            return directory
    try:
        done = subprocess.run(
            [npm, *args, "--no-audit", "--no-fund"], cwd=directory, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        unavailable(f"npm {' '.join(args)} in {directory} took over {timeout:.0f}s")
    if done.returncode != 0:
        unavailable(f"npm {' '.join(args)} in {directory} failed: {done.stderr.strip()[-1000:]}")
    return directory


def deliver_events(sandbox: SandboxServer, data_dir: Path, events: Iterable[dict[str, Any]], **overrides: Any) -> None:
    """Ingest ``events`` one at a time (a webhook stream) with a fresh Runtime on ``data_dir``, deliver all.

    Each call is a restart: state survives only through ``data_dir``. ``api="pipelines"`` delivers to the
    sandbox's Pipelines API.
    """
    from posthog_customerio.sources import parse_event

    if overrides.get("api") == "pipelines":
        overrides.pop("api")
        overrides |= {
            "customerio_api": "pipelines",
            "customerio_pipelines_api_key": "sandbox",
            "customerio_pipelines_url": sandbox.url,
        }
    overrides.setdefault("anonymous_hold_s", 0)
    with make_runtime(sandbox, data_dir, **overrides) as runtime:
        for raw in events:
            runtime.ingestor.ingest([parse_event(raw)])
        deliverer = runtime.deliverer()
        deliverer.start()
        try:
            assert deliverer.wait_until_empty(60), "the outbox did not empty"
        finally:
            deliverer.stop()
        dead = runtime.outbox.dead_letters()
        assert not dead, [d.reason for d in dead]


def profiles(sandbox: SandboxServer, pipelines: bool = False) -> list[dict[str, Any]]:
    """Customer.io's end state, one dict per profile: ``id``, ``email``, ``attributes``, sorted event names.

    Track (the workspace) and Pipelines (``pipelines=True``: ``userId`` is the id) in one shape.
    """
    if pipelines:
        state = sandbox.pipelines
        return [
            {
                "id": p["userId"],
                "email": p["email"],
                "attributes": p["attributes"],
                "events": sorted(str(e.get("name") or e.get("event")) for e in state.events(p["userId"])),
            }
            for p in state.people()
        ]
    found = []
    for p in sandbox.state.people():
        person = sandbox.state.person(p["cio_id"]) or {}
        names = sorted(str(e["name"]) for e in person.get("events", []))
        found.append({"id": p["id"], "email": p["email"], "attributes": p["attributes"], "events": names})
    return found


class SlowCustomerio:
    """A Customer.io stand-in on 127.0.0.1 that answers every request ``200 {}``, the first ``slow`` of them
    a byte at a time (one byte every ``interval_s``; ``trickle="headers"`` or ``"body"``).

    Each request is recorded (:attr:`requests`): when its body was read (``start``), when its answer ended
    or the client hung up (``end``), whether the client read it all (``answered``), and its JSON body.
    A hang-up is seen at once (the wait between bytes watches the socket).
    """

    def __init__(self, slow: int = 1, interval_s: float = 1.0, trickle: str = "body", body_bytes: int = 20) -> None:
        import socketserver
        import threading

        self.slow, self.interval_s, self.trickle, self.body_bytes = slow, interval_s, trickle, body_bytes
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer._serve(self.request)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> SlowCustomerio:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()

    def _read_request(self, sock: socket.socket, buffer: bytes) -> tuple[bytes, bytes] | None:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            buffer += chunk
        head, _, rest = buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            rest += chunk
        return rest[:length], rest[length:]

    def _hung_up(self, sock: socket.socket, wait_s: float) -> bool:
        """Wait up to ``wait_s`` for the client to hang up; True when it did."""
        import select

        readable, _, _ = select.select([sock], [], [], wait_s)
        if not readable:
            return False
        try:
            return sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _serve(self, sock: socket.socket) -> None:
        buffer = b""
        while not self.stop.is_set():
            try:
                read = self._read_request(sock, buffer)
            except OSError:
                return
            if read is None:
                return
            body, buffer = read
            with self.lock:
                number = len(self.requests)
                record: dict[str, Any] = {"start": time.monotonic(), "end": None, "answered": False}
                record["body"] = json.loads(body) if body else None
                self.requests.append(record)
            content = b"{}" + b" " * max(0, self.body_bytes - 2)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(content)
            answer = head + content
            slow = number < self.slow
            split = len(head) if self.trickle == "body" else answer.index(b"\r\n") + 2
            try:
                sock.sendall(answer[:split] if slow else answer)
                for index in range(split, len(answer)) if slow else ():
                    if self._hung_up(sock, self.interval_s) or self.stop.is_set():
                        record["end"] = time.monotonic()
                        return
                    sock.sendall(answer[index : index + 1])
            except OSError:
                record["end"] = time.monotonic()
                return
            record["end"], record["answered"] = time.monotonic(), True


class HangingServer:
    """A TCP stand-in that accepts connections, reads what comes and never answers (a hung Customer.io).

    ``received`` counts connections that sent bytes. Use as a context manager; it closes every socket on exit.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.received = 0
        self._open: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="hanging-server", daemon=True)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._open.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        try:
            if conn.recv(65536):
                self.received += 1
        except OSError:
            pass

    def __enter__(self) -> HangingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        self._listener.close()
        for conn in self._open:
            conn.close()
        self._thread.join(5)


def drain(runtime: Runtime, timeout: float = 60.0) -> None:
    """Run the runtime's delivery workers until its outbox is empty (fails the test after ``timeout``)."""
    deliverer = runtime.deliverer()
    deliverer.start()
    try:
        assert deliverer.wait_until_empty(timeout), "the outbox did not empty"
    finally:
        deliverer.stop()


# -- PostHog batch-export files ----------------------------------------------------------------------------------
# As PostHog's S3 exporter writes them (PostHog/posthog, ``products/batch_exports/backend/temporal/pipeline/
# transformer.py``): JSON Lines by ``dump_record_batch`` (one ``orjson.dumps`` object per line, each line
# gzip-compressed on its own, the JSON columns as objects); Parquet by ``ParquetStreamTransformer`` (the JSON
# columns as JSON text, the chosen codec inside the file).

#: the columns PostHog writes as JSON (``cast_record_batch_json_columns``)
EXPORT_JSON_COLUMNS = ("properties", "person_properties", "set", "set_once")


def export_schema(model: str) -> Any:
    """The ``pyarrow.Schema`` of PostHog's ``"persons"`` or ``"events"`` model as it reaches the Parquet writer."""
    import pyarrow as pa

    moment = pa.timestamp("us", tz="UTC")
    if model == "persons":
        return pa.schema(
            [
                ("team_id", pa.int64()),
                ("distinct_id", pa.string()),
                ("person_id", pa.string()),
                ("properties", pa.string()),
                ("person_distinct_id_version", pa.int64()),
                ("person_version", pa.int64()),
                ("created_at", moment),
                ("_inserted_at", moment),
                ("is_deleted", pa.bool_()),
            ]
        )
    assert model == "events", model
    return pa.schema(
        [
            ("uuid", pa.string()),
            ("event", pa.string()),
            ("distinct_id", pa.string()),
            ("person_id", pa.string()),
            ("properties", pa.string()),
            ("person_properties", pa.string()),
            ("elements_chain", pa.string()),
            ("timestamp", moment),
            ("created_at", moment),
            ("_inserted_at", moment),
        ]
    )


def export_line(row: dict[str, Any]) -> bytes:
    """One JSON Lines row as ``dump_dict`` writes it: the other columns, then the JSON columns
    (``cast_record_batch_json_columns`` appends them), compact, datetimes in ISO 8601."""
    ordered = {k: v for k, v in row.items() if k not in EXPORT_JSON_COLUMNS} | {
        k: v for k, v in row.items() if k in EXPORT_JSON_COLUMNS
    }
    return json.dumps(ordered, separators=(",", ":"), default=lambda value: value.isoformat()).encode() + b"\n"


def write_export_jsonl(path: Path, rows: list[dict[str, Any]], compression: str | None = None) -> Path:
    """JSON Lines, plain or ``"gzip"`` (a gzip member per line) or ``"zstd"`` (a frame per two lines: a reader
    must go across frames)."""
    lines = [export_line(row) for row in rows]
    if compression == "gzip":
        data = b"".join(gzip.compress(line) for line in lines)
    elif compression == "zstd":
        import zstandard

        compressor = zstandard.ZstdCompressor()
        data = b"".join(compressor.compress(b"".join(lines[i : i + 2])) for i in range(0, len(lines), 2))
    else:
        data = b"".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_export_parquet(
    path: Path,
    rows: list[dict[str, Any]],
    schema: Any = "persons",
    compression: str | None = None,
    row_group_size: int | None = None,
) -> Path:
    """Parquet with ``schema`` (a ``pyarrow.Schema``, or a model's name for :func:`export_schema`): the JSON columns
    as JSON text, ``compression`` (a codec: ``"zstd"``, ``"gzip"`` ...) inside the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = export_schema(schema) if isinstance(schema, str) else schema
    columns = {
        field.name: [
            json.dumps(row[field.name]) if field.name in EXPORT_JSON_COLUMNS else row[field.name] for row in rows
        ]
        for field in schema
    }
    table = pa.table(columns, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, schema, compression="none" if compression is None else compression) as writer:
        writer.write_table(table, row_group_size=row_group_size)
    return path
