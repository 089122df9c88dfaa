"""End-to-end throughput, webhook latency and memory, against the sandbox on loopback.

    python bench/throughput.py [--stream-people 2000] [--people 1000000] [--rate 2000] [--duration 10]

Prints Markdown tables:

1. ``send`` (file -> mapped -> outbox -> delivered, one process) in events/s, for
   ``SQLITE_SYNCHRONOUS=NORMAL`` and ``FULL``; mode (c) (v2 batches,
   ``ANONYMOUS_EVENTS=person``), the default (c*) (anonymous events through v1), (p)
   (``CUSTOMERIO_API=pipelines``, everything batched) and the seed-equivalent (a) (v1 identify + track per
   event; see requests_per_event.py), with
   the ratios (c)/(a) of events/s and of requests in the same run.
2. ``serve`` (webhook POSTs from bench/loadgen.py, a separate process -> delivered), in
   events/s: 100 events per POST and 1 event per POST; NORMAL and FULL.
3. Webhook latency p50/p99 at a fixed offered load (``--rate`` events/s, one event per
   POST, open loop, ``--duration`` s), with the service's peak RSS.
4. With ``--people N`` (> 0): N known people written straight into the ``persons`` table
   of a data dir; then ``send`` and ``serve`` process events of a sample of them, and
   their peak RSS is reported, plus the latency run on that state.

The sandbox runs in its own process (``posthog-customerio sandbox``);
``CUSTOMERIO_MAX_RPS=100000`` so the client-side limiter is not what is measured.
Every server binds 127.0.0.1; every loop is bounded.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Sandbox,
    base_env,
    cli_command,
    machine,
    peak_rss_mb,
    sandbox_process,
    send,
    start_server,
    stop,
    table,
    write_stream,
)
from requests_per_event import MODE_ENV, prepare_seed_outbox

LOADGEN = Path(__file__).resolve().parent / "loadgen.py"


# -- helpers ------------------------------------------------------------------------------
def wait_delivered(service: Service, started: float, timeout: float = 600.0) -> float:
    """Seconds from ``started`` until the service's outbox is empty (call after the load finished).

    Not a count of sandbox events: ``$set`` events, ``EVENTS_TO_SKIP`` and merges make that
    count differ from the input's; an empty outbox means everything ingested was delivered.
    """
    deadline = time.monotonic() + timeout
    while True:
        depth = service.status()["outbox"]["depth"]
        if depth == 0:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise RuntimeError(f"{depth} operations still queued after {timeout:.0f}s")
        time.sleep(0.05)


class Service:
    """``posthog-customerio serve`` as a subprocess on a free loopback port."""

    def __init__(self, env: dict[str, str]) -> None:
        command = [*cli_command(), "serve", "--host", "127.0.0.1"]
        self.url, self.process = start_server(command, "/healthz", env=env, timeout=120)

    def status(self) -> dict[str, Any]:
        import httpx

        return httpx.get(self.url + "/api/status", timeout=60).json()

    def rss(self) -> float:
        return peak_rss_mb(self.process.pid)

    def close(self) -> None:
        stop(self.process, timeout=60)


def loadgen(url: str, bodies: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(LOADGEN), "--url", url, "--bodies", str(bodies), *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def write_bodies(path: Path, people: int, seed: int, events_per_person: int, limit: int | None = None) -> int:
    from posthog_customerio.samples import iter_stream

    count = 0
    with open(path, "w", encoding="utf-8") as out:
        for body in iter_stream(people, seed=seed, events_per_person=events_per_person, shape="webhook"):
            out.write(json.dumps(body, separators=(",", ":"), ensure_ascii=False) + "\n")
            count += 1
            if limit is not None and count >= limit:
                break
    return count


# -- 1. send ------------------------------------------------------------------------------------
def bench_send(box: Sandbox, events_file: Path, events: int, workdir: Path, seed_events: int) -> list[dict[str, Any]]:
    results = []
    for sync in ("NORMAL", "FULL"):
        for mode in ("c", "c*", "p"):
            box.reset()
            data_dir = workdir / f"send-{mode.replace('*', 's')}-{sync}"
            summary, finished = send(events_file, base_env(box, data_dir, SQLITE_SYNCHRONOUS=sync, **MODE_ENV[mode]))
            results.append(
                {
                    "what": "send",
                    "mode": mode,
                    "sync": sync,
                    "events": events,
                    "seconds": summary["seconds"],
                    "wall_s": finished.seconds,
                    "requests": summary["requests"],
                    "operations": summary["operations_delivered"],
                    "max_rss_mb": finished.max_rss_mb,
                }
            )
            print(f"  send {mode} {sync}: {events / summary['seconds']:.0f} events/s", flush=True)
    # (a): the seed-equivalent, on the first `seed_events` events (it is slow), NORMAL
    subset = workdir / "seed-subset.jsonl"
    with open(events_file, encoding="utf-8") as src, open(subset, "w", encoding="utf-8") as dst:
        for number, line in enumerate(src):
            if number >= seed_events:
                break
            dst.write(line)
    box.reset()
    data_dir = workdir / "send-a"
    prepare_seed_outbox(subset, data_dir)
    summary, finished = send(Path("/dev/null"), base_env(box, data_dir, SQLITE_SYNCHRONOUS="NORMAL", **MODE_ENV["a"]))
    results.append(
        {
            "what": "send",
            "mode": "a",
            "sync": "NORMAL",
            "events": min(seed_events, events),
            "seconds": summary["seconds"],
            "wall_s": finished.seconds,
            "requests": summary["requests"],
            "operations": summary["operations_delivered"],
            "max_rss_mb": finished.max_rss_mb,
        }
    )
    print(f"  send a NORMAL: {min(seed_events, events) / summary['seconds']:.0f} events/s (delivery only)", flush=True)
    return results


# -- 2. serve throughput ------------------------------------------------------------------------
def bench_serve(
    box: Sandbox, bodies: Path, events: int, single_bodies: Path, single_events: int, workdir: Path
) -> list[dict[str, Any]]:
    results = []
    for sync in ("NORMAL", "FULL"):
        for batch, file, count, conns in ((100, bodies, events, 4), (1, single_bodies, single_events, 16)):
            box.reset()
            data_dir = workdir / f"serve-{sync}-{batch}"
            service = Service(base_env(box, data_dir, SQLITE_SYNCHRONOUS=sync, **MODE_ENV["c"]))
            try:
                started = time.monotonic()
                load = loadgen(
                    service.url + "/webhook", file, "closed", "--connections", str(conns), "--batch", str(batch)
                )
                delivered_s = wait_delivered(service, started)
                status = service.status()
                rss = service.rss()
            finally:
                service.close()
            results.append(
                {
                    "what": "serve",
                    "sync": sync,
                    "batch": batch,
                    "events": count,
                    "ingest_s": load["seconds"],
                    "delivered_s": delivered_s,
                    "requests": status["delivery"]["requests"],
                    "statuses": load["statuses"],
                    "depth_after": status["outbox"]["depth"],
                    "max_rss_mb": rss,
                }
            )
            print(
                f"  serve {sync} batch {batch}: ingest {count / load['seconds']:.0f}/s,"
                f" delivered {count / delivered_s:.0f}/s",
                flush=True,
            )
    return results


# -- 3. latency ---------------------------------------------------------------------------------
def bench_latency(
    box: Sandbox,
    bodies: Path,
    rate: float,
    duration: float,
    workdir: Path,
    data_dir: Path | None = None,
    label: str = "",
    syncs: tuple[str, ...] = ("NORMAL", "FULL"),
    extra_env: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    results = []
    for sync in syncs:
        box.reset()
        directory = data_dir or workdir / f"latency-{sync}"
        service = Service(base_env(box, directory, SQLITE_SYNCHRONOUS=sync, **MODE_ENV["c"], **(extra_env or {})))
        try:
            time.sleep(1.0)  # let start-up work settle
            load = loadgen(service.url + "/webhook", bodies, "open", "--rate", str(rate), "--duration", str(duration))
            delivered_s = wait_delivered(service, time.monotonic())
            rss = service.rss()
        finally:
            service.close()
        results.append(
            {"what": "latency", "label": label, "sync": sync, **load, "drain_after_s": delivered_s, "max_rss_mb": rss}
        )
        print(
            f"  latency {label}{sync}: p50 {load['p50_ms']:.2f} ms, p99 {load['p99_ms']:.2f} ms,"
            f" achieved {load['achieved_rate']:.0f}/s, RSS {rss:.0f} MB",
            flush=True,
        )
    return results


# -- 4. a million known people --------------------------------------------------------------------
_PLANS = ("free", "starter", "pro", "enterprise")


def _known_attributes(k: int) -> dict[str, Any]:
    return {
        "email": f"known-{k:07d}@example.com",
        "name": f"Known Person {k}",
        "plan": _PLANS[k % 4],
        "created_at": 1_700_000_000 + k,
        "company": f"Company {k % 5000}",
        "projects_count": k % 7,
    }


def build_people_state(data_dir: Path, people: int) -> float:
    """Write ``people`` identified, created people into the data dir's ``persons`` table."""
    from posthog_customerio.mapping import value_digest
    from posthog_customerio.storage import SqliteStorage

    started = time.monotonic()
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "posthog-customerio.sqlite"
    SqliteStorage(path, synchronous="NORMAL").close()  # creates the schema (migrations)
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    columns = [row[1] for row in conn.execute("PRAGMA table_info(persons)")]
    conn.execute("BEGIN")
    digest_cache: dict[Any, str] = {}

    def digest(value: Any) -> str:
        if value not in digest_cache:
            digest_cache[value] = value_digest(value)
        return digest_cache[value]

    def rows():
        for k in range(people):
            attributes = _known_attributes(k)
            digests = {
                key: (value_digest(value) if key in ("email", "name", "created_at") else digest(value))
                for key, value in attributes.items()
            }
            row = {
                "distinct_id": f"known-{k:07d}",
                "identified": 1,
                "email": attributes["email"],
                "created": 1,
                "email_sent": attributes["email"],
                "digests": json.dumps(digests, separators=(",", ":"), sort_keys=True),
                "merged_into": None,
                "extra": "{}",
            }
            yield tuple(row.get(column) for column in columns)

    conn.executemany(f"INSERT INTO persons ({','.join(columns)}) VALUES ({','.join('?' * len(columns))})", rows())
    conn.execute("COMMIT")
    conn.close()
    return time.monotonic() - started


