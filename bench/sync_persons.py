"""``sync-persons``: persons per second and Customer.io requests per 1,000 persons, side by side.

    python bench/sync_persons.py [--persons 20000] [--seed 1] [--changed 0.05]
                                 [--arms jsonl,zstd,parquet,v1,pipelines,api] [--json PATH]

One seeded set of N PostHog persons (``--persons``): ~2/3 identified, each with two distinct_ids (the SDK's
anonymous UUID, then an email or a ``usr_…`` id) and ~10 realistic properties (email, name, plan, company,
``$initial_os``, ``$initial_browser``, ``$initial_referring_domain``, ``$geoip_country_code``, ``signed_up_at`` …),
~1/3 anonymous with one UUID distinct_id and a few ``$initial_*`` / ``$geoip_*`` properties. The same persons
are served two ways:

* **export file**: PostHog's persons model (``team_id``, ``distinct_id``, ``person_id``, ``properties``,
  ``person_distinct_id_version``, ``person_version``, ``created_at``, ``_inserted_at``, ``is_deleted``; one row
  per distinct_id) written to a temporary directory as JSON Lines, zstd-compressed JSON Lines and Parquet
  (zstd inside, ``.parquet.zst`` as PostHog names it), then ``posthog-customerio sync-persons --from DIR --json``;
  arms: JSONL, zstd, Parquet with Track v2 (the default), JSONL with ``CUSTOMERIO_API=v1`` and ``pipelines``;
* **API**: the same persons (API shape: ``id``, ``uuid``, ``name``, ``distinct_ids``, ``properties``,
  ``created_at``, ``is_identified``) behind ``tests/posthog_api_standin.py`` under uvicorn (a thread of this
  process), pages of 100 (PostHog's default), ``POSTHOG_API_MAX_PER_MINUTE=100000`` so our client's pacing
  is not what is measured; Track v2.

Per arm, three runs of the command (its own process, one data dir per arm, ``POSTHOG_CUSTOMERIO_DATA_DIR``):
**first** (everything new), **second** (nothing changed: should send nothing) and **changed** (``--changed``,
5% of the persons, picked at random, have one attribute changed, with a newer ``person_version`` /
``_inserted_at`` in the export; the whole export / the whole API list is read again).

Figures per run: wall time of the process (Python start-up, reading, mapping, storing and delivery until the
outbox is empty: end to end), persons per second over that wall time, the command's own ``seconds`` (from the
``--json`` summary: the export is read and collapsed *before* that clock starts), Customer.io requests per
1,000 persons (the sandbox's request log: Track ``/api`` and Pipelines ``/v1`` requests), operations per person
and body bytes per person, peak RSS (VmHWM), and for the API arm the requests made to the stand-in.

The Customer.io sandbox runs in its own process (``posthog-customerio sandbox`` on 127.0.0.1) with
``CUSTOMERIO_MAX_RPS=100000``; everything else is the product's defaults (``SQLITE_SYNCHRONOUS=FULL``,
``DELIVERY_CONCURRENCY=4``, ``ANONYMOUS_EVENTS=anonymous``: persons PostHog never identified are skipped).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import tempfile
import time
import uuid as uuidlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, Sandbox, base_env, cli_command, machine, run_measured, sandbox_process, table

ARMS = ("jsonl", "zstd", "parquet", "v1", "pipelines", "api")
LABELS = {
    "jsonl": "export JSONL, Track v2",
    "zstd": "export JSONL.zst, Track v2",
    "parquet": "export Parquet (zstd), Track v2",
    "v1": "export JSONL, Track v1",
    "pipelines": "export JSONL, Pipelines",
    "api": "API (stand-in, 100/page), Track v2",
}
#: the export format each arm reads (the API arm reads none)
ARM_FORMAT = {"jsonl": "jsonl", "zstd": "zstd", "parquet": "parquet", "v1": "jsonl", "pipelines": "jsonl"}
ARM_API = {"v1": "v1", "pipelines": "pipelines"}
#: PostHog's limits on the private API, per project (https://posthog.com/docs/api)
POSTHOG_PER_MINUTE, POSTHOG_PER_HOUR, PAGE = 240, 1200, 100
#: the command's own pacing: POSTHOG_API_MAX_PER_MINUTE's default, and its fixed hourly cap (DEFAULT_MAX_PER_HOUR)
CLIENT_PER_MINUTE, CLIENT_PER_HOUR = 200, 1000
TEAM_ID = 2
#: the PostHog API settings, taken from this environment by no arm (the API arm sets its own)
POSTHOG_KEYS = ("POSTHOG_API_", "POSTHOG_PROJECT_ID", "POSTHOG_PERSONAL_API_KEY")

FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret", "Linus", "Radia", "Donald", "Frances", "John"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Hamilton", "Torvalds", "Perlman", "Knuth"]
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Wonka", "Tyrell", "Cyberdyne"]
DOMAINS = ["example.com", "example.org", "mail.example", "corp.example"]
PLANS = ["free", "free", "free", "starter", "pro", "pro", "enterprise"]
OSES = ["Mac OS X", "Windows", "iOS", "Android", "Linux"]
BROWSERS = ["Chrome", "Safari", "Firefox", "Edge", "Mobile Safari"]
REFERRERS = ["$direct", "www.google.com", "news.ycombinator.com", "twitter.com", "www.bing.com"]
COUNTRIES = ["US", "GB", "DE", "FR", "IN", "BR", "CA", "NL"]


# -- the persons -------------------------------------------------------------------------------------------------
@dataclass
class Person:
    person_id: str
    #: oldest link first (the anonymous UUID, then the identified id)
    distinct_ids: list[str]
    properties: dict[str, Any]
    created_at: datetime
    inserted_at: datetime
    version: int
    identified: bool


def make_persons(count: int, seed: int, now: datetime) -> list[Person]:
    """``count`` persons: index % 3 == 0 anonymous (one UUID distinct_id), the others identified (two)."""
    rng = random.Random(seed)
    persons = []
    for index in range(count):
        anonymous_id = str(uuidlib.UUID(int=rng.getrandbits(128), version=4))
        created = now - timedelta(days=rng.uniform(30, 700))
        properties: dict[str, Any] = {
            "$initial_os": rng.choice(OSES),
            "$initial_browser": rng.choice(BROWSERS),
            "$initial_referring_domain": rng.choice(REFERRERS),
            "$geoip_country_code": rng.choice(COUNTRIES),
        }
        identified = index % 3 != 0
        distinct_ids = [anonymous_id]
        if identified:
            first, last = rng.choice(FIRST), rng.choice(LAST)
            email = f"{first.lower()}.{last.lower()}{index}@{rng.choice(DOMAINS)}"
            properties.update(
                {
                    "email": email,
                    "name": f"{first} {last}",
                    "plan": rng.choice(PLANS),
                    "company": rng.choice(COMPANIES),
                    "seats": rng.randint(1, 250),
                    "signed_up_at": (created + timedelta(minutes=rng.randint(1, 600))).isoformat(),
                }
            )
            distinct_ids.append(email if rng.random() < 0.5 else f"usr_{index:08d}")
        persons.append(
            Person(
                person_id=str(uuidlib.UUID(int=rng.getrandbits(128), version=4)),
                distinct_ids=distinct_ids,
                properties=properties,
                created_at=created,
                inserted_at=now - timedelta(days=rng.uniform(1, 29)),
                version=rng.randint(1, 6),
                identified=identified,
            )
        )
    return persons


def change_some(persons: list[Person], share: float, seed: int, now: datetime) -> tuple[int, int]:
    """Change one attribute of ``share`` of the persons (newer version, inserted now); (changed, identified)."""
    rng = random.Random(seed + 1)
    chosen = rng.sample(range(len(persons)), round(share * len(persons)))
    for index in chosen:
        person = persons[index]
        if person.identified:
            person.properties["plan"] = next(
                p for p in ("pro", "enterprise", "starter") if p != person.properties["plan"]
            )
        else:
            person.properties["$geoip_country_code"] = (
                "JP" if person.properties["$geoip_country_code"] != "JP" else "KR"
            )
        person.version += 1
        person.inserted_at = now
    return len(chosen), sum(1 for index in chosen if persons[index].identified)


def export_rows(persons: list[Person]) -> list[dict[str, Any]]:
    """PostHog's persons model: one row per distinct_id (``sql/persons.py`` in PostHog's batch exports)."""
    rows = []
    for person in persons:
        for version, distinct_id in enumerate(person.distinct_ids):
            rows.append(
                {
                    "team_id": TEAM_ID,
                    "distinct_id": distinct_id,
                    "person_id": person.person_id,
                    "properties": person.properties,
                    "person_distinct_id_version": version,
                    "person_version": person.version,
                    "created_at": person.created_at,
                    "_inserted_at": person.inserted_at,
                    "is_deleted": False,
                }
            )
    return rows


def write_export(persons: list[Person], directory: Path, fmt: str) -> Path:
    """The export as PostHog's S3 destination names and writes it; returns its directory."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = export_rows(persons)
    stem = "2025-06-01T00:00:00+00:00-2025-06-01T01:00:00+00:00"
    if fmt in ("jsonl", "zstd"):
        text = "".join(json.dumps(row, default=lambda v: v.isoformat()) + "\n" for row in rows).encode()
        if fmt == "zstd":
            import zstandard

            (directory / f"{stem}.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(text))
        else:
            (directory / f"{stem}.jsonl").write_bytes(text)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema(
            [
                ("team_id", pa.int64()),
                ("distinct_id", pa.string()),
                ("person_id", pa.string()),
                ("properties", pa.string()),  # PostHog keeps the JSON columns as JSON text in Parquet
                ("person_distinct_id_version", pa.int64()),
                ("person_version", pa.int64()),
                ("created_at", pa.timestamp("us", tz="UTC")),
                ("_inserted_at", pa.timestamp("us", tz="UTC")),
                ("is_deleted", pa.bool_()),
            ]
        )
        columns = {name: [row[name] for row in rows] for name in schema.names}
        columns["properties"] = [json.dumps(value) for value in columns["properties"]]
        pq.write_table(pa.table(columns, schema=schema), directory / f"{stem}.parquet.zst", compression="zstd")
    else:
        raise ValueError(fmt)
    return directory


def api_person(person: Person) -> dict[str, Any]:
    """The person as PostHog's persons list returns it."""
    return {
        "id": person.person_id,
        "uuid": person.person_id,
        "name": person.properties.get("email", person.person_id),
        "distinct_ids": list(person.distinct_ids),
        "properties": dict(person.properties),
        "created_at": person.created_at.isoformat().replace("+00:00", "Z"),
        "is_identified": person.identified,
    }


# -- running the command ----------------------------------------------------------------------------------------
def sandbox_requests(box: Sandbox) -> list[dict[str, Any]]:
    return box.get("/_sandbox/requests") + box.get("/_sandbox/pipelines/requests")


def run_once(args: list[str], env: dict[str, str], box: Sandbox, seen_before: int) -> dict[str, Any]:
    finished = run_measured([*cli_command(), "sync-persons", *args, "--json"], env)
    if finished.returncode != 0:
        raise RuntimeError(f"sync-persons exited {finished.returncode}: {finished.stderr[-3000:]}")
    summary = json.loads(finished.stdout)
    entries = sandbox_requests(box)[seen_before:]
    statuses: dict[str, int] = {}
    for entry in entries:
        statuses[str(entry.get("status"))] = statuses.get(str(entry.get("status")), 0) + 1
    return {
        "summary": summary,
        "wall_s": finished.seconds,
        "max_rss_mb": finished.max_rss_mb,
        "requests": len(entries),
        "body_bytes": sum(int(entry.get("bytes") or 0) for entry in entries),
        "statuses": statuses,
        "seen": seen_before + len(entries),
    }


def run_arm(arm: str, persons: list[Person], args: argparse.Namespace, box: Sandbox, work: Path) -> list[dict]:
    """First, second and changed runs of one arm (one data dir, the sandbox reset before the first)."""
    box.reset()
    extra = {"CUSTOMERIO_API": ARM_API.get(arm, "v2")}
    people = [Person(**{**vars(p), "properties": dict(p.properties)}) for p in persons]  # the arm's own copy
    results: list[dict[str, Any]] = []
    seen = 0
    with contextlib.ExitStack() as stack:
        standin = None
        if arm == "api":
            from tests.posthog_api_standin import STANDIN_KEY, PersonsStandin, running_persons_standin

            standin = PersonsStandin(0)  # default_limit=100: PostHog's page size
            standin.persons = [api_person(p) for p in people]
            url = stack.enter_context(running_persons_standin(standin))
            extra.update(
                {
                    "POSTHOG_API_HOST": url,
                    "POSTHOG_PROJECT_ID": standin.project_id,
                    "POSTHOG_PERSONAL_API_KEY": STANDIN_KEY,
                    "POSTHOG_API_MAX_PER_MINUTE": "100000",
                }
            )
        env = {k: v for k, v in base_env(box, work / f"data-{arm}").items() if not k.startswith(POSTHOG_KEYS)}
        env.update(extra)
        for run in ("first", "second", "changed"):
            changed = (0, 0)
            if run == "changed":
                changed = change_some(people, args.changed, args.seed, datetime.now(UTC))
            if standin is not None:
                standin.persons = [api_person(p) for p in people]
                posthog_before = len(standin.requests)
                command: list[str] = []
            else:
                command = ["--from", str(write_export(people, work / f"export-{arm}-{run}", ARM_FORMAT[arm]))]
            result = run_once(command, env, box, seen)
            seen = result.pop("seen")
            result.update({"arm": arm, "run": run, "changed": changed})
            if standin is not None:
                result["posthog_requests"] = len(standin.requests) - posthog_before
                result["posthog_statuses"] = sorted({seen_.status for seen_ in standin.requests[posthog_before:]})
            stats = box.stats()
            result["sandbox_people"] = stats["people"]
            results.append(result)
            s = result["summary"]
            print(
                f"  {arm:9} {run:7} read {s['read']:,}, {s['operations_enqueued']:,} operations {s['actions']},"
                f" skipped {s['skipped']}, {result['requests']:,} requests {result['statuses']},"
                f" {result['wall_s']:.2f} s wall / {s['seconds']} s in the command, sandbox people {stats['people']:,}"
                + (f", PostHog requests {result['posthog_requests']} {result['posthog_statuses']}" if standin else ""),
                flush=True,
            )
    return results


def startup_seconds(env: dict[str, str]) -> float:
    """Wall time of ``posthog-customerio --version`` (Python start-up and imports), median of 3."""
    times = sorted(run_measured([*cli_command(), "--version"], env).seconds for _ in range(3))
    return times[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--changed", type=float, default=0.05, help="share of persons changed for the third run")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated subset of " + ",".join(ARMS))
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = set(arms) - set(ARMS)
    if unknown:
        parser.error(f"unknown arms: {', '.join(sorted(unknown))}")
    if "api" in arms and args.persons > CLIENT_PER_HOUR * PAGE:
        parser.error(
            f"the api arm reads {PAGE} persons a page and the command makes at most {CLIENT_PER_HOUR:,} requests an"
            f" hour to PostHog (not a setting): more than {CLIENT_PER_HOUR * PAGE:,} persons would wait for the hour"
        )
    sys.path.insert(0, str(ROOT))  # tests.posthog_api_standin

    started = time.monotonic()
    persons = make_persons(args.persons, args.seed, datetime.now(UTC))
    identified = sum(1 for p in persons if p.identified)
    print(f"# sync-persons -- {machine()}", flush=True)
    print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1/5/15 min)")
    print(
        f"{args.persons:,} persons ({identified:,} identified with 2 distinct_ids, {args.persons - identified:,}"
        f" anonymous with 1), seed {args.seed}; changed run: {args.changed:.0%} of the persons",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-sync-persons-") as tmp, sandbox_process() as box:
        work = Path(tmp)
        sample = write_export(persons, work / "size-jsonl", "jsonl")
        size = sum(f.stat().st_size for f in sample.iterdir())
        print(f"export: {sum(len(p.distinct_ids) for p in persons):,} rows, {size / 1e6:.1f} MB as JSONL", flush=True)
        startup = startup_seconds(base_env(box, work / "data-startup"))
        print(f"`posthog-customerio --version` (start-up): {startup:.2f} s", flush=True)
        for arm in arms:
            results.extend(run_arm(arm, persons, args, box, work))
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1/5/15 min)")

    rows = []
    for r in results:
        s = r["summary"]
        read = s["read"] or 1
        rows.append(
            [
                LABELS[r["arm"]],
                r["run"]
                + (f" ({r['changed'][0]:,} changed, {r['changed'][1]:,} identified)" if r["run"] == "changed" else ""),
                f"{s['read']:,}",
                f"{r['wall_s']:.2f}",
                f"{s['read'] / r['wall_s']:,.0f}",
                f"{s['seconds']:.2f}",
                f"{r['requests']:,}",
                f"{1000 * r['requests'] / read:.2f}",
                f"{s['operations_enqueued']:,}",
                f"{s['operations_enqueued'] / read:.3f}",
                f"{r['body_bytes'] / read:.0f}",
                f"{r['max_rss_mb']:.0f}",
                f"{r['posthog_requests']}" if "posthog_requests" in r else "",
            ]
        )
    print()
    print(
        table(
            [
                "arm",
                "run",
                "persons",
                "wall s",
                "persons/s (wall)",
                "command s",
                "CIO requests",
                "requests / 1,000 persons",
                "operations",
                "operations / person",
                "body B / person",
                "peak RSS MB",
                "PostHog requests",
            ],
            rows,
        )
    )
    per_hour = POSTHOG_PER_HOUR * PAGE
    print(
        f"\nPostHog's real limits: {POSTHOG_PER_MINUTE} requests/min and {POSTHOG_PER_HOUR:,}/hour per project; at"
        f" {PAGE} persons a page that is at most {POSTHOG_PER_MINUTE * PAGE:,} persons/min"
        f" ({POSTHOG_PER_MINUTE * PAGE / 60:,.0f}/s) and {per_hour:,} persons/hour; the command's default pacing"
        f" (POSTHOG_API_MAX_PER_MINUTE={CLIENT_PER_MINUTE}, {CLIENT_PER_HOUR:,}/hour) reads at most"
        f" {CLIENT_PER_MINUTE * PAGE:,} persons in any minute ({CLIENT_PER_MINUTE * PAGE / 60:.0f}/s sustained)"
        f" and {CLIENT_PER_HOUR * PAGE:,} persons/hour. The API arm ran with POSTHOG_API_MAX_PER_MINUTE=100000:"
        " our side only."
    )
    elapsed = time.monotonic() - started
    print(f"start-up of the command alone: {startup:.2f} s (in every wall time); the bench took {elapsed:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps({"persons": args.persons, "startup_s": startup, "results": results}, indent=2, default=str)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
