"""Ingest capacity (issue 22): the receivers against what the HTTP server itself can do, side by side.

    python bench/ingest_capacity.py [--base main] [--events 20000] [--workers 2] [--duration 10]

In one run, against the sandbox in its own process on 127.0.0.1, mode (c) (v2,
``ANONYMOUS_EVENTS=person``), default ``SQLITE_SYNCHRONOUS`` (FULL):

1. **ceiling**: a bare ASGI app (reads the body, answers 200 with a small JSON) on the same
   uvicorn and protocol ``serve`` runs (:func:`posthog_customerio.service.http_timeouts.uvicorn_config`);
2. **before**: ``serve`` of the ``--base`` commit (its ``src/`` extracted with ``git archive`` into a
   temporary directory, run with ``PYTHONPATH``); **after**: ``serve`` of this checkout; **after,
   --workers N**: the same with ``--workers``;

   **after, --role ingest**: the receivers alone (nothing delivered: what delivery takes of the process);

   each with single-event webhook POSTs: closed loop, 16 connections (every POST answered 200 once;
   POSTs/s), then open loop at 1,000/s and 2,000/s for ``--duration`` s (p50/p99 from each request's
   scheduled time, bench/loadgen.py), each on a fresh data dir;
3. ``send`` of a generated file (mode (c), one process: file -> outbox -> delivered) against its
   floor: the same file parsed (``json.loads`` per line) and its rows inserted into SQLite in
   transactions of 2,000 (WAL, the same ``synchronous``), in this process; then the steps between:
   ``send``'s own reader instead of ``json.loads``, and its reading plus ``Ingestor.ingest`` (mapping,
   person state, outbox) without delivery; ``send``'s own figure is from its summary (reading,
   mapping, storing and delivering).

Prints Markdown tables and the ratios the issue's targets are stated in.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    ROOT,
    Sandbox,
    base_env,
    machine,
    process_cpu_s,
    run_measured,
    running_server,
    sandbox_process,
    table,
)
from _common import write_stream as write_events
from requests_per_event import MODE_ENV
from throughput import loadgen, wait_delivered, write_bodies

#: the bare ASGI app's answer, about the size of the service's
_BARE_ANSWER = b'{"status":1,"accepted":1,"operations":1}'


# -- the bare ASGI ceiling -------------------------------------------------------------------------
async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, answers 200 (lifespan events acknowledged)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    if scope["method"] == "GET":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(_BARE_ANSWER)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": _BARE_ANSWER})


def run_bare(port: int) -> None:
    """Serve :func:`bare_app` as ``serve`` runs its app (same protocol class, same options)."""
    import uvicorn

    from posthog_customerio.service.http_timeouts import uvicorn_config

    config = uvicorn_config(bare_app, "127.0.0.1", port, read_timeout_s=30.0, keep_alive_s=5.0)
    uvicorn.Server(config).run()


# -- processes ------------------------------------------------------------------------------------
@contextlib.contextmanager
def server(args: list[str], env: dict[str, str], health: str = "/healthz") -> Iterator[str]:
    """A server subprocess on a free loopback port: its URL while the block runs."""
    with running_server(args, health, env=env, timeout=120, stop_timeout=60) as (url, process):
        PIDS[url] = process.pid
        yield url


#: the server process behind each URL (its CPU is measured)
PIDS: dict[str, int] = {}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its children (``serve --workers``), while they run."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            total += process_cpu_s(current)
            pending += [int(child) for child in Path(f"/proc/{current}/task/{current}/children").read_text().split()]
    return total


def with_path(env: dict[str, str], src: Path) -> dict[str, str]:
    return {**env, "PYTHONPATH": str(src)}


def extract_base(ref: str, into: Path) -> Path:
    """``src/`` of commit ``ref`` into ``into`` (``git archive``); the directory to put on ``PYTHONPATH``."""
    into.mkdir(parents=True, exist_ok=True)
    archive = into / "base.tar"
    with open(archive, "wb") as out:
        subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"], stdout=out, check=True, timeout=120)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    archive.unlink()
    return into / "src"


def short_commit(ref: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", ref], capture_output=True, text=True)
    return done.stdout.strip() or ref


# -- measurements ---------------------------------------------------------------------------------
def measure_closed(label: str, start: Any, single: Path, drain: bool) -> dict[str, Any]:
    """The closed loop on a fresh server (``start(name)`` is the server's context)."""
    with start("closed") as url:
        before = cpu_seconds(PIDS[url])
        load = loadgen(url + "/webhook", single, "closed", "--connections", "16", "--batch", "1")
        load["server_cpu_s"] = cpu_seconds(PIDS[url]) - before
        if drain:
            wait_delivered(_Status(url), time.monotonic())
    print(f"  {label}: closed loop {load['events'] / load['seconds']:.0f} POST/s {load['statuses']}", flush=True)
    return dict(load)


def measure_open(label: str, start: Any, bodies: Path, rate: float, duration: float) -> dict[str, Any]:
    """An open loop at ``rate`` on a fresh server."""
    with start(f"open-{rate:.0f}") as url:
        time.sleep(1.0)  # start-up work settles
        load = loadgen(url + "/webhook", bodies, "open", "--rate", str(rate), "--duration", str(duration))
    print(
        f"  {label}: open {rate:.0f}/s: achieved {load['achieved_rate']:.0f}/s,"
        f" p50 {load['p50_ms']:.2f} ms, p99 {load['p99_ms']:.2f} ms {load['statuses']}",
        flush=True,
    )
    return dict(load)


def wait_processes(url: str, wanted: int, timeout: float = 120.0) -> None:
    """Until ``/api/status`` lists ``wanted`` live processes (each saves a heartbeat once it serves)."""
    status = _Status(url)
    deadline = time.monotonic() + timeout
    while sum(1 for replica in status.status()["replicas"] if replica["live"]) < wanted:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {wanted} processes serving after {timeout:.0f}s")
        time.sleep(0.2)


class _Status:
    """What :func:`throughput.wait_delivered` reads: the service's ``/api/status``."""

    def __init__(self, url: str) -> None:
        self.url = url

    def status(self) -> dict[str, Any]:
        import httpx

        return httpx.get(self.url + "/api/status", timeout=60).json()


def timed_inserts(
    path: Path, synchronous: str, columns: dict[str, str], rows: Iterable[tuple[Any, ...]], chunk: int
) -> float:
    """Seconds to draw ``rows`` (a lazy iterable: its reading is timed too) and insert them into table ``rows`` (``seq
    INTEGER PRIMARY KEY`` and ``columns``: name -> type) of a fresh SQLite file at ``path`` in WAL mode with the given
    ``synchronous``, ``chunk`` rows per transaction."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(f"CREATE TABLE rows (seq INTEGER PRIMARY KEY, {', '.join(f'{n} {t}' for n, t in columns.items())})")
    insert = f"INSERT INTO rows ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    started = time.perf_counter()
    batch: list[tuple[Any, ...]] = []

    def flush() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(insert, batch)
        conn.execute("COMMIT")
        batch.clear()

    for row in rows:
        batch.append(row)
        if len(batch) >= chunk:
            flush()
    if batch:
        flush()
    seconds = time.perf_counter() - started
    conn.close()
    return seconds


def floor(events_file: Path, workdir: Path, synchronous: str, chunk: int = 2000) -> float:
    """Seconds to parse ``events_file`` (one ``json.loads`` per line) and insert each event as a row (uuid, payload
    text) into a fresh SQLite file in WAL mode, ``chunk`` rows per transaction: reading plus storing, nothing else."""

    def rows() -> Iterator[tuple[Any, str]]:
        with open(events_file, encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    event = json.loads(line)
                    yield event.get("uuid"), json.dumps(event, separators=(",", ":"))

    columns = {"uuid": "TEXT", "payload": "TEXT NOT NULL"}
    return timed_inserts(workdir / "floor.sqlite", synchronous, columns, rows(), chunk)


def read_and_insert(events_file: Path, workdir: Path, synchronous: str, chunk: int = 2000) -> float:
    """As :func:`floor`, read by ``send``'s own reader (:func:`posthog_customerio.sources.records.read_events`: the
    strict parser, the event model); rows of (uuid, distinct_id, event)."""
    from posthog_customerio.sources.records import read_events

    def rows() -> Iterator[tuple[Any, str, str]]:
        with open(events_file, encoding="utf-8") as lines:
            for item in read_events(lines):
                if item.event is not None:
                    yield item.event.uuid, item.event.distinct_id, item.event.event

    columns = {"uuid": "TEXT", "distinct_id": "TEXT", "event": "TEXT"}
    return timed_inserts(workdir / "reader.sqlite", synchronous, columns, rows(), chunk)


def read_and_ingest(events_file: Path, workdir: Path, synchronous: str, chunk: int = 2000) -> float:
    """``send``'s reading and storing without its delivery: the reader, then ``Ingestor.ingest`` (mapping, person
    state, outbox) in transactions of ``chunk`` events, mode (c), into a fresh data dir."""
    from posthog_customerio.config import Settings
    from posthog_customerio.runtime import Runtime
    from posthog_customerio.sources.records import read_events

    settings = Settings(
        posthog_customerio_data_dir=workdir / f"ingest-{synchronous}",
        sqlite_synchronous=synchronous,  # type: ignore[arg-type]
        customerio_api="v2",  # type: ignore[arg-type]
        anonymous_events="person",  # type: ignore[arg-type]
    )
    with Runtime(settings) as runtime:
        started = time.perf_counter()
        batch = []
        with open(events_file, encoding="utf-8") as lines:
            for item in read_events(lines):
                if item.event is not None:
                    batch.append(item.event)
                    if len(batch) >= chunk:
                        runtime.ingestor.ingest(batch, "file")
                        batch = []
        if batch:
            runtime.ingestor.ingest(batch, "file")
        return time.perf_counter() - started


def measure_send(box: Sandbox, events_file: Path, events: int, workdir: Path, src: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"events": events}
    for sync in ("NORMAL", "FULL"):
        box.reset()
        env = with_path(base_env(box, workdir / f"send-{sync}", SQLITE_SYNCHRONOUS=sync, **MODE_ENV["c"]), src)
        finished = run_measured([sys.executable, "-m", "posthog_customerio", "send", str(events_file), "--json"], env)
        if finished.returncode != 0:
            raise RuntimeError(f"send exited {finished.returncode}: {finished.stderr[-2000:]}")
        summary = json.loads(finished.stdout)
        floor_s = floor(events_file, workdir, sync)
        reader_s = read_and_insert(events_file, workdir, sync)
        ingest_s = read_and_ingest(events_file, workdir, sync)
        results[sync] = {
            "send_s": summary["seconds"],
            "wall_s": finished.seconds,
            "floor_s": floor_s,
            "reader_s": reader_s,
            "ingest_s": ingest_s,
        }
        print(
            f"  send {sync}: {events / summary['seconds']:.0f} events/s; floor {events / floor_s:.0f},"
            f" send's reader + insert {events / reader_s:.0f}, reader + ingest (no delivery) {events / ingest_s:.0f}",
            flush=True,
        )
    return results


# -- main -------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", help="the commit 'before' is measured on (default: where HEAD left main)")
    parser.add_argument("--events", type=int, default=20_000, help="single-event POSTs of the closed loop")
    parser.add_argument("--repeat", type=int, default=1, help="closed loops per variant, in rounds (the median)")
    parser.add_argument("--rates", default="1000,2000", help="offered loads of the open loops, POSTs/s")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each open loop (<= 120)")
    parser.add_argument("--workers", type=int, default=2, help="serve --workers N for the last variant (0: skip)")
    parser.add_argument("--people", type=int, default=2000, help="people in the generated stream")
    parser.add_argument(
        "--only", default="ceiling,before,after,ingest-only,workers,send", help="what to measure (comma-separated)"
    )
    parser.add_argument("--json", type=Path, help="also write the raw figures as JSON here")
    parser.add_argument("--bare-asgi", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_asgi is not None:
        run_bare(args.bare_asgi)
        return 0
    only = set(args.only.split(","))
    if args.base is None:
        args.base = subprocess.run(
            ["git", "-C", str(ROOT), "merge-base", "HEAD", "main"], capture_output=True, text=True, check=True
        ).stdout.strip()
    rates = [float(rate) for rate in args.rates.split(",") if rate.strip()]
    here_src = ROOT / "src"
    results: dict[str, Any] = {
        "machine": machine(),
        "base": short_commit(args.base),
        "http": [],
        "load_at_start": os.getloadavg(),
    }
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir="/tmp"))
    try:
        base_src = extract_base(args.base, tmp / "base") if "before" in only else here_src
        with sandbox_process() as box:
            print(f"# ingest capacity -- {results['machine']}; before = {results['base']}", flush=True)
            single = tmp / "single.jsonl"
            write_bodies(single, args.people, 2, 25, limit=args.events)
            latency_bodies = tmp / "latency.jsonl"
            write_bodies(latency_bodies, args.people, 3, 25, limit=int(max(rates, default=0) * args.duration) + 10)
            counter = iter(range(1_000_000))

            def serve_start(src: Path, extra: list[str]) -> Any:
                @contextlib.contextmanager
                def start(name: str) -> Iterator[str]:
                    box.reset()
                    data_dir = tmp / f"data-{next(counter)}-{name}"
                    env = with_path(base_env(box, data_dir, **MODE_ENV["c"]), src)
                    command = [sys.executable, "-m", "posthog_customerio", "serve", "--host", "127.0.0.1", *extra]
                    with server(command, env) as url:
                        if "--workers" in extra:  # every process serving before the clock starts
                            wanted = int(extra[extra.index("--workers") + 1])
                            wait_processes(url, wanted)
                        yield url

                return start

            @contextlib.contextmanager
            def bare_start(name: str) -> Iterator[str]:
                env = with_path(dict(os.environ), here_src)
                command = [sys.executable, __file__]
                with running_server(command, "/", port_flag="--bare-asgi", env=env, timeout=60) as (url, process):
                    PIDS[url] = process.pid
                    yield url

            variants: list[tuple[str, Any, bool]] = []
            if "ceiling" in only:
                variants.append(("bare ASGI (ceiling)", bare_start, False))
            if "before" in only:
                variants.append((f"serve before ({results['base']})", serve_start(base_src, []), True))
            if "after" in only:
                variants.append(("serve after", serve_start(here_src, []), True))
            if "ingest-only" in only:
                variants.append(
                    ("serve after, --role ingest (no delivery)", serve_start(here_src, ["--role", "ingest"]), False)
                )
            if "workers" in only and args.workers > 1:
                workers = serve_start(here_src, ["--workers", str(args.workers)])
                variants.append((f"serve after, --workers {args.workers}", workers, True))
            runs: dict[str, dict[str, Any]] = {
                label: {"label": label, "closed_runs": [], "open": []} for label, *_ in variants
            }
            for _ in range(args.repeat):  # the closed loops in rounds: each round every variant once, in turn
                for label, start, drain in variants:
                    runs[label]["closed_runs"].append(measure_closed(label, start, single, drain))
            for label, start, _drain in variants:
                for rate in rates:
                    runs[label]["open"].append(measure_open(label, start, latency_bodies, rate, args.duration))
            for run in runs.values():
                ordered = sorted(run["closed_runs"], key=lambda load: load["events_per_s"])
                run["closed"] = ordered[len(ordered) // 2]  # the median run (the upper one of two)
                results["http"].append(run)
            if "send" in only:
                events_file = tmp / "events.jsonl"
                events = write_events(events_file, args.people, 1, 25)
                results["send"] = measure_send(box, events_file, events, tmp, here_src)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(report(results, rates))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


def report(results: dict[str, Any], rates: list[float]) -> str:
    started, ended = results["load_at_start"], os.getloadavg()
    out = [
        f"machine: {results['machine']}",
        "load average (1, 5, 15 min) at the start: {:.2f} {:.2f} {:.2f}; at the end: {:.2f} {:.2f} {:.2f}".format(
            *started, *ended
        ),
    ]
    http = results["http"]
    ceiling = next((r for r in http if r["label"].startswith("bare")), None)
    ceiling_rate = ceiling["closed"]["events_per_s"] if ceiling else None
    before = next((r for r in http if r["label"].startswith("serve before")), None)
    before_rate = before["closed"]["events_per_s"] if before else None
    if http:
        headers = ["server", "closed loop POST/s", "runs", "of ceiling", "x before", "server CPU µs / POST"]
        for rate in rates:
            headers += [f"{rate:.0f}/s achieved", "p50 ms", "p99 ms"]
        rows = []
        for r in http:
            closed = r["closed"]["events_per_s"]
            row = [
                r["label"],
                f"{closed:.0f}",
                "/".join(f"{load['events_per_s']:.0f}" for load in r["closed_runs"]),
                f"{closed / ceiling_rate:.3f}" if ceiling_rate else "",
                f"{closed / before_rate:.2f}" if before_rate else "",
                f"{1e6 * r['closed']['server_cpu_s'] / r['closed']['events']:.0f}",
            ]
            for load in r["open"]:
                row += [f"{load['achieved_rate']:.0f}", f"{load['p50_ms']:.2f}", f"{load['p99_ms']:.2f}"]
            rows.append(row)
        title = "\n## single-event webhook POSTs (closed loop 16 connections; open loops)\n\n"
        out.append(title + table(headers, rows))
        statuses = {
            r["label"]: [*(load["statuses"] for load in r["closed_runs"]), *(load["statuses"] for load in r["open"])]
            for r in http
        }
        out.append("\nstatuses: " + json.dumps(statuses))
    send = results.get("send")
    if send:
        rows = []
        for sync in ("NORMAL", "FULL"):
            figures = send[sync]
            send_rate, floor_rate = send["events"] / figures["send_s"], send["events"] / figures["floor_s"]
            reader_rate, ingest_rate = send["events"] / figures["reader_s"], send["events"] / figures["ingest_s"]
            ratio = send_rate / floor_rate
            rows.append(
                [
                    sync,
                    send["events"],
                    f"{floor_rate:.0f}",
                    f"{reader_rate:.0f}",
                    f"{ingest_rate:.0f}",
                    f"{send_rate:.0f}",
                    f"{ratio:.3f}",
                ]
            )
        headers = [
            "SQLITE_SYNCHRONOUS",
            "events",
            "floor: json.loads + insert, events/s",
            "send's reader + insert",
            "reader + ingest (mapping, state, outbox; no delivery)",
            "send (delivered)",
            "send / floor",
        ]
        out.append("\n## send vs its floor (batches of 2,000 events a transaction)\n\n" + table(headers, rows))
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
