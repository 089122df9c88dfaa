"""Replicas on one PostgreSQL outbox vs one replica: throughput and requests per 1,000 events.

    python bench/replicas.py [--people 2000] [--events-per-person 10] [--replicas 3]
                             [--postgres-url postgresql://postgres@127.0.0.1:5432/test]

For each setup — one replica on SQLite (the single-node default), one replica on
PostgreSQL, and N replicas on the same PostgreSQL — it starts the Customer.io sandbox
(its own process), the `serve` replicas (each its own process), and one load
generator process per replica posting its share of the same webhook stream, then
reports events/s from the first POST until the sandbox holds every event, and
Customer.io requests per 1,000 events. Each PostgreSQL run uses a fresh schema,
dropped afterwards. Everything binds 127.0.0.1. Not a test; not run in CI.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Sandbox, base_env, machine, sandbox_process, table
from throughput import Service, loadgen, wait_delivered, write_bodies


def split(bodies: Path, parts: int, workdir: Path) -> list[Path]:
    """Deal the bodies round-robin into ``parts`` files (what a load balancer does)."""
    files = [workdir / f"part-{n}.jsonl" for n in range(parts)]
    handles = [open(f, "w", encoding="utf-8") for f in files]  # noqa: SIM115
    try:
        for index, line in enumerate(open(bodies, encoding="utf-8")):  # noqa: SIM115
            handles[index % parts].write(line)
    finally:
        for handle in handles:
            handle.close()
    return files


def fresh_schema(url: str) -> tuple[str, str]:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in url else "?"
    return schema, f"{url}{separator}options=-csearch_path%3D{schema}"


def drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def run(
    box: Sandbox, bodies: Path, events: int, replicas: int, outbox_url: str | None, workdir: Path, anonymous_events: str
) -> dict[str, Any]:
    box.reset()
    extra = {"ANONYMOUS_EVENTS": anonymous_events, **({"OUTBOX_URL": outbox_url} if outbox_url else {})}
    services = [
        Service(base_env(box, workdir / f"data-{n}", SQLITE_SYNCHRONOUS="NORMAL", **extra)) for n in range(replicas)
    ]
    try:
        parts = split(bodies, replicas, workdir)
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(replicas) as pool:
            loads = list(
                pool.map(
                    lambda pair: loadgen(
                        pair[0].url + "/webhook", pair[1], "closed", "--connections", "4", "--batch", "50"
                    ),
                    zip(services, parts, strict=False),
                )
            )
        ingested = time.monotonic() - started
        seconds = wait_delivered(box, events, started)
        requests, _ = box.request_totals()
    finally:
        for service in services:
            service.close()
    return {
        "setup": f"{replicas} x serve on {'PostgreSQL' if outbox_url else 'SQLite'}",
        "events": events,
        "accepted": sum(load.get("events", load.get("accepted", 0)) for load in loads),
        "ingest_s": round(ingested, 2),
        "delivered_s": round(seconds, 2),
        "events_per_s": round(events / seconds),
        "requests_per_1000": round(requests * 1000 / events, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--events-per-person", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument(
        "--anonymous-events",
        choices=["person", "anonymous"],
        default="person",
        help="person: every event batchable (v2); anonymous: visitors' events are one v1 request each",
    )
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp, sandbox_process() as box:
        workdir = Path(tmp)
        bodies = workdir / "bodies.jsonl"
        events = write_bodies(bodies, args.people, args.seed, args.events_per_person)
        results.append(run(box, bodies, events, 1, None, workdir / "sqlite", args.anonymous_events))
        for replicas in (1, args.replicas):
            schema, url = fresh_schema(args.postgres_url)
            try:
                results.append(
                    run(box, bodies, events, replicas, url, workdir / f"pg-{replicas}", args.anonymous_events)
                )
            finally:
                drop_schema(args.postgres_url, schema)
    headers = ["setup", "events", "ingest s", "delivered s", "events/s", "requests / 1,000 events"]
    rows = [
        [r["setup"], r["events"], r["ingest_s"], r["delivered_s"], r["events_per_s"], r["requests_per_1000"]]
        for r in results
    ]
    print(f"# replicas ({machine()})\n")
    print(
        f"command: python bench/replicas.py --people {args.people} --events-per-person {args.events_per_person}"
        f" --replicas {args.replicas} --anonymous-events {args.anonymous_events}\n"
    )
    print(table(headers, rows))
    single_pg, many_pg = results[1], results[2]
    print(
        f"\n{args.replicas} replicas vs 1 (PostgreSQL): throughput"
        f" x{many_pg['events_per_s'] / single_pg['events_per_s']:.2f},"
        f" requests per 1,000 events {many_pg['requests_per_1000']} vs {single_pg['requests_per_1000']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
