"""A backfill with ``send``: today's behaviour (the outbox bound off) and the bounded outbox, side by side.

    python bench/backfill.py [--events 200000] [--bound 50000] [--arms off,bounded] [--json PATH]
    python bench/backfill.py --events 1000000            # the 1M-event form (~3 min per arm on 2 cores)

**The file** (written once per size to a temporary directory, reused by every arm): the shape of a data team's
history export, as the issue tried it: per person one anonymous ``$pageview`` (its own ``distinct_id``), then a
``$identify`` with ``$anon_distinct_id`` and ``$set`` (email, name, plan), and for every other person a custom
``purchase`` event with a few properties; 2.5 events per person, timestamps increasing. ``--events`` sets the
size (people = events / 2.5).

**The Customer.io stand-in** (its own process, 127.0.0.1): Track v1/v2 and Pipelines paths, answers ``200 {}`` at
once and records when each request arrived and how many batch items it carried; nothing else (the sandbox's full
request log would cost more than what is measured).

**An arm** is one ``posthog-customerio send FILE --json`` in its own process, a fresh data directory, the defaults
(Track v2, ``SQLITE_SYNCHRONOUS=FULL``, ``DELIVERY_CONCURRENCY=4``, ``ANONYMOUS_HOLD_S=5``) with
``CUSTOMERIO_MAX_RPS=100000`` so the client-side limiter is not what is measured, and ``OUTBOX_MAX_QUEUED``:
``off`` = ``10**12`` (no bound: today's behaviour, the whole file lands in the outbox as fast as it is read),
``bounded`` = ``--bound`` (default: the setting's default). While it runs, the data directory's size (every file in
it: the database, its ``-wal`` and ``-shm``) and the process's RSS are sampled every 50 ms.

Figures per arm: peak data-directory size; the person state at the end (the database's pages in use once the outbox
is empty: people and their delivery history) and how far the peak went above it (the outbox, the WAL); the data
directory's size at the end (free pages included: SQLite keeps them); peak RSS (VmHWM); seconds from the process's
start to the stand-in's first request, the share of requests that arrived in the first half of the run, events/s
(events of the file / wall time of the process, start-up and the final drain included), Customer.io requests per
1,000 events, how often and how long reading waited for room (the summary's ``outbox_waits``), and the outbox
left at the end (0: everything delivered).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, Reply, StandIn, base_env, machine, peak_rss_mb, serve_json, table

SCRIPT = Path(__file__).resolve()
ARMS = ("off", "bounded")
#: ``OUTBOX_MAX_QUEUED`` of the ``off`` arm: never reached
UNBOUNDED = 10**12
EVENTS_PER_PERSON = 2.5
T0_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


# -- the file ---------------------------------------------------------------------------------------
def _event(name: str, distinct_id: str, ms: int, properties: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {
        "event": name,
        "distinct_id": distinct_id,
        "timestamp": ms / 1000,
        "uuid": str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"{distinct_id}/{name}/{ms}")),
        "properties": properties,
        **top,
    }


def backfill_events(people: int) -> Iterator[dict[str, Any]]:
    """Per person: an anonymous page view, an identify adopting it, a purchase for every other person."""
    plans = ("free", "pro", "team", "enterprise")
    for person in range(people):
        ms = T0_MS + person * 1_000
        anon, user = f"anon-{person:08d}", f"user-{person:08d}"
        page = {"$current_url": f"https://shop.example/landing/{person % 50}", "$is_identified": False}
        yield _event("$pageview", anon, ms, page)
        profile = {"email": f"person{person}@example.com", "name": f"Person {person}", "plan": plans[person % 4]}
        yield _event("$identify", user, ms + 200, {"$anon_distinct_id": anon}, **{"$set": profile})
        if person % 2 == 0:
            bought = {"sku": f"sku-{person % 97}", "amount": round(9.99 + person % 40, 2), "currency": "EUR"}
            yield _event("purchase", user, ms + 400, bought)


def write_file(path: Path, events: int, shape: str = "backfill") -> int:
    """``backfill``: :func:`backfill_events`; ``samples``: :mod:`posthog_customerio.samples`' realistic stream
    (anonymous browsing, ~70% sign up later, ~20 events a person), cut at ``events``."""
    if shape == "samples":
        import itertools

        from posthog_customerio.samples import iter_stream

        stream = itertools.islice(iter_stream(max(1, events // 20), seed=1, events_per_person=20), events)
    else:
        stream = backfill_events(max(1, round(events / EVENTS_PER_PERSON)))
    written = 0
    with path.open("w") as out:
        for event in stream:
            out.write(json.dumps(event, separators=(",", ":")) + "\n")
            written += 1
    return written


# -- the Customer.io stand-in (its own process) ---------------------------------------------------------
def serve_standin(port: int) -> None:
    lock = threading.Lock()
    arrivals: list[float] = []
    items = [0]

    def route(method: str, path: str, raw: bytes) -> Reply:
        if path == "/_bench/stats":
            with lock:
                return Reply(200, {"arrivals": list(arrivals), "items": items[0]})
        if path == "/_bench/reset":
            with lock:
                arrivals.clear()
                items[0] = 0
            return Reply(200, {})
        now = time.time()
        count = 1
        if path in ("/api/v2/batch", "/v1/batch"):
            with contextlib.suppress(ValueError, AttributeError):
                count = len(json.loads(raw).get("batch") or [])
        with lock:
            arrivals.append(now)
            items[0] += count
        return Reply(200, {})

    serve_json(port, route)


# -- one arm ----------------------------------------------------------------------------------------
def dir_bytes(path: Path) -> int:
    total = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(path):
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    return total


def live_state_bytes(database: Path) -> int:
    """Bytes of the database's pages in use at the end (the person state and delivery history once the outbox is
    empty): its size without the free pages the outbox left."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        pages, free, size = (
            conn.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_count", "freelist_count", "page_size")
        )
    return int((pages - free) * size)


