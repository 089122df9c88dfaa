"""ANONYMOUS_HOLD_S: requests per 1,000 events, live, for several hold values.

    python bench/anonymous_hold.py [--holds 0,1,5,30,60] [--rate 100] [--duration 60]

``serve`` (its own process, the product default ``ANONYMOUS_EVENTS=anonymous``, Track v2)
takes posthog-js-shaped traffic from ``loadgen.py`` (open loop, one event per POST at
``--rate`` events/s, the realistic seeded stream of ``posthog_customerio.samples``); after
the load, the run waits until the outbox is empty (held events go out when their hold
ends): requests are the service's own count, and the wait shows the hold's delay.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import base_env, machine, sandbox_process, table
from throughput import Service, loadgen, write_bodies


def wait_empty(service: Service, timeout: float = 600.0) -> float:
    """Seconds until the service's outbox is empty (held events included)."""
    started = time.monotonic()
    while True:
        outbox = service.status()["outbox"]
        if outbox["depth"] == 0 and outbox["in_flight"] == 0:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"outbox not empty after {timeout:.0f}s: {outbox}")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--holds", default="0,1,5,30,60")
    parser.add_argument("--rate", type=float, default=100.0, help="events per second, one per POST")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load per hold value")
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-hold-") as tmp, sandbox_process() as box:
        workdir = Path(tmp)
        bodies = workdir / "bodies.jsonl"
        write_bodies(bodies, args.people, args.seed, 25, limit=int(args.rate * args.duration) + 1000)
        print(f"# ANONYMOUS_HOLD_S live -- {machine()}", flush=True)
        for hold in [h.strip() for h in args.holds.split(",") if h.strip()]:
            box.reset()
            env = base_env(
                box, workdir / f"data-{hold}", SQLITE_SYNCHRONOUS="NORMAL", CUSTOMERIO_API="v2", ANONYMOUS_HOLD_S=hold
            )
            service = Service(env)
            try:
                time.sleep(1.0)
                load = loadgen(
                    service.url + "/webhook", bodies, "open", "--rate", str(args.rate), "--duration", str(args.duration)
                )
                after = wait_empty(service)
                status = service.status()
            finally:
                service.close()
            events = load["requests"]
            requests = status["delivery"]["requests"]
            stats = box.stats()
            rows.append(
                [hold, events, requests, f"{1000 * requests / events:.1f}", stats["anonymous_events"], f"{after:.1f}"]
            )
            print(
                f"  hold {hold}: {events} events, {requests} requests, {1000 * requests / events:.1f}/1,000", flush=True
            )
    print()
    print(
        table(
            [
                "ANONYMOUS_HOLD_S",
                "events",
                "requests",
                "requests / 1,000 events",
                "anonymous events in sandbox",
                "outbox empty after the load (s)",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
