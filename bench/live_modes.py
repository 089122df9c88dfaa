"""Track v2 default, Track v2 with ANONYMOUS_HOLD_S, and the Pipelines API, live and side by side.

    python bench/live_modes.py [--rates 100,1000,max] [--duration 10] [--limited-events 6000]

``serve`` (its own process) takes posthog-js-shaped traffic from ``loadgen.py``: one event per POST,
the realistic seeded stream of ``posthog_customerio.samples``, open loop at each ``--rates`` value
(``max``: closed loop, 16 connections, as fast as answered). After the load the run waits for an empty
outbox; requests are the service's own count. Then the **rate-limit efficiency** per mode: the same
closed-loop run of ``--limited-events`` events with ``CUSTOMERIO_MAX_RPS=100`` (Customer.io's fair use)
and with the limiter off; delivered events/s (from the first POST to an empty outbox) with the limit,
divided by the figure without it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import base_env, machine, sandbox_process, table
from anonymous_hold import wait_empty
from throughput import Service, loadgen, write_bodies

MODES = {
    "Track v2 (hold 0)": {"CUSTOMERIO_API": "v2", "ANONYMOUS_HOLD_S": "0"},
    "Track v2 + ANONYMOUS_HOLD_S=5": {"CUSTOMERIO_API": "v2", "ANONYMOUS_HOLD_S": "5"},
    "Pipelines": {"CUSTOMERIO_API": "pipelines"},
}


def run(box: object, workdir: Path, bodies: Path, name: str, rate: str, duration: float, **extra: str) -> dict:
    """One serve run: load, wait for an empty outbox; events, requests, delivered events/s."""
    box.reset()  # type: ignore[attr-defined]
    label = f"{name}-{rate}-{extra.get('CUSTOMERIO_MAX_RPS', '')}".replace(" ", "_").replace("+", "").replace("=", "")
    env = base_env(box, workdir / f"data-{label}", SQLITE_SYNCHRONOUS="NORMAL", **MODES[name], **extra)  # type: ignore[arg-type]
    service = Service(env)
    try:
        time.sleep(1.0)
        started = time.monotonic()
        if rate == "max":
            load = loadgen(service.url + "/webhook", bodies, "closed", "--connections", "16", "--batch", "1")
        else:
            load = loadgen(service.url + "/webhook", bodies, "open", "--rate", rate, "--duration", str(duration))
        wait_empty(service)
        elapsed = time.monotonic() - started
        status = service.status()
    finally:
        service.close()
    events = load.get("requests", load.get("events", 0))
    return {"events": events, "requests": status["delivery"]["requests"], "events_per_s": events / elapsed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="100,1000,max")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of open-loop load per rate")
    parser.add_argument("--max-events", type=int, default=20000, help="events of the closed-loop (max) run")
    parser.add_argument("--limited-events", type=int, default=6000, help="events of each rate-limit run")
    parser.add_argument("--people", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated names of MODES to run")
    parser.add_argument("--no-limited", action="store_true", help="skip the rate-limit efficiency runs")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for every serve run")
    args = parser.parse_args(argv)
    names = [name for name in MODES if name in args.modes.split(",")]
    extra = dict(item.split("=", 1) for item in args.env)
    rates = [r.strip() for r in args.rates.split(",") if r.strip()]
    live, limited = [], []
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp, sandbox_process() as box:
        workdir = Path(tmp)
        print(f"# live modes -- {machine()}", flush=True)
        for rate in rates:
            bodies = workdir / f"bodies-{rate}.jsonl"
            count = args.max_events if rate == "max" else int(float(rate) * args.duration) + 500
            write_bodies(bodies, args.people, args.seed, 25, limit=count)
            for name in names:
                result = run(box, workdir, bodies, name, rate, args.duration, CUSTOMERIO_MAX_RPS="100000", **extra)
                per_1000 = 1000 * result["requests"] / result["events"]
                live.append(
                    [
                        name,
                        rate,
                        result["events"],
                        result["requests"],
                        f"{per_1000:.1f}",
                        f"{result['events_per_s']:.0f}",
                    ]
                )
                print(f"  {name} at {rate}: {result['requests']} requests, {per_1000:.1f}/1,000", flush=True)
        bodies = workdir / "bodies-limited.jsonl"
        write_bodies(bodies, args.people, args.seed, 25, limit=args.limited_events)
        for name in [] if args.no_limited else names:
            free = run(box, workdir, bodies, name, "max", 0, CUSTOMERIO_MAX_RPS="100000", **extra)
            capped = run(box, workdir, bodies, name, "max", 0, CUSTOMERIO_MAX_RPS="100", **extra)
            ratio = capped["events_per_s"] / free["events_per_s"]
            limited.append(
                [
                    name,
                    f"{free['events_per_s']:.0f}",
                    f"{capped['events_per_s']:.0f}",
                    f"{ratio:.2f}",
                    capped["requests"],
                ]
            )
            print(f"  {name}: efficiency {ratio:.2f}", flush=True)
    print()
    headers = ["mode", "events/s offered", "events", "requests", "requests / 1,000 events", "delivered events/s"]
    print(table(headers, live))
    print()
    headers = ["mode", "events/s, limiter off", "events/s, CUSTOMERIO_MAX_RPS=100", "efficiency", "requests (limited)"]
    print(table(headers, limited))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
