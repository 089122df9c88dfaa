"""The anonymous backlog: disk per row, and what counting, expiring and claiming cost as it grows.

    python bench/anonymous_backlog.py [--sizes 100000,500000,1000000] [--postgres URL]

Fills a fresh SQLite file and a fresh PostgreSQL schema with N anonymous events (plus 1% person
work interleaved), then measures, side by side:

* disk bytes per row (SQLite: file pages used by the whole database / N, indexes included;
  PostgreSQL: ``pg_total_relation_size('outbox')`` / N, after ``VACUUM ANALYZE``);
* the backlog count (``Transaction.anonymous_backlog``: count + oldest, what status and every
  expiry pass read), median of 7;
* an expiry pass with nothing to drop (the keeper's steady state, once a second), median of 7;
* an expiry pass dropping 10,000 rows by count (deletes, ``deliveries`` rows, counters), per row;
* a claim from the anonymous lane (``Outbox.claim``: with ``lane="anonymous"`` when the lane
  parameter exists, else the existing claim over the whole queue), Track v2 limits, median of 7.

Rows are realistic: the anonymous events the mapping produced for the seeded
``posthog_customerio.samples`` stream (visitors who never identify), ingested once through the real
``Ingestor`` into a scratch database, then copied with distinct visitor keys up to N rows, enqueued
over the last 40 days (so ~1/4 are older than 30 days).
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, table

DAY = 86_400.0
TEST_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def template_rows(workdir: Path) -> list[tuple[str, str, int, str | None]]:
    """(person_key, payload, size, after_keys) of the anonymous events the mapping queues for the sample stream."""
    from posthog_customerio.config import load_settings
    from posthog_customerio.runtime import Runtime
    from posthog_customerio.samples import iter_stream
    from posthog_customerio.sources import parse_payload

    settings = load_settings({"posthog_customerio_data_dir": workdir / "template", "anonymous_hold_s": 3600})
    with Runtime(settings) as runtime:
        events = [
            event
            for body in iter_stream(3000, seed=1, events_per_person=25, shape="webhook")
            for event in parse_payload(body)
        ]
        for start in range(0, len(events), 500):
            runtime.ingestor.ingest(events[start : start + 500], "webhook")
        with runtime.db.reading() as tx:
            rows = tx.execute(
                "SELECT person_key, payload, size, after_keys FROM outbox WHERE kind = 'anonymous' ORDER BY seq"
            ).fetchall()
    return [(str(key), str(payload), int(size), after) for key, payload, size, after in rows]


def generated(templates: list[tuple[str, str, int, str | None]], count: int, now: float) -> Iterator[tuple[Any, ...]]:
    """``count`` outbox rows (person_key, payload, size, enqueued_at, after_keys, kind) in enqueue order:
    anonymous events copied from ``templates`` (distinct visitors per copy), one person operation in 100."""
    span = 40 * DAY
    for n in range(count):
        at = now - span + span * n / count
        if n % 100 == 99:
            payload = f'{{"type":"person","identifiers":{{"id":"p{n}"}},"action":"event","name":"bought"}}'
            yield (f"p{n}", payload, len(payload), at, None, "person")
            continue
        key, payload, size, after = templates[n % len(templates)]
        copy = n // len(templates)
        yield (f"{key}~{copy}", payload, size, at, after, "anonymous")


def median_ms(run: Callable[[], object], repeat: int = 7) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def fill_sqlite(path: Path, rows: Iterator[tuple[Any, ...]]) -> Any:
    from posthog_customerio.storage import SqliteStorage

    db = SqliteStorage(path, synchronous="NORMAL")
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == 20_000:
            with db.transaction() as tx:
                tx.conn.executemany(db.sql.insert_operation, batch)  # type: ignore[attr-defined]
            batch = []
    if batch:
        with db.transaction() as tx:
            tx.conn.executemany(db.sql.insert_operation, batch)  # type: ignore[attr-defined]
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.conn.execute("ANALYZE")
    return db


def fill_postgres(url: str, rows: Iterator[tuple[Any, ...]]) -> Any:
    from posthog_customerio.storage import PostgresStorage

    db = PostgresStorage(url)
    with db.pool.connection() as conn:
        with (
            conn.cursor() as cursor,
            cursor.copy("COPY outbox (person_key, payload, size, enqueued_at, after_keys, kind) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE outbox")
        conn.autocommit = False
    return db


def disk_bytes(db: Any) -> int:
    if db.dialect == "sqlite":
        with db.reading() as tx:
            pages = tx.execute("PRAGMA page_count").fetchone()[0] - tx.execute("PRAGMA freelist_count").fetchone()[0]
            return int(pages) * int(tx.execute("PRAGMA page_size").fetchone()[0])
    with db.reading() as tx:
        return int(tx.execute("SELECT pg_total_relation_size('outbox')").fetchone()[0])


def measure(db: Any, count: int, now: float) -> dict[str, Any]:
    from posthog_customerio.backlog import AnonymousBacklog
    from posthog_customerio.operations import MAX_BATCH_BYTES, MAX_OP_BYTES
    from posthog_customerio.outbox import Outbox
    from posthog_customerio.output.track_v2 import BATCH_ENVELOPE

    anonymous = count - count // 100

    def backlog() -> None:
        with db.reading() as tx:
            tx.anonymous_backlog()

    idle = AnonymousBacklog(db, 41 * DAY, anonymous + 1, clock=lambda: now)  # nothing to drop
    outbox = Outbox(db, lease_s=30.0)
    claim = outbox.claim
    lane = {"lane": "anonymous"} if "lane" in inspect.signature(claim).parameters else {}

    def claim_once() -> None:
        items = claim(100, MAX_BATCH_BYTES - BATCH_ENVELOPE, MAX_OP_BYTES, **lane)
        outbox.unclaim(items)

    row: dict[str, Any] = {
        "rows": f"{count:,}",
        "backend": db.dialect,
        "B/row": round(disk_bytes(db) / count),
        "count ms": round(median_ms(backlog), 1),
        "idle pass ms": round(median_ms(idle.enforce), 1),
        "claim ms": round(median_ms(claim_once), 1),
        "claim": "anonymous lane" if lane else "whole queue (no lane yet)",
    }
    drop = AnonymousBacklog(db, 41 * DAY, anonymous - 10_000, clock=lambda: now)
    started = time.perf_counter()
    dropped = drop.enforce()
    seconds = time.perf_counter() - started
    assert dropped["count"] == 10_000, dropped
    row["drop 10k: ms"] = round(seconds * 1000)
    row["µs/dropped row"] = round(seconds * 1e6 / 10_000)
    return row


def _table(rows: list[dict[str, Any]]) -> str:
    headers = list(rows[0])
    return table(headers, [[row[key] for key in headers] for row in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,500000,1000000")
    parser.add_argument("--postgres", default=TEST_POSTGRES_URL, help="an admin URL: a schema is made and dropped")
    args = parser.parse_args(argv)
    import psycopg

    print(f"# anonymous backlog -- {machine()}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-backlog-") as tmp:
        workdir = Path(tmp)
        templates = template_rows(workdir)
        mean = statistics.mean(size for _, _, size, _ in templates)
        print(f"# {len(templates)} template anonymous events, mean payload {mean:.0f} B", flush=True)
        now = time.time()
        admin = psycopg.connect(args.postgres, autocommit=True)
        for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
            db = fill_sqlite(workdir / f"outbox-{size}.sqlite", generated(templates, size, now))
            try:
                results.append(measure(db, size, now))
            finally:
                db.close()
            print(_table([results[-1]]), flush=True)
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            admin.execute(f'CREATE SCHEMA "{schema}"')
            separator = "&" if "?" in args.postgres else "?"
            try:
                db = fill_postgres(
                    f"{args.postgres}{separator}options=-csearch_path%3D{schema}", generated(templates, size, now)
                )
                try:
                    results.append(measure(db, size, now))
                finally:
                    db.close()
            finally:
                admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
            print(_table([results[-1]]), flush=True)
        admin.close()
    print()
    print(_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