def known_people_events(people: int, count: int, seed: int) -> list[dict[str, Any]]:
    """Plugin-shaped events of a random sample of the known people (~20 properties, some $set)."""
    rng = random.Random(seed)
    events = []
    base_ms = 1_767_600_000_000
    for n in range(count):
        k = rng.randrange(people)
        props: dict[str, Any] = {
            "$os": "Mac OS X",
            "$browser": "Chrome",
            "$browser_version": "131.0.0.0",
            "$device_type": "Desktop",
            "$current_url": "https://app.acme.example/reports",
            "$host": "app.acme.example",
            "$pathname": "/reports",
            "$lib": "web",
            "$lib_version": "1.205.0",
            "$screen_width": 1512,
            "$screen_height": 982,
            "$session_id": str(uuidlib.UUID(int=rng.getrandbits(128))),
            "$geoip_country_code": "DE",
            "$geoip_city_name": "Berlin",
            "$is_identified": True,
            "feature": rng.choice(["alerts", "sql_editor"]),
            "duration_ms": rng.randint(200, 90_000),
            "success": rng.random() < 0.9,
            "usage_count": rng.randint(1, 40),
        }
        if rng.random() < 0.1:
            props["$set"] = {"plan": rng.choice(_PLANS)}
        events.append(
            {
                "uuid": str(uuidlib.UUID(int=rng.getrandbits(128))),
                "event": "feature_used",
                "distinct_id": f"known-{k:07d}",
                "timestamp": base_ms + n * 10,
                "properties": props,
            }
        )
    return events


