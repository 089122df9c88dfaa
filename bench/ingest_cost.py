"""Cost of one ingestion (parse -> map -> state + outbox, one SQLite transaction), in-process.

    python bench/ingest_cost.py [--calls 3000]

What a single-event webhook POST costs in ``serve`` before any HTTP: one
``Ingestor.ingest`` call = one ``BEGIN IMMEDIATE`` ... ``COMMIT``. Measured for 1, 10
and 100 events per call, ``SQLITE_SYNCHRONOUS`` NORMAL and FULL, from one thread and
from 16 threads at once (what the receiver's thread pool does under load). No delivery,
no network: the floor under the webhook's per-request cost, and the case for group
commit (many requests, one transaction).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, table


def measure(data_dir: Path, sync: str, per_call: int, calls: int, threads: int) -> float:
    """Microseconds per event."""
    from posthog_customerio.config import load_settings
    from posthog_customerio.runtime import Runtime
    from posthog_customerio.samples import iter_stream
    from posthog_customerio.sources import parse_payload

    settings = load_settings(
        {"posthog_customerio_data_dir": data_dir, "sqlite_synchronous": sync, "anonymous_events": "person"}
    )
    bodies = list(iter_stream(max(50, calls * per_call // 20), seed=3, events_per_person=25, shape="webhook"))
    events = [event for body in bodies[: calls * per_call] for event in parse_payload(body)]
    chunks = [events[i : i + per_call] for i in range(0, len(events), per_call)]
    with Runtime(settings) as runtime:
        ingest = runtime.ingestor.ingest
        work = iter(chunks)
        lock = threading.Lock()

        def run() -> None:
            while True:
                with lock:
                    chunk = next(work, None)
                if chunk is None:
                    return
                ingest(chunk, "webhook")

        started = time.perf_counter()
        pool = [threading.Thread(target=run) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        seconds = time.perf_counter() - started
    return 1e6 * seconds / len(events)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000, help="ingest calls per measurement")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows, raw = [], []
    print(f"# ingestion cost -- {machine()}", flush=True)
    for sync in ("NORMAL", "FULL"):
        for per_call in (1, 10, 100):
            for threads in (1, 16):
                calls = max(30, args.calls // per_call)
                with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
                    us = measure(Path(tmp), sync, per_call, calls, threads)
                raw.append({"sync": sync, "events_per_call": per_call, "threads": threads, "us_per_event": us})
                rows.append([sync, per_call, threads, f"{us:.0f}", f"{us * per_call:.0f}", f"{1e6 / us:.0f}"])
                print(f"  {sync} {per_call}/call {threads} threads: {us:.0f} us/event", flush=True)
    print()
    print(table(["SQLITE_SYNCHRONOUS", "events per call", "threads", "µs / event", "µs / call", "events/s"], rows))
    if args.json:
        args.json.write_text(json.dumps(raw, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
