"""Customer.io HTTP requests per 1,000 events and bytes per event, side by side.

    python bench/requests_per_event.py [--people 500] [--events-per-person 20] [--seed 1]

One realistic, seeded stream (``posthog_customerio.samples``: anonymous browsing,
identify with ``$anon_distinct_id``, page views, custom events with ~20 properties,
``$set`` changes) is delivered to the local sandbox (its own process, on 127.0.0.1)
in each mode; the sandbox's request log is the ground truth for requests and bytes.

Modes:

(a)  seed-equivalent: what PostHog's original plugin did -- for every event one v1
     identify and one v1 track request. We have no such mode in the product, so it
     is emulated: each event is mapped with an *empty* person state (the identify is
     never skipped, the person is never known), the operations are put in the outbox
     of a fresh data dir, and ``send`` delivers them with ``CUSTOMERIO_API=v1`` (one
     request per operation). Anonymous visitors become people, as in the plugin.
(a') the plugin's exact request bodies ($set-only identify + track), computed
     offline and not sent: bytes only, to show (a) is not inflated by our mapping.
(b)  v1, redundant identifies skipped (the product, ``CUSTOMERIO_API=v1``);
(c)  v2 batches packed by bytes (the product, ``CUSTOMERIO_API=v2``).

(b) and (c) run with ``ANONYMOUS_EVENTS=person`` (anonymous visitors' events go to a
person keyed by the anonymous distinct_id, merged on identify) so the three modes send
the same events; the product's default, ``ANONYMOUS_EVENTS=anonymous``, is shown as
(b*) and (c*): Customer.io's anonymous events exist only in v1, one request each.
(c-id) is v2 with ``SEND_EVENTS_FROM_ANONYMOUS_USERS=identified``.
(p) is ``CUSTOMERIO_API=pipelines``: everything, anonymous events included, in ``/v1/batch``.
adds (c*) once per ``ANONYMOUS_HOLD_S`` value (the other modes run with the product default).

``CUSTOMERIO_MAX_RPS=100000``: the client-side limiter is not what is measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Sandbox,
    base_env,
    machine,
    request_header_bytes,
    sandbox_process,
    send,
    table,
    write_stream,
)

MODES = ("a", "b", "c", "b*", "c*", "c-id", "p")
LABELS = {
    "a": "(a) seed-equivalent: v1 identify + track for every event",
    "a'": "(a') the plugin's exact bodies, computed offline (not sent)",
    "b": "(b) v1, redundant identifies skipped",
    "c": "(c) v2 batch packed by bytes",
    "b*": "(b*) v1, default ANONYMOUS_EVENTS=anonymous",
    "c*": "(c*) v2, default ANONYMOUS_EVENTS=anonymous",
    "c-id": "(c-id) v2, SEND_EVENTS_FROM_ANONYMOUS_USERS=identified",
    "p": "(p) Pipelines API, default ANONYMOUS_EVENTS=anonymous",
}
MODE_ENV = {
    "a": {"CUSTOMERIO_API": "v1"},
    "b": {"CUSTOMERIO_API": "v1", "ANONYMOUS_EVENTS": "person"},
    "c": {"CUSTOMERIO_API": "v2", "ANONYMOUS_EVENTS": "person"},
    "b*": {"CUSTOMERIO_API": "v1"},
    "c*": {"CUSTOMERIO_API": "v2"},
    "c-id": {"CUSTOMERIO_API": "v2", "SEND_EVENTS_FROM_ANONYMOUS_USERS": "identified"},
    "p": {"CUSTOMERIO_API": "pipelines"},
}


def prepare_seed_outbox(events_file: Path, data_dir: Path) -> int:
    """Mode (a): map every event with an empty person state into a fresh outbox."""
    from posthog_customerio.mapping import MappingConfig, map_event
    from posthog_customerio.outbox import Outbox
    from posthog_customerio.sources import read_events
    from posthog_customerio.storage import SqliteStorage

    config = MappingConfig(anonymous_events="person", merge_people=False)
    data_dir.mkdir(parents=True, exist_ok=True)
    db = SqliteStorage(data_dir / "posthog-customerio.sqlite", synchronous="NORMAL")
    outbox, count, chunk = Outbox(db), 0, []
    try:
        with open(events_file, encoding="utf-8") as stream:
            for item in read_events(stream):
                if item.event is None:
                    continue
                chunk.extend(map_event(item.event, {}, config).operations)
                if len(chunk) >= 5000:
                    count += outbox.put(chunk)
                    chunk = []
        count += outbox.put(chunk)
    finally:
        db.close()
    return count


def seed_exact_bytes(events_file: Path) -> tuple[int, int]:
    """(requests, body bytes) the original plugin would have sent (offline)."""
    from posthog_customerio.sources import read_events

    requests = body = 0
    with open(events_file, encoding="utf-8") as stream:
        for item in read_events(stream):
            event = item.event
            if event is None or event.event == "$create_alias":
                continue
            identify = {**event.set, "_update": True, "identifier": event.distinct_id}
            if isinstance(event.set.get("email"), str):
                identify["email"] = event.set["email"]
            track = {
                "name": event.event,
                "type": {"$pageview": "page", "$screen": "screen"}.get(event.event, "event"),
                "timestamp": event.timestamp.timestamp(),
                "data": {k: v for k, v in event.properties.items() if k not in ("$set", "$set_once")},
            }
            for payload in (identify, track):
                requests += 1
                body += len(json.dumps(payload, default=str).encode())
    return requests, body


def run_mode(mode: str, events_file: Path, box: Sandbox, workdir: Path, **env_extra: str) -> dict[str, Any]:
    """Deliver the stream in one mode; figures from the sandbox's request log."""
    box.reset()
    hold = env_extra.get("ANONYMOUS_HOLD_S", "default")
    data_dir = workdir / f"data-{mode.replace('*', 'star')}-{env_extra.get('SQLITE_SYNCHRONOUS', 'FULL')}-{hold}"
    env = base_env(box, data_dir, **{**MODE_ENV[mode], **env_extra})
    target = events_file
    if mode == "a":
        prepare_seed_outbox(events_file, data_dir)
        target = Path("/dev/null")
    summary, finished = send(target, env)
    requests, body_bytes = box.request_totals()
    stats = box.stats()
    return {
        "mode": mode,
        "summary": summary,
        "requests": requests,
        "body_bytes": body_bytes,
        "seconds": summary["seconds"],
        "wall_s": finished.seconds,
        "max_rss_mb": finished.max_rss_mb,
        "events_delivered": stats["events"] + stats["anonymous_events"],
        "people": stats["people"],
        "duplicates": stats["duplicates"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=500)
    parser.add_argument("--events-per-person", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES))
    parser.add_argument("--holds", default="", help="ANONYMOUS_HOLD_S values to run (c*) with, e.g. 0,1,5,30,60")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    holds = [h.strip() for h in args.holds.split(",") if h.strip()]

    with tempfile.TemporaryDirectory(prefix="bench-rpe-") as tmp, sandbox_process() as box:
        workdir = Path(tmp)
        events_file = workdir / "events.jsonl"
        events = write_stream(events_file, args.people, args.seed, args.events_per_person)
        header = request_header_bytes()
        print(f"# requests per event -- {machine()}", flush=True)
        print(
            f"stream: {events} events, {args.people} people, seed {args.seed},"
            f" {events_file.stat().st_size / events:.0f} B/event as JSONL; request headers ~{header} B",
            flush=True,
        )
        results: dict[str, dict[str, Any]] = {}
        for mode in modes:
            results[mode] = run_mode(mode, events_file, box, workdir, SQLITE_SYNCHRONOUS="NORMAL")
            r = results[mode]
            print(f"  {mode}: {r['requests']} requests, {r['body_bytes']} body bytes, {r['seconds']}s", flush=True)
        for hold in holds:
            mode = f"c* hold={hold}"
            results[mode] = run_mode(
                "c*", events_file, box, workdir, SQLITE_SYNCHRONOUS="NORMAL", ANONYMOUS_HOLD_S=hold
            )
            LABELS[mode] = f"(c*) v2 default, ANONYMOUS_HOLD_S={hold}"
            r = results[mode]
            print(f"  {mode}: {r['requests']} requests, {r['body_bytes']} body bytes, {r['seconds']}s", flush=True)
        modes += [f"c* hold={hold}" for hold in holds]
        seed_requests, seed_bytes = seed_exact_bytes(events_file)

    rows = []
    base = results.get("a")
    for mode in modes:
        r = results[mode]
        per_k = 1000 * r["requests"] / events
        rows.append(
            [
                LABELS[mode],
                r["requests"],
                f"{per_k:.2f}",
                f"{r['body_bytes'] / events:.0f}",
                f"{(r['body_bytes'] + header * r['requests']) / events:.0f}",
                r["events_delivered"],
                f"{events / r['seconds']:.0f}",
                f"{r['requests'] / base['requests']:.4f}" if base else "",
            ]
        )
        if mode == "a":
            rows.append(
                [
                    LABELS["a'"],
                    seed_requests,
                    f"{1000 * seed_requests / events:.2f}",
                    f"{seed_bytes / events:.0f}",
                    f"{(seed_bytes + header * seed_requests) / events:.0f}",
                    "",
                    "",
                    "",
                ]
            )
    print()
    print(
        table(
            [
                "mode",
                "HTTP requests",
                "requests / 1,000 events",
                "body B / event",
                "wire B / event (+headers)",
                "events in sandbox",
                "events/s (send)",
                "requests vs (a)",
            ],
            rows,
        )
    )
    if "c" in results:
        per_k = 1000 * results["c"]["requests"] / events
        print(f"\ntarget (c) <= 5 requests per 1,000 events: {per_k:.2f} -> {'MET' if per_k <= 5 else 'NOT MET'}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "events": events,
                    "header_bytes": header,
                    "results": results,
                    "seed_exact": {"requests": seed_requests, "body_bytes": seed_bytes},
                },
                indent=2,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
