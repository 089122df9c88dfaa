"""Measure the proposed hot-path fixes before they are made: ``send`` with each what-if patch.

    python bench/what_if.py [--people 2000] [--repeat 2]

Runs ``posthog-customerio send`` of the same generated stream (mode (c): v2,
``ANONYMOUS_EVENTS=person``, ``SQLITE_SYNCHRONOUS=NORMAL``) unpatched and with each
patch of bench/patches.py (monkeypatched at start-up by bench/patched_cli.py; src/ is
untouched), against the sandbox in its own process. Prints events/s (best of
``--repeat``) and Customer.io requests.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import base_env, machine, sandbox_process, send, table, write_stream  # noqa: E402
from requests_per_event import MODE_ENV  # noqa: E402

SETS = ["", "claim-scan", "depth", "mapping", "claim-scan,depth,mapping"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--events-per-person", type=int, default=25)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-whatif-") as tmp, sandbox_process() as box:
        events_file = Path(tmp) / "events.jsonl"
        events = write_stream(events_file, args.people, 1, args.events_per_person)
        print(f"# what-if: send with the proposed fixes -- {machine()}\nstream: {events} events", flush=True)
        baseline = None
        for patch_set in SETS:
            best, requests = 0.0, 0
            for attempt in range(args.repeat):
                box.reset()
                os.environ["BENCH_PATCHES"] = patch_set
                env = base_env(box, Path(tmp) / f"data-{len(rows)}-{attempt}", SQLITE_SYNCHRONOUS="NORMAL",
                               **MODE_ENV["c"])
                summary, _ = send(events_file, env)
                best = max(best, events / summary["seconds"])
                requests = summary["requests"]
            os.environ.pop("BENCH_PATCHES", None)
            baseline = baseline or best
            rows.append([patch_set or "(none: the code as it is)", f"{best:.0f}", f"x{best / baseline:.2f}", requests])
            print(f"  {patch_set or 'none'}: {best:.0f} events/s", flush=True)
    print()
    print(table(["what-if patches (bench/patches.py)", f"send events/s (best of {args.repeat})", "vs unpatched",
                 "Customer.io requests"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