def bench_people(box: Sandbox, people: int, workdir: Path, rate: float, duration: float) -> list[dict[str, Any]]:
    results = []
    data_dir = workdir / "people"
    built_s = build_people_state(data_dir, people)
    size_mb = (data_dir / "posthog-customerio.sqlite").stat().st_size / 2**20
    print(f"  built {people} people in {built_s:.1f}s ({size_mb:.0f} MB)", flush=True)
    # send: 50,000 events of known people
    events_file = workdir / "known.jsonl"
    send_events = known_people_events(people, 50_000, seed=11)
    events_file.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in send_events))
    box.reset()
    summary, finished = send(events_file, base_env(box, data_dir, SQLITE_SYNCHRONOUS="NORMAL", **MODE_ENV["c"]))
    results.append(
        {
            "what": "people-send",
            "people": people,
            "events": len(send_events),
            "seconds": summary["seconds"],
            "requests": summary["requests"],
            "operations": summary["operations_delivered"],
            "max_rss_mb": finished.max_rss_mb,
            "db_mb": size_mb,
            "build_s": built_s,
        }
    )
    print(
        f"  send with {people} people: {len(send_events) / summary['seconds']:.0f} events/s,"
        f" peak RSS {finished.max_rss_mb:.0f} MB",
        flush=True,
    )
    # serve: 50,000 more events as webhook batches of 100
    bodies = workdir / "known-bodies.jsonl"
    serve_events = known_people_events(people, 50_000, seed=12)
    bodies.write_text("".join(json.dumps({"event": e}, separators=(",", ":")) + "\n" for e in serve_events))
    box.reset()
    service = Service(base_env(box, data_dir, SQLITE_SYNCHRONOUS="NORMAL", **MODE_ENV["c"]))
    try:
        started = time.monotonic()
        load = loadgen(service.url + "/webhook", bodies, "closed", "--connections", "4", "--batch", "100")
        delivered_s = wait_delivered(service, started)
        rss = service.rss()
        persons = service.status()["persons"]
    finally:
        service.close()
    results.append(
        {
            "what": "people-serve",
            "people": persons,
            "events": len(serve_events),
            "ingest_s": load["seconds"],
            "delivered_s": delivered_s,
            "max_rss_mb": rss,
        }
    )
    print(
        f"  serve with {persons} people: delivered {len(serve_events) / delivered_s:.0f} events/s,"
        f" peak RSS {rss:.0f} MB",
        flush=True,
    )
    # latency at the fixed rate, on this state (events of known people, one per POST)
    single = workdir / "known-single.jsonl"
    single.write_text(
        "".join(
            json.dumps({"event": e}, separators=(",", ":")) + "\n"
            for e in known_people_events(people, int(rate * duration) + 10, seed=13)
        )
    )
    results += bench_latency(
        box, single, rate, duration, workdir, data_dir=data_dir, label=f"{people} people, ", syncs=("NORMAL",)
    )
    return results


