"""Identified people first: person-event latency under heavy anonymous traffic, before and after, side by side.

    python bench/people_first.py [--rates 400,1000] [--duration 60] [--before 9ed8b57] [--after-src DIR]
                                 [--holds 5,300] [--settle 30] [--drain 300]
    python bench/people_first.py --duration 10 --rates 100          # smoke

Per rate, arms run one after the other, each against a fresh local Customer.io stand-in:

* **Track v2 before**: ``src/`` of the git ref ``--before`` (default ``9ed8b57``, main before the people-first
  delivery), exported with ``git archive`` to a temporary directory and run from there (``PYTHONPATH``);
* **Track v2 after**: the ``src/`` of ``--after-src`` (default: this checkout's ``src/``);
* **Pipelines** (after): ``CUSTOMERIO_API=pipelines``;
* with ``--holds 5,300``: more "after" Track v2 arms with ``ANONYMOUS_HOLD_S`` set to each value.

``serve`` runs in its own process with its defaults (``CUSTOMERIO_MAX_RPS=100``, ``--max-rps``), pointed at the
**stand-in** (its own process, 127.0.0.1): Track v1/v2 and Pipelines endpoints, parsed just enough to find the
events in them, answering 429 with ``Retry-After: 1`` above ``--standin-rps`` (100) requests in any one second
and 200 otherwise. It records, for every event it accepts, when and as what (a person's event or an anonymous
one): each generated event carries a ``bench_id`` property, which the mapping passes on as event data (Track
``attributes`` / v1 ``data`` / Pipelines ``properties``).

The **load** (its own process, ``loadgen.Connection``): one posthog-js-shaped event per POST to ``/webhook``
(the PostHog webhook destination's body), open loop: every event has a planned send time and its latency runs
from that time (no coordinated omission). The plan, seeded: ~55% of the events are identified customers' (a pool of
``--customers``), ~45% come from visitors (``$device_id``, ``$is_identified: false``, a few page views seconds
apart); ~30% of the visitors identify (``$identify`` with ``$anon_distinct_id``) after a log-uniform 2-180 s
delay (later identifies fall after the run and are not sent) and their later events are a person's.

Per arm: **person-event latency** (planned send -> accepted by the stand-in) p50/p99 per fifth of the run (by
send time); requests per 1,000 events and the 429s; then, ``--settle`` s after the load, the service's
``/api/status`` (and ``/metrics``) ``anonymous`` section if it has one (``n/a`` if not) beside what the stand-in
saw of the visitors' events (delivered as anonymous, delivered in a person's request = adopted, not yet); finally
a drain (at most ``--drain`` s) until every person event sent was accepted: the rest are reported as not
delivered ("no person event lost").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid as uuidlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, Reply, StandIn, base_env, machine, serve_json, start_server, stop, table

SCRIPT = Path(__file__).resolve()
DEFAULT_BEFORE = "9ed8b57"


# -- the Customer.io stand-in (its own process) ---------------------------------------------------
class StandInState:
    """What the stand-in has seen: accepted events (first acceptance per bench_id), requests, 429s.

    Customer.io's Track API documents a fair-use limit of about 100 requests per second and answers
    429 Too Many Requests above it (https://docs.customer.io/integrations/api/track/ , "Limits"); the
    stand-in enforces the same with a sliding one-second window over the requests it accepted.
    """

    def __init__(self, rps: int) -> None:
        self.rps = rps
        self.lock = threading.Lock()
        self.window: deque[float] = deque()
        self.accepted: dict[str, tuple[float, str]] = {}  # bench_id -> (time.time() accepted, "person"/"anonymous")
        self.duplicates = 0
        self.requests: dict[str, int] = {}  # "200 /api/v2/batch" -> count
        self.throttled = 0
        self.unparsed = 0

    def admit(self, now: float) -> bool:
        with self.lock:
            while self.window and self.window[0] <= now - 1.0:
                self.window.popleft()
            if len(self.window) >= self.rps:
                self.throttled += 1
                return False
            self.window.append(now)
            return True

    def count(self, key: str) -> None:
        with self.lock:
            self.requests[key] = self.requests.get(key, 0) + 1

    def record(self, found: list[tuple[str, str]]) -> None:
        now = time.time()
        with self.lock:
            for bench_id, kind in found:
                if bench_id in self.accepted:
                    self.duplicates += 1
                else:
                    self.accepted[bench_id] = (now, kind)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            kinds: dict[str, int] = {}
            for _, kind in self.accepted.values():
                kinds[kind] = kinds.get(kind, 0) + 1
            return {
                "requests": dict(self.requests),
                "throttled": self.throttled,
                "accepted_events": len(self.accepted),
                "by_kind": kinds,
                "duplicates": self.duplicates,
                "unparsed": self.unparsed,
            }


def _bench_id(data: Any) -> str | None:
    if isinstance(data, dict):
        value = data.get("bench_id")
        return str(value) if value is not None else None
    return None


def parse_events(method: str, path: str, body: Any) -> list[tuple[str, str]]:
    """(bench_id, kind) of the events in one Track v1/v2 or Pipelines request (identifies etc. carry none)."""
    found: list[tuple[str, str]] = []
    if not isinstance(body, dict):
        return found
    if path in ("/api/v2/batch", "/api/v2/entity"):
        items = body.get("batch") if path.endswith("batch") else [body]
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and item.get("action") in ("event", "page", "screen"):
                bench_id = _bench_id(item.get("attributes"))
                if bench_id:
                    found.append((bench_id, "person" if item.get("type") == "person" else str(item.get("type"))))
    elif path == "/api/v1/events":  # anonymous events (Track v1)
        bench_id = _bench_id(body.get("data"))
        if bench_id:
            found.append((bench_id, "anonymous"))
    elif path.startswith("/api/v1/customers/") and path.endswith("/events"):
        bench_id = _bench_id(body.get("data"))
        if bench_id:
            found.append((bench_id, "person"))
    elif path.startswith("/v1/"):  # Pipelines: /v1/batch or one call
        calls = body.get("batch") if path == "/v1/batch" else [{"type": path.rsplit("/", 1)[-1], **body}]
        for call in calls if isinstance(calls, list) else []:
            if isinstance(call, dict) and call.get("type") in ("track", "page", "screen"):
                bench_id = _bench_id(call.get("properties"))
                if bench_id:
                    found.append((bench_id, "person" if call.get("userId") else "anonymous"))
    return found


def serve_standin(port: int, rps: int) -> None:
    state = StandInState(rps)

    def route(method: str, path: str, raw: bytes) -> Reply:
        if path.startswith("/_bench/"):
            if path == "/_bench/stats":
                return Reply(200, state.stats())
            if path == "/_bench/accepted":
                with state.lock:
                    accepted = dict(state.accepted)
                return Reply(200, accepted)
            return Reply(404, {})
        key = path
        if path.startswith("/api/v1/customers/"):
            key = "/api/v1/customers/…" + ("/events" if path.endswith("/events") else "")
        if not state.admit(time.monotonic()):
            state.count(f"429 {method} {key}")
            return Reply(429, {"meta": {"error": "rate limited"}}, {"Retry-After": "1"})
        state.count(f"200 {method} {key}")
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            with state.lock:
                state.unparsed += 1
            body = None
        state.record(parse_events(method, path, body))
        return Reply(200, {})  # the sandbox's answer to a v2 batch without errors, and to v1 / Pipelines

    serve_json(port, route)


# -- the event plan ---------------------------------------------------------------------------------------
_PAGES = ["/", "/pricing", "/features", "/blog/how-we-sync", "/docs/getting-started", "/signup"]
_APP_PAGES = ["/dashboard", "/projects", "/reports", "/settings/team", "/integrations"]
_FEATURES = ["dashboard_export", "sql_editor", "alerts", "share_link", "csv_import"]
_PROJECT = {"id": 1, "name": "Acme (bench)", "url": "https://us.posthog.com/project/1"}


def _uuid7(ms: int, rng: random.Random) -> str:
    rand = rng.getrandbits(74)
    value = ((ms & 0xFFFF_FFFF_FFFF) << 80) | (0x7 << 76) | ((rand >> 62) << 64)
    value |= (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuidlib.UUID(int=value))


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


@dataclass
class Planned:
    offset: float  # seconds after the load starts
    kind: str  # "person" (an identified person's event), "anonymous" (a visitor's), "identify"
    body: dict[str, Any] = field(repr=False)
    bench_id: str = ""


def build_plan(rate: float, duration: float, seed: int, customers: int) -> list[Planned]:
    """The seeded stream: ~55% customers' events, ~45% visitors' (30% of visitors identify later)."""
    rng = random.Random(f"people-first:{seed}:{rate}:{duration}")
    base_ms = int(time.time() * 1000)  # a few seconds before the load starts, as a webhook lags its events
    plan: list[Planned] = []

    def body(
        offset: float, name: str, distinct_id: str, props: dict[str, Any], person: dict[str, Any] | None
    ) -> dict[str, Any]:
        ms = base_ms + int(offset * 1000)
        uuid = _uuid7(ms, rng)
        event = {
            "uuid": uuid,
            "event": name,
            "distinct_id": distinct_id,
            "properties": props,
            "elements_chain": "",
            "timestamp": _iso(ms),
            "url": f"https://us.posthog.com/project/1/events/{uuid}",
        }
        out: dict[str, Any] = {"event": event}
        if person is not None:
            out["person"] = {
                "id": str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, distinct_id)),
                "name": person.get("email", distinct_id),
                "url": f"https://us.posthog.com/project/1/person/{distinct_id}",
                "properties": person,
            }
        out["project"] = dict(_PROJECT)
        return out

    def web(device: str, session: str, identified: bool, path: str) -> dict[str, Any]:
        host = "app.acme.example" if path in _APP_PAGES else "www.acme.example"
        props: dict[str, Any] = {
            "$os": "Mac OS X",
            "$browser": "Chrome",
            "$browser_version": "131.0.0.0",
            "$device_type": "Desktop",
            "$current_url": f"https://{host}{path}",
            "$host": host,
            "$pathname": path,
            "$lib": "web",
            "$lib_version": "1.205.0",
            "$session_id": session,
            "$device_id": device,
            "$is_identified": identified,
        }
        if not identified:
            props["$process_person_profile"] = False
        return props

    # identified customers: a pool, events spread uniformly over the run
    people = [
        {"id": f"customer-{k:06d}", "email": f"customer{k}@example.com", "name": f"Customer {k}", "plan": "pro"}
        for k in range(customers)
    ]
    devices = [_uuid7(base_ms - 86_400_000, rng) for _ in range(customers)]
    for _ in range(int(0.55 * rate * duration)):
        offset = rng.uniform(0, duration)
        k = rng.randrange(customers)
        person = people[k]
        props = web(devices[k], devices[k], True, rng.choice(_APP_PAGES))
        name = "$pageview"
        if rng.random() < 0.5:
            name = "feature_used"
            props.update({"feature": rng.choice(_FEATURES), "duration_ms": rng.randint(200, 90_000)})
        attrs = {key: value for key, value in person.items() if key != "id"}
        plan.append(Planned(offset, "person", body(offset, name, person["id"], props, attrs)))
    # visitors: ~4 page views each, 2-20 s apart, arriving from before the run (a steady state) until its end,
    # until their events in the run make ~45% of it; 30% identify after a log-uniform 2-180 s delay
    mean_views = 4.0
    target = int(0.45 * rate * duration)
    in_run = 0
    v = 0
    while in_run < target:
        v += 1
        start = rng.uniform(-40.0, duration)
        anon = _uuid7(base_ms + int(start * 1000), rng)
        session = _uuid7(base_ms + int(start * 1000), rng)
        views = max(1, min(8, round(rng.expovariate(1 / mean_views))))
        identify_at = start + math.exp(rng.uniform(math.log(2.0), math.log(180.0))) if rng.random() < 0.30 else None
        user = {"id": f"visitor-{seed}-{v:07d}", "email": f"visitor{v}@example.com", "name": f"Visitor {v}"}
        attrs = {key: value for key, value in user.items() if key != "id"}
        t = start
        for _ in range(views):
            identified = identify_at is not None and t >= identify_at
            if 0 <= t < duration:
                in_run += 1
                props = web(anon, session, identified, rng.choice(_APP_PAGES if identified else _PAGES))
                distinct = user["id"] if identified else anon
                kind = "person" if identified else "anonymous"
                plan.append(Planned(t, kind, body(t, "$pageview", distinct, props, attrs if identified else None)))
            t += rng.uniform(2.0, 20.0)
        if identify_at is not None and 0 <= identify_at < duration:
            props = web(anon, session, True, "/onboarding")
            props["$anon_distinct_id"] = anon
            props["$set"] = {"email": user["email"], "name": user["name"]}
            plan.append(Planned(identify_at, "identify", body(identify_at, "$identify", user["id"], props, attrs)))
    plan.sort(key=lambda p: p.offset)
    for number, planned in enumerate(plan):
        planned.bench_id = f"r{rate:g}-{number}"  # unique across rates too
        planned.body["event"]["properties"]["bench_id"] = planned.bench_id
    return plan


def write_plan(plan: list[Planned], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for planned in plan:
            line = json.dumps(planned.body, separators=(",", ":"), ensure_ascii=False)
            out.write(f"{planned.offset:.6f}\t{planned.bench_id}\t{line}\n")


# -- the load generator (its own process) ----------------------------------------------------------------
async def open_load(url: str, plan_file: Path, connections: int) -> dict[str, Any]:
    from loadgen import Connection, _target

    host, port, path = _target(url)
    rows = []
    for line in plan_file.read_bytes().splitlines():
        offset, bench_id, body = line.split(b"\t", 2)
        rows.append((float(offset), bench_id.decode(), body))
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        conn = Connection(host, port, path, {})
        await conn.open()
        pool.put_nowait(conn)
    statuses: dict[str, int] = {}
    failed: list[str] = []
    answered: dict[str, float] = {}  # bench_id -> time.time() of its 200 (the event is in the outbox)
    webhook: list[float] = []
    tasks = []

    async def one(scheduled: float, bench_id: str, body: bytes) -> None:
        conn = await pool.get()
        try:
            status = await conn.post(body)
        except (OSError, asyncio.IncompleteReadError):
            status = 0
            conn.close()
        finally:
            pool.put_nowait(conn)
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        webhook.append(time.perf_counter() - scheduled)
        if status != 200:
            failed.append(bench_id)
        else:
            answered[bench_id] = time.time()

    started_wall = time.time()
    started = time.perf_counter()
    for offset, bench_id, body in rows:
        delay = started + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(started + offset, bench_id, body)))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=(rows[-1][0] if rows else 0) + 120)
    seconds = time.perf_counter() - started
    while not pool.empty():
        pool.get_nowait().close()
    webhook.sort()
    return {
        "started_at": started_wall,  # planned send time of an event = started_at + its offset
        "events": len(rows),
        "seconds": seconds,
        "achieved_rate": len(rows) / seconds if seconds else 0.0,
        "statuses": statuses,
        "failed": failed,
        "answered": answered,
        "webhook_p50_ms": 1000 * _rank(webhook, 0.50) if webhook else float("nan"),
        "webhook_p99_ms": 1000 * _rank(webhook, 0.99) if webhook else float("nan"),
    }


def _rank(values: list[float], quantile: float) -> float:
    return values[min(len(values) - 1, max(0, math.ceil(quantile * len(values)) - 1))]


# -- one arm ------------------------------------------------------------------------------------------------
@dataclass
class Arm:
    name: str
    src: Path
    env: dict[str, str]

    def label(self, run: str) -> str:
        """A file-name-safe name of this arm in one run (``run``: e.g. the plan's name)."""
        return f"{run}-" + "".join(c if c.isalnum() or c in "-." else "_" for c in self.name)


class Service:
    """``python -m posthog_customerio serve`` from a given ``src/`` (``PYTHONPATH``), on a free loopback port."""

    def __init__(self, src: Path, env: dict[str, str], log: Path) -> None:
        env = {**env, "PYTHONPATH": str(src)}
        self.log = open(log, "wb")  # noqa: SIM115 (closed in close())
        command = [sys.executable, "-m", "posthog_customerio", "serve", "--host", "127.0.0.1"]
        self.url, self.process = start_server(command, "/healthz", env=env, output=self.log, timeout=120)

    def get(self, path: str) -> Any:
        import httpx

        response = httpx.get(self.url + path, timeout=60)
        return response.json() if "json" in response.headers.get("content-type", "") else response.text

    def close(self) -> None:
        stop(self.process, timeout=60)
        self.log.close()


def run_arm(arm: Arm, plan: list[Planned], plan_file: Path, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    label = arm.label(plan_file.stem)  # a fresh data dir per arm and rate: nothing carried over between runs
    box = StandIn.start(SCRIPT, "--rps", str(args.standin_rps))
    env = base_env(box, workdir / f"data-{label}", SQLITE_SYNCHRONOUS="NORMAL", **arm.env)
    env["CUSTOMERIO_MAX_RPS"] = str(args.max_rps)
    env["CUSTOMERIO_PIPELINES_API_KEY"] = "bench"
    service = Service(arm.src, env, workdir / f"serve-{label}.log")
    result: dict[str, Any] = {"arm": arm.name}
    try:
        time.sleep(1.0)
        load_out = workdir / f"load-{label}.json"
        command = [sys.executable, str(SCRIPT), "_load", "--url", service.url + "/webhook", "--plan", str(plan_file)]
        command += ["--out", str(load_out), "--connections", str(args.connections)]
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=args.duration + 600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"load failed: {done.stderr[-2000:]}")
        load = json.loads(load_out.read_text())
        result["load"] = load
        print(f"    load done: {load['events']} events at {load['achieved_rate']:.0f}/s {load['statuses']}", flush=True)
        time.sleep(args.settle)
        result["at_settle"] = box.get("/_bench/accepted")
        result["status"] = service.get("/api/status")
        metrics = service.get("/metrics")
        result["metrics"] = metrics if isinstance(metrics, str) else ""
        # the drain: until every person event sent was accepted (or the deadline)
        failed = set(load["failed"])
        person_ids = {p.bench_id for p in plan if p.kind == "person" and p.bench_id not in failed}
        deadline = time.monotonic() + args.drain
        started = time.monotonic()
        while True:
            accepted = box.get("/_bench/accepted")
            missing = person_ids - accepted.keys()
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(2.0)
        result["drain_s"] = time.monotonic() - started
        result["drain_deadline_s"] = args.drain
        result["accepted"] = accepted
        result["standin"] = box.get("/_bench/stats")
        result["status_end"] = service.get("/api/status")
    finally:
        service.close()
        box.close()
    return result


# -- figures -----------------------------------------------------------------------------------------------
def figures(result: dict[str, Any], plan: list[Planned], duration: float) -> dict[str, str]:
    load = result["load"]
    started = load["started_at"]
    failed = set(load["failed"])
    sent = [p for p in plan if p.bench_id not in failed]
    persons = [p for p in sent if p.kind == "person"]
    anonymous = [p for p in sent if p.kind == "anonymous"]
    accepted = result["accepted"]
    settle = result["at_settle"]
    out: dict[str, str] = {}
    out["events offered / achieved per s"] = f"{len(plan) / duration:.0f} / {load['achieved_rate']:.0f}"
    out["webhook p50 / p99 ms"] = f"{load['webhook_p50_ms']:.1f} / {load['webhook_p99_ms']:.1f}"
    out["events sent (person / anonymous / identify)"] = (
        f"{len(persons)} / {len(anonymous)} / {sum(p.kind == 'identify' for p in sent)}"
    )
    fifth = duration / 5
    for part in range(5):
        latencies = sorted(
            accepted[p.bench_id][0] - (started + p.offset)
            for p in persons
            if part * fifth <= p.offset < (part + 1) * fifth and p.bench_id in accepted
        )
        key = f"person latency p50 / p99 s, fifth {part + 1}"
        out[key] = f"{_rank(latencies, 0.5):.2f} / {_rank(latencies, 0.99):.2f}" if latencies else "n/a"
    total = sorted(accepted[p.bench_id][0] - (started + p.offset) for p in persons if p.bench_id in accepted)
    out["person latency p50 / p99 s, whole run"] = (
        f"{_rank(total, 0.5):.2f} / {_rank(total, 0.99):.2f}" if total else "n/a"
    )
    # delivery only: from the webhook's 200 (the event is in the outbox) to the stand-in, by fifth of send time
    answered = load.get("answered") or {}
    p50s, p99s = [], []
    for part in range(5):
        latencies = sorted(
            accepted[p.bench_id][0] - answered[p.bench_id]
            for p in persons
            if part * fifth <= p.offset < (part + 1) * fifth and p.bench_id in accepted and p.bench_id in answered
        )
        p50s.append(f"{_rank(latencies, 0.5):.2f}" if latencies else "n/a")
        p99s.append(f"{_rank(latencies, 0.99):.2f}" if latencies else "n/a")
    out["delivery only (webhook 200 -> stand-in) p50 s, fifths 1-5"] = " / ".join(p50s)
    out["delivery only (webhook 200 -> stand-in) p99 s, fifths 1-5"] = " / ".join(p99s)
    stats = result["standin"]
    ok = sum(count for key, count in stats["requests"].items() if key.startswith("200 "))
    out["requests accepted / 1,000 events, by the drain's end"] = f"{1000 * ok / max(1, len(sent)):.1f} ({ok})"
    by_status = (result["status_end"].get("delivery") or {}).get("requests_by_status")
    counted = by_status.get("429", 0) if isinstance(by_status, dict) else "n/a"
    out["429s (stand-in answered / service counted)"] = f"{stats['throttled']} / {counted}"
    # visitors' events, `settle` s after the load: what the stand-in saw
    as_anon = sum(1 for p in anonymous if settle.get(p.bench_id, (0, ""))[1] == "anonymous")
    adopted = sum(1 for p in anonymous if settle.get(p.bench_id, (0, ""))[1] == "person")
    out["anonymous events after settle: as anonymous / adopted / not yet"] = (
        f"{as_anon} / {adopted} / {len(anonymous) - as_anon - adopted}"
    )
    section = _anonymous_section(result["status"])

    def field_(name: str) -> str:
        value = section.get(name)
        return "n/a" if value is None else str(value)

    expired = section.get("expired")
    expired_text = "n/a"
    if isinstance(expired, dict):
        expired_text = f"age {expired.get('age', 'n/a')}, count {expired.get('count', 'n/a')}"
    elif expired is not None:
        expired_text = str(expired)
    out["service anonymous: backlog / oldest age s / adopted"] = (
        f"{field_('backlog')} / {field_('oldest_age_s')} / {field_('adopted')}"
    )
    out["service anonymous: expired"] = expired_text
    outbox = result["status"].get("outbox", {}) if isinstance(result["status"], dict) else {}
    out["service outbox after settle: depth / oldest age s"] = (
        f"{outbox.get('depth', 'n/a')} / {outbox.get('oldest_age_s', 'n/a')}"
    )
    metric_lines = [line for line in result["metrics"].splitlines() if "anonymous" in line and not line.startswith("#")]
    out["/metrics series naming 'anonymous' (printed above)"] = str(len(metric_lines)) if metric_lines else "n/a"
    lost = sum(1 for p in persons if p.bench_id not in accepted)
    out["person events sent / accepted / NOT accepted by the drain's end"] = (
        f"{len(persons)} / {len(persons) - lost} / {lost}"
    )
    out["drain (s, deadline --drain)"] = f"{result['drain_s']:.0f} ({result['drain_deadline_s']:.0f})"
    out["duplicate acceptances"] = str(stats["duplicates"])
    return out


def _anonymous_section(status: Any) -> dict[str, Any]:
    """The status JSON's ``anonymous`` section (top level, or under ``outbox`` / ``delivery``); {} if absent."""
    if not isinstance(status, dict):
        return {}
    for holder in (status, status.get("outbox"), status.get("delivery")):
        if isinstance(holder, dict) and isinstance(holder.get("anonymous"), dict):
            return holder["anonymous"]
    return {}


# -- main ----------------------------------------------------------------------------------------------------
def export_src(ref: str, into: Path) -> Path:
    """``git archive <ref> src`` of this repository, unpacked under ``into``: its ``src/``."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def arms(args: argparse.Namespace, before_src: Path) -> list[Arm]:
    after = Path(args.after_src).resolve()
    chosen = [
        Arm(f"Track v2 before ({args.before})", before_src, {"CUSTOMERIO_API": "v2"}),
        Arm("Track v2 after", after, {"CUSTOMERIO_API": "v2"}),
        Arm("Pipelines (after)", after, {"CUSTOMERIO_API": "pipelines"}),
    ]
    for hold in [h.strip() for h in args.holds.split(",") if h.strip()]:
        chosen.append(Arm(f"Track v2 after, ANONYMOUS_HOLD_S={hold}", after, {"ANONYMOUS_HOLD_S": hold}))
    names = [a.strip() for a in args.arms.split(",") if a.strip()]
    return [arm for arm in chosen if not names or any(arm.name.startswith(n) for n in names)]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_standin"]:
        sub = argparse.ArgumentParser()
        sub.add_argument("--port", type=int, required=True)
        sub.add_argument("--rps", type=int, default=100)
        known = sub.parse_args(argv[1:])
        serve_standin(known.port, known.rps)
        return 0
    if argv[:1] == ["_load"]:
        sub = argparse.ArgumentParser()
        sub.add_argument("--url", required=True)
        sub.add_argument("--plan", type=Path, required=True)
        sub.add_argument("--out", type=Path, required=True)
        sub.add_argument("--connections", type=int, default=64)
        known = sub.parse_args(argv[1:])
        result = asyncio.run(open_load(known.url, known.plan, known.connections))
        known.out.write_text(json.dumps(result))
        return 0

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="400,1000", help="offered events/s, one event per POST")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load per arm")
    parser.add_argument("--before", default=DEFAULT_BEFORE, help="git ref of the 'before' arm")
    parser.add_argument("--after-src", default=str(ROOT / "src"), help="src/ directory of the 'after' arms")
    parser.add_argument("--holds", default="", help="extra 'after' arms with these ANONYMOUS_HOLD_S values, e.g. 5,300")
    parser.add_argument("--arms", default="", help="run only arms whose names start with these (comma-separated)")
    parser.add_argument("--customers", type=int, default=5000, help="identified customers in the pool")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--settle", type=float, default=30.0, help="seconds after the load before reading status")
    parser.add_argument("--drain", type=float, default=300.0, help="at most this long for person events to arrive")
    parser.add_argument("--max-rps", type=float, default=100.0, help="the service's CUSTOMERIO_MAX_RPS")
    parser.add_argument("--standin-rps", type=int, default=100, help="the stand-in answers 429 above this")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections of the load")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, data dirs)")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="bench-people-", dir="/tmp"))
    tables: dict[str, dict[str, dict[str, str]]] = {}
    try:
        before_src = export_src(args.before, workdir / "before")
        chosen = arms(args, before_src)
        print(f"# people first -- {machine()}", flush=True)
        print(f"before = {args.before} (exported), after = {args.after_src}; work dir {workdir}", flush=True)
        for rate_text in [r.strip() for r in args.rates.split(",") if r.strip()]:
            rate = float(rate_text)
            plan_file = workdir / f"plan-{rate_text}.tsv"
            tables[rate_text] = {}
            for arm in chosen:
                print(f"  {rate_text}/s, {arm.name} ...", flush=True)
                # the same seeded stream for every arm, its event timestamps (and uuids) from now: an arm run
                # minutes after the first must not see its events as minutes old (age-based rules, ordering)
                plan = build_plan(rate, args.duration, args.seed, args.customers)
                write_plan(plan, plan_file)
                result = run_arm(arm, plan, plan_file, workdir, args)
                tables[rate_text][arm.name] = figures(result, plan, args.duration)
                (workdir / f"result-{arm.label(plan_file.stem)}.json").write_text(json.dumps(result, default=str))
                for line in result["metrics"].splitlines():
                    if "anonymous" in line and not line.startswith("#"):
                        print(f"    /metrics: {line}", flush=True)
                for key, value in tables[rate_text][arm.name].items():
                    if key.startswith(("person latency p50 / p99 s, whole", "requests", "person events")):
                        print(f"    {key}: {value}", flush=True)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"machine: {machine()}")
    print("person latency: planned send -> accepted by the stand-in, person events sent in that fifth of the run")
    for rate_text, by_arm in tables.items():
        names = list(by_arm)
        keys = list(next(iter(by_arm.values()))) if by_arm else []
        print(f"\n## {rate_text} events/s offered, {args.duration:.0f} s, one event per POST\n")
        print(table(["figure", *names], [[key, *(by_arm[name].get(key, "n/a") for name in names)] for key in keys]))
    if args.json:
        args.json.write_text(json.dumps(tables, indent=2))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