def run_arm(arm: str, file: Path, events: int, args: argparse.Namespace, box: StandIn, work: Path) -> dict[str, Any]:
    box.get("/_bench/reset")
    data = work / f"data-{arm}"
    shutil.rmtree(data, ignore_errors=True)  # a fresh data directory: every person is new
    bound = UNBOUNDED if arm == "off" else args.bound
    env = base_env(box, data)
    env["PYTHONPATH"] = str(ROOT / "src")
    if bound is not None:
        env["OUTBOX_MAX_QUEUED"] = str(bound)
    command = [sys.executable, "-m", "posthog_customerio", "send", str(file), "--json"]
    peak_dir = peak_rss = 0.0
    started_wall, started = time.time(), time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        while process.poll() is None:
            peak_dir = max(peak_dir, dir_bytes(data))
            with contextlib.suppress(OSError, ValueError):
                peak_rss = max(peak_rss, peak_rss_mb(process.pid))
            time.sleep(0.05)
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"send ({arm}) exited {process.returncode}: {stderr[-2000:]}")
    summary = json.loads(stdout)
    stats = box.get("/_bench/stats")
    arrivals = sorted(stats["arrivals"])
    half = started_wall + seconds / 2
    waits = summary.get("outbox_waits") or {}
    return {
        "arm": arm,
        "bound": bound,
        "events": events,
        "seconds": round(seconds, 2),
        "events_per_s": round(events / seconds, 1),
        "peak_data_dir_mb": round(peak_dir / 1e6, 1),
        "end_data_dir_mb": round(dir_bytes(data) / 1e6, 1),
        "state_mb": round(live_state_bytes(data / "posthog-customerio.sqlite") / 1e6, 1),
        "peak_rss_mb": round(peak_rss, 1),
        "first_request_s": round(arrivals[0] - started_wall, 2) if arrivals else None,
        "requests": len(arrivals),
        "requests_first_half": sum(1 for at in arrivals if at <= half),
        "requests_per_1000_events": round(1000 * len(arrivals) / events, 2),
        "items": stats["items"],
        "operations_delivered": summary.get("operations_delivered"),
        "queued_at_end": summary.get("queued"),
        "waits": waits.get("times", 0),
        "waited_s": waits.get("seconds", 0.0),
    }