# -- main -----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stream-people", type=int, default=2000, help="people in the generated stream")
    parser.add_argument("--events-per-person", type=int, default=25)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seed-events", type=int, default=10_000, help="events for the slow mode (a)")
    parser.add_argument("--single-events", type=int, default=20_000, help="events for the 1-event-per-POST run")
    parser.add_argument("--rate", type=float, default=2000, help="offered load for the latency run, events/s")
    parser.add_argument("--duration", type=float, default=10, help="seconds of the latency run (<= 120)")
    parser.add_argument("--extra-rates", default="500,1000", help="more offered loads for the latency table (NORMAL)")
    parser.add_argument("--people", type=int, default=1_000_000, help="known people in state (0 = skip)")
    parser.add_argument("--only", default="send,serve,latency,people", help="sections to run")
    parser.add_argument("--json", type=Path, help="also write the raw figures as JSON here")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))

    results: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-tp-", dir="/tmp"))
    try:
        with sandbox_process() as box:
            print(f"# throughput -- {machine()}", flush=True)
            events_file = tmp / "events.jsonl"
            events = write_stream(events_file, args.stream_people, args.seed, args.events_per_person)
            bodies = tmp / "bodies.jsonl"
            write_bodies(bodies, args.stream_people, args.seed, args.events_per_person)
            single = tmp / "single.jsonl"
            single_events = write_bodies(
                single, args.stream_people, args.seed + 1, args.events_per_person, limit=args.single_events
            )
            latency_bodies = tmp / "latency.jsonl"
            write_bodies(
                latency_bodies,
                args.stream_people,
                args.seed + 2,
                args.events_per_person,
                limit=int(args.rate * args.duration) + 10,
            )
            print(f"stream: {events} events, {args.stream_people} people, seed {args.seed}", flush=True)
            if "send" in only:
                results += bench_send(box, events_file, events, tmp, args.seed_events)
            if "serve" in only:
                results += bench_serve(box, bodies, events, single, single_events, tmp)
            if "latency" in only:
                results += bench_latency(box, latency_bodies, args.rate, args.duration, tmp)
                for rate in (float(r) for r in args.extra_rates.split(",") if r.strip()):
                    results += bench_latency(box, latency_bodies, rate, args.duration, tmp, syncs=("NORMAL",))
            if "people" in only and args.people > 0:
                results += bench_people(box, args.people, tmp, args.rate, args.duration)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(report(results, args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    out = []
    sends = [r for r in results if r["what"] == "send"]
    if sends:
        rows = [
            [
                r["mode"],
                r["sync"],
                r["events"],
                f"{r['seconds']:.2f}",
                f"{r['events'] / r['seconds']:.0f}",
                r["requests"],
                f"{1000 * r['requests'] / r['events']:.1f}",
                f"{r['max_rss_mb']:.0f}",
            ]
            for r in sends
        ]
        out.append(
            "## send (file -> delivered)\n\n"
            + table(
                [
                    "mode",
                    "SQLITE_SYNCHRONOUS",
                    "events",
                    "seconds",
                    "events/s",
                    "requests",
                    "requests / 1k events",
                    "peak RSS MB",
                ],
                rows,
            )
        )
        a = next((r for r in sends if r["mode"] == "a"), None)
        c = next((r for r in sends if r["mode"] == "c" and r["sync"] == "NORMAL"), None)
        if a and c:
            speed = (c["events"] / c["seconds"]) / (a["events"] / a["seconds"])
            reqs = (c["requests"] / c["events"]) / (a["requests"] / a["events"])
            out.append(
                f"\nratio (c)/(a), NORMAL: events/s x{speed:.1f}; requests per event x{reqs:.4f}"
                f" ({1 / reqs:.0f}x fewer)"
            )
        best = max((r["events"] / r["seconds"] for r in sends if r["mode"] == "c"), default=0)
        out.append(f"target send >= 10,000 events/s: best (c) {best:.0f} -> {'MET' if best >= 10_000 else 'NOT MET'}")
    serves = [r for r in results if r["what"] == "serve"]
    if serves:
        rows = [
            [
                r["sync"],
                r["batch"],
                r["events"],
                f"{r['events'] / r['ingest_s']:.0f}",
                f"{r['events'] / r['delivered_s']:.0f}",
                r["requests"],
                r["depth_after"],
                f"{r['max_rss_mb']:.0f}",
            ]
            for r in serves
        ]
        out.append(
            "\n## serve (loadgen process -> webhook -> delivered), mode (c)\n\n"
            + table(
                [
                    "SQLITE_SYNCHRONOUS",
                    "events / POST",
                    "events",
                    "accepted events/s",
                    "delivered events/s",
                    "Customer.io requests",
                    "outbox after",
                    "peak RSS MB",
                ],
                rows,
            )
        )
    latencies = [r for r in results if r["what"] == "latency"]
    if latencies:
        rows = [
            [
                f"{r['label']}{r['sync']}",
                f"{r['offered_rate']:.0f}",
                f"{r['achieved_rate']:.0f}",
                r["requests"],
                json.dumps(r["statuses"]),
                f"{r['p50_ms']:.2f}",
                f"{r['p90_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                f"{r['max_ms']:.1f}",
                f"{r['max_rss_mb']:.0f}",
            ]
            for r in latencies
        ]
        out.append(
            f"\n## webhook latency, open loop, 1 event per POST, {args.duration:.0f} s\n\n"
            + table(
                [
                    "run",
                    "offered /s",
                    "achieved /s",
                    "POSTs",
                    "statuses",
                    "p50 ms",
                    "p90 ms",
                    "p99 ms",
                    "max ms",
                    "peak RSS MB",
                ],
                rows,
            )
        )
        worst = max(r["p99_ms"] for r in latencies if not r["label"] and r["offered_rate"] == args.rate)
        out.append(
            f"target p99 < 10 ms at {args.rate:.0f}/s: worst p99 {worst:.2f} ms -> {'MET' if worst < 10 else 'NOT MET'}"
        )
    people = [r for r in results if r["what"].startswith("people")]
    if people:
        rows = []
        for r in people:
            rate = r["events"] / (r.get("seconds") or r.get("delivered_s"))
            rows.append([r["what"].split("-")[1], r["people"], r["events"], f"{rate:.0f}", f"{r['max_rss_mb']:.0f}"])
        out.append(
            "\n## known people in state\n\n"
            + table(["process", "people in state", "events", "events/s delivered", "peak RSS MB"], rows)
        )
        worst = max(r["max_rss_mb"] for r in people)
        out.append(f"target RSS < 200 MB: worst {worst:.0f} MB -> {'MET' if worst < 200 else 'NOT MET'}")
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
