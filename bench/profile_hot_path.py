"""Profile the hot paths with py-spy (all threads, native-free) and print where the time goes.

    pip install py-spy        # a profiling tool, deliberately not a project dependency
    python bench/profile_hot_path.py [--people 2000] [--rate 200] [--out DIR]

Two profiles, each against the sandbox in its own process on 127.0.0.1:

* ``send``: ``posthog-customerio send FILE`` of the generated stream, mode (c)
  (v2, ``ANONYMOUS_EVENTS=person``) -- file -> mapping -> outbox -> delivered;
* ``serve``: ``posthog-customerio serve`` while bench/loadgen.py posts the stream as
  single-event webhook requests (closed loop, 16 connections); py-spy attaches to the
  running service for ``--serve-seconds``.

For each: the top functions by *own* samples (where the CPU is) and by *inclusive*
samples (which call paths cost most), over every thread of the process, idle time
excluded. The raw collapsed stacks are kept in ``--out`` (flamegraph.pl / speedscope).
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    WAITING_FRAMES,
    base_env,
    cli_command,
    find_py_spy,
    machine,
    process_cpu_s,
    py_spy_attach,
    raw_stacks,
    running_server,
    sandbox_process,
    write_stream,
)
from requests_per_event import MODE_ENV

LOADGEN = Path(__file__).resolve().parent / "loadgen.py"


def py_spy() -> str:
    found = find_py_spy()
    if found is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    return found


def summarize(raw: Path, top: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = waiting = 0
    for frames, count in raw_stacks(raw):
        if frames[-1].startswith(WAITING_FRAMES):  # Runner.run as a leaf: the event loop's C code (uvloop)
            waiting += count
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [
        f"{total} busy samples (all threads; {waiting} more samples of threads waiting or in the event"
        " loop's C code were left out)",
        "",
        "own time:",
    ]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "inclusive time:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top + 15)]
    return "\n".join(lines)


def record(output: Path, args: list[str], env: dict[str, str], rate: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            py_spy(),
            "record",
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--output",
            str(output),
            "--nonblocking",
            "--",
            *args,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--events-per-person", type=int, default=25)
    parser.add_argument("--serve-events", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--serve-seconds", type=int, default=12, help="seconds of serve to sample")
    parser.add_argument("--out", type=Path, default=Path("bench/profiles"))
    parser.add_argument("--only", default="send,serve")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report = [f"# hot-path profiles -- {machine()}"]
    tmp = Path(tempfile.mkdtemp(prefix="bench-prof-"))
    try:
        with sandbox_process() as box:
            events_file = tmp / "events.jsonl"
            events = write_stream(events_file, args.people, 1, args.events_per_person)
            if "send" in args.only:
                box.reset()
                raw = args.out / "send.txt"
                env = base_env(box, tmp / "send-data", SQLITE_SYNCHRONOUS="NORMAL", **MODE_ENV["c"])
                started = time.monotonic()
                process = record(raw, [*cli_command(), "send", str(events_file), "--json"], env, args.rate)
                _, err = process.communicate(timeout=900)
                seconds = time.monotonic() - started
                if not raw.exists():
                    raise SystemExit(f"py-spy failed: {err.decode()[-2000:]}")
                report += [
                    "",
                    f"## send: {events} events in {seconds:.1f}s under py-spy ({events / seconds:.0f} events/s"
                    " while sampled)",
                    "",
                    summarize(raw),
                ]
                print(report[-1], flush=True)
            if "serve" in args.only:
                from throughput import write_bodies

                bodies = tmp / "bodies.jsonl"
                count = write_bodies(bodies, args.people, 2, args.events_per_person, limit=args.serve_events)
                box.reset()
                raw = args.out / "serve.txt"
                env = base_env(box, tmp / "serve-data", SQLITE_SYNCHRONOUS="NORMAL", **MODE_ENV["c"])
                command = [*cli_command(), "serve", "--host", "127.0.0.1"]
                with running_server(command, "/healthz", env=env, timeout=60, stop_timeout=60) as (url, process):
                    load_process = subprocess.Popen(
                        [
                            sys.executable,
                            str(LOADGEN),
                            "--url",
                            url + "/webhook",
                            "--bodies",
                            str(bodies),
                            "closed",
                            "--connections",
                            "16",
                        ],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                    time.sleep(1.0)  # past connection set-up
                    spy = py_spy_attach(py_spy(), process.pid, args.rate, args.serve_seconds, raw)
                    out, err = load_process.communicate(timeout=900)
                    load = json.loads(out)
                    cpu_s = process_cpu_s(process.pid)
                    if not raw.exists():
                        raise SystemExit(f"py-spy failed: {spy.stderr[-2000:]}")
                report += [
                    "",
                    f"## serve: {count} single-event webhook POSTs, {load['events_per_s']:.0f}/s accepted"
                    f" under py-spy; the service used {cpu_s:.1f} CPU-s over its life"
                    f" ({cpu_s / (load['seconds'] + 2):.0%} of one core during the load)",
                    "",
                    summarize(raw),
                ]
                print(report[-1], flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    (args.out / "summary.txt").write_text("\n".join(report) + "\n")
    print(f"\nraw stacks and summary in {args.out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