def median_of(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One arm's runs as one row: the median of each figure (the run of median events/s for the request counts)."""
    import statistics

    middle = sorted(results, key=lambda result: result["events_per_s"])[len(results) // 2]
    merged = dict(middle)
    figures = ("seconds", "events_per_s", "peak_data_dir_mb", "end_data_dir_mb", "state_mb", "peak_rss_mb")
    for key in (*figures, "first_request_s"):
        merged[key] = statistics.median(result[key] for result in results)
    merged["arm"] = f"median of {len(results)}: {middle['arm']}"
    return merged


def _row(result: dict[str, Any]) -> list[Any]:
    share = result["requests_first_half"] / result["requests"] if result["requests"] else 0.0
    bound = "10^12" if result["bound"] == UNBOUNDED else f"{result['bound']:,}" if result["bound"] else "default"
    return [
        f"{result['arm']} ({bound})",
        f"{result['peak_data_dir_mb']:,.1f} MB",
        f"{result['state_mb']:,.1f} MB",
        f"{result['peak_data_dir_mb'] - result['state_mb']:,.1f} MB",
        f"{result['end_data_dir_mb']:,.1f} MB",
        f"{result['peak_rss_mb']:.0f} MB",
        f"{result['first_request_s']:.2f}" if result["first_request_s"] is not None else "n/a",
        f"{result['requests_first_half']:,} / {result['requests']:,} ({share:.0%})",
        f"{result['events_per_s']:,.0f}",
        f"{result['requests_per_1000_events']:.2f}",
        f"{result['waits']:,} / {result['waited_s']:.1f} s",
        f"{result['seconds']:.1f}",
        f"{result['queued_at_end']}",
    ]


HEADERS = [
    "arm (OUTBOX_MAX_QUEUED)",
    "peak data dir",
    "state at end",
    "peak above state",
    "data dir at end",
    "peak RSS",
    "s to 1st request",
    "requests in 1st half",
    "events/s",
    "requests / 1,000 events",
    "reading waited (times / s)",
    "wall s",
    "left queued",
]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_standin"]:
        parser = argparse.ArgumentParser()
        parser.add_argument("--port", type=int, required=True)
        serve_standin(parser.parse_args(argv[1:]).port)
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="events in the file (1000000 for the 1M form)")
    parser.add_argument("--bound", type=int, default=None, help="OUTBOX_MAX_QUEUED of the bounded arm (default: its)")
    parser.add_argument("--arms", default=",".join(ARMS), help="off, bounded (in this order, comma-separated)")
    parser.add_argument("--shape", choices=("backfill", "samples"), default="backfill", help="the file's events")
    parser.add_argument("--repeat", type=int, default=1, help="run the arms this many times, alternating (medians)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the file and data dirs here")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    arms = [arm.strip() for arm in args.arms.split(",") if arm.strip()]
    unknown = [arm for arm in arms if arm not in ARMS]
    if unknown:
        parser.error(f"unknown arm(s): {', '.join(unknown)}")
    with contextlib.ExitStack() as stack:
        work = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="backfill-")))
        work.mkdir(parents=True, exist_ok=True)
        file = work / f"{args.shape}-{args.events}.jsonl"
        if not file.exists():
            write_file(file, args.events, args.shape)
        events = sum(1 for _ in file.open())
        print(f"machine: {machine()}", file=sys.stderr)
        print(f"file: {events:,} events, {file.stat().st_size / 1e6:,.1f} MB", file=sys.stderr)
        results = []
        box = stack.enter_context(StandIn.start(SCRIPT))
        for _ in range(args.repeat):  # the arms alternate: a change of the machine's load hits each alike
            for arm in arms:
                results.append(run_arm(arm, file, events, args, box, work))
                print(json.dumps(results[-1]), file=sys.stderr)
    rows = [_row(result) for result in results]
    if args.repeat > 1:
        rows += [_row(median_of([r for r in results if r["arm"] == arm])) for arm in arms]
    print(table(HEADERS, rows))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
