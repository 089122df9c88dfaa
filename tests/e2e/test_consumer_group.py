"""A consumer group on one PostgreSQL outbox (issue 24, "How to prove it").

Real ``posthog-customerio consume`` processes (``python -m posthog_customerio consume``, as a user runs it) join
one Kafka consumer group and share one PostgreSQL outbox (one ``OUTBOX_URL``, one schema). The topic has
:data:`PARTITIONS` partitions and carries a PostHog-like stream of :data:`PEOPLE` people: each browses anonymously
(its own anonymous distinct_id), is identified by an ``$identify`` (``$anon_distinct_id`` and ``$set``: email,
plan, name), goes on with events, and changes attributes later (``$set`` events and ``$set`` inside events), every
person's timestamps increasing. The stream is produced in timestamp order while the group consumes it, in one of
two shapes:

* ``clickhouse_events_json`` (PostHog's processed events: ``properties`` and ``person_properties`` as JSON
  strings, ClickHouse timestamps), **keyed by the event uuid** as PostHog's plugin-server keys that topic: one
  person's events are spread over every partition, so the consumers read them in parallel and out of order;
* ``events_plugin_ingestion`` (capture's envelopes, ``data`` a JSON string), keyed by ``token:distinct_id`` as
  capture keys it: a distinct_id's events stay on one partition (a person's anonymous and identified ones may not).

The run (each step waits, with a deadline, for a share of the stream to be produced; production stops there
until the step is made, and goes on while the group rebalances):

1. consumers a, b, c start; the group is stable (every partition held once, by its log);
2. at 25 %: a is killed with SIGKILL (``kill -9``) right after storing a batch, before committing its offsets
   (``tests/consumer_group_child.py`` runs the same command and kills itself at its next offset commit; a kill
   at a random moment rarely hits that window); once b and c hold every partition, a is restarted (same command
   line and data dir, as a supervisor does);
3. at 45 %: a fourth consumer, d, joins;
4. at 60 %: b gets SIGTERM and must exit 0;
5. at 72 %: the sandbox answers 429 (``Retry-After: 1``) to every request for 3 s;
6. once everything is produced: wait until the committed offsets equal the end offsets and the outbox is empty,
   SIGTERM the rest (each must exit 0).

Each membership change waits for the group to be stable again before the next: Tansu (the test broker) stalls a
group whose membership changes during a rebalance (a member leaving while another joins: no partition assigned
for tens of seconds). Then the checks (all of them reported together, with numbers):

(a) nothing missing: every event id a clean single pass of the product's mapping sends reached the sandbox;
(b) no duplicate: no event id was accepted twice, counted in the sandbox's raw request log (its workspace
    dedupes), an anonymous and a person copy of one event counting as the same id -- except, once more, an event
    the killed consumer's workers held at the kill (sent or about to be, not yet settled: at-least-once delivery;
    the child writes their ids before it kills itself);
(c) no order inversion: for each identified person, its identified events in order of first arrival at the
    sandbox are in timestamp order;
(d) every person's final attributes (and email) are the newest PostHog set;
(e) the committed offsets equal the end offsets;
(f) no ERROR line in any consumer's output, and every consumer stopped by SIGTERM exits 0.

Seeded (``CONSUMER_GROUP_SEED`` replays a run; the seed is in every failure message).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid as uuidlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import posthog_customerio
from posthog_customerio.config import Settings
from posthog_customerio.mapping import map_event
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources import kafka as kafka_source
from posthog_customerio.sources.kafka import decode_message
from posthog_customerio.state import PersonState

from ..conftest import API_KEY, SITE_ID
from ..helpers import wait_for
from ..integration.test_kafka_source import (  # kafka_broker: the session's broker fixture
    Broker,
    committed_offsets,
    end_offsets,
    kafka_broker,  # noqa: F401  (the fixture, requested by name)
    new_topic,
)

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]

SEED = int(os.environ.get("CONSUMER_GROUP_SEED", "24"))
PEOPLE = 300
PARTITIONS = 6
#: messages per outbox transaction and offset commit (``--batch-size``): many commits in a run
BATCH_SIZE = 50
#: the stream is produced over about this many seconds, while the group consumes it
PRODUCE_S = 14.0
EVENT_ACTIONS = ("event", "page", "screen")
TOKEN = "phc_consumer_group_test"
#: 2026-01-05T08:00:00Z
T0 = 1_767_600_000.0
PLANS = ("trial", "starter", "pro", "team", "business", "enterprise")
#: where the run's disturbances happen, as a share of the stream produced
KILL_AT, ADD_AT, SIGTERM_AT, BURST_AT = 0.25, 0.45, 0.6, 0.72
BURST_S = 3.0
#: the command a user runs; consumer ``a`` runs the same command through a wrapper that kills it (``kill -9``)
#: between storing a batch and committing its offsets, once the kill file exists (``tests/consumer_group_child.py``)
CLI = [sys.executable, "-m", "posthog_customerio"]
KILLABLE = [sys.executable, str(Path(__file__).parents[1] / "consumer_group_child.py")]
KILL_FILE = "CONSUMER_GROUP_KILL_FILE"
#: an example list in a failure message holds at most this many items
EXAMPLES = 5


# -- the stream -------------------------------------------------------------------------------------------------
@dataclass
class Person:
    """One PostHog person: its anonymous and identified distinct ids, and the attributes PostHog set last."""

    index: int
    anonymous: str
    user: str
    person_id: str
    email: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Stream:
    """The events in timestamp order (plugin shape), each with its person; the people and their final state."""

    events: list[dict[str, Any]]
    owners: list[Person]
    people: list[Person]


def make_stream(seed: int, people: int = PEOPLE) -> Stream:
    """Per person: 1-3 anonymous ``$pageview``s, an ``$identify`` (``$anon_distinct_id``, ``$set`` email, plan,
    name), then 4-8 events of which at least two change attributes (a ``$set`` event, or ``$set`` inside an
    event); 1-2.5 s apart, people starting within 20 s of each other; sorted by timestamp."""
    rng = random.Random(seed)
    timeline: list[tuple[float, dict[str, Any], Person]] = []

    def uuid() -> str:
        return str(uuidlib.UUID(int=rng.getrandbits(128), version=4))

    everyone = []
    for index in range(people):
        person = Person(index, f"anon-{index:04d}-{rng.getrandbits(32):08x}", f"user-{index:04d}", uuid())
        everyone.append(person)
        moment = T0 + rng.uniform(0, 20)

        def add(name: str, distinct_id: str, properties: dict[str, Any], person: Person = person) -> None:
            nonlocal moment
            event = {"event": name, "distinct_id": distinct_id, "uuid": uuid(), "properties": properties}
            timeline.append((moment, event, person))
            moment += rng.uniform(1.0, 2.5)

        device = {"$device_id": person.anonymous, "$session_id": uuid()}
        for page in rng.sample(["/", "/pricing", "/docs", "/blog", "/about"], rng.randint(1, 3)):
            add("$pageview", person.anonymous, {**device, "$current_url": f"https://shop.example{page}"})
        first = {"email": f"person{index}@example.com", "plan": "free", "name": f"Person {index}"}
        add("$identify", person.user, {**device, "$anon_distinct_id": person.anonymous, "$set": first})
        later = rng.randint(4, 8)
        changes = set(rng.sample(range(later), 2)) | {n for n in range(later) if rng.random() < 0.25}
        for n in range(later):
            if n in changes:
                update: dict[str, Any] = {"plan": rng.choice(PLANS), "seats": rng.randint(1, 50)}
                if rng.random() < 0.3:
                    update["name"] = f"Person {index} v{n}"
                if rng.random() < 0.5:
                    add("$set", person.user, {"$set": update})
                else:
                    add("upgraded", person.user, {"n": n, "$set": update})
            elif rng.random() < 0.4:
                add("$pageview", person.user, {**device, "$current_url": f"https://shop.example/app/{n}"})
            else:
                add(rng.choice(["clicked", "searched", "purchased"]), person.user, {"n": n})
    timeline.sort(key=lambda item: item[0])
    events, owners = [], []
    for moment, event, person in timeline:
        event["timestamp"] = (
            datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        )
        events.append(event)
        owners.append(person)
        update = dict(event["properties"].get("$set") or {})  # what PostHog set last
        person.email = update.pop("email", person.email)
        person.attributes.update(update)
    return Stream(events, owners, everyone)


def clickhouse_message(event: dict[str, Any], person: Person, person_properties: dict[str, Any]) -> dict[str, Any]:
    """The event as PostHog's ``clickhouse_events_json`` carries it: JSON strings inside, ClickHouse timestamps,
    the person's properties as of this event (person-on-events)."""
    moment = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    clickhouse_time = moment.strftime("%Y-%m-%d %H:%M:%S.%f")
    return {
        "uuid": event["uuid"],
        "event": event["event"],
        "properties": json.dumps(event["properties"]),
        "timestamp": clickhouse_time,
        "team_id": 1,
        "project_id": 1,
        "distinct_id": event["distinct_id"],
        "elements_chain": "",
        "created_at": clickhouse_time,
        "person_id": person.person_id,
        "person_created_at": "2026-01-05 08:00:00",
        "person_properties": json.dumps(person_properties),
        "person_mode": "full",
    }


def plugin_envelope(event: dict[str, Any]) -> dict[str, Any]:
    """The event as capture writes it to ``events_plugin_ingestion``: an envelope whose ``data`` is the event."""
    return {
        "uuid": event["uuid"],
        "distinct_id": event["distinct_id"],
        "ip": "127.0.0.1",
        "site_url": "https://shop.example",
        "data": json.dumps(event),
        "now": event["timestamp"],
        "sent_at": event["timestamp"],
        "token": TOKEN,
    }


def encode_stream(stream: Stream, shape: str) -> list[tuple[str, bytes]]:
    """(key, value) per event, in stream order: ``clickhouse`` keyed by uuid, ``plugin`` by token:distinct_id."""
    messages = []
    properties: dict[str, dict[str, Any]] = defaultdict(dict)  # person_id -> properties so far
    for event, person in zip(stream.events, stream.owners, strict=True):
        if shape == "clickhouse":
            current = properties[person.person_id]
            if event["distinct_id"] == person.user:  # the anonymous person has none of the later $set yet
                current.update(event["properties"].get("$set") or {})
            body = clickhouse_message(event, person, current)
            messages.append((event["uuid"], json.dumps(body).encode()))
        else:
            messages.append((f"{TOKEN}:{event['distinct_id']}", json.dumps(plugin_envelope(event)).encode()))
    return messages


@dataclass
class Oracle:
    """What a clean single pass of the product's mapping over the messages sends: every event id, and for each
    the source event's uuid."""

    ids: set[str]
    source: dict[str, str]  # event id -> uuid


def oracle(messages: list[tuple[str, bytes]]) -> Oracle:
    config = Settings().mapping_config()
    states: dict[str, PersonState] = {}
    ids: set[str] = set()
    source: dict[str, str] = {}
    for _key, value in messages:
        for event in decode_message(value):
            mapped = map_event(event, states, config)
            states.update(mapped.states)
            for op in mapped.operations:
                if op.payload.get("action") in EVENT_ACTIONS and "id" in op.payload:
                    event_id = str(op.payload["id"]).upper()
                    ids.add(event_id)
                    source[event_id] = str(event.uuid)
    return Oracle(ids, source)


# -- what the sandbox was sent ----------------------------------------------------------------------------------
@dataclass
class Arrivals:
    """Every event id in a request the sandbox accepted (200/207), in arrival order, with who it was sent as."""

    sequence: list[tuple[str, str]] = field(default_factory=list)  # (event id, "person:<id>" or "anonymous:<id>")
    partial: int = 0  # 207 answers (some items refused)
    by_status: Counter[int] = field(default_factory=Counter)


def arrivals(sandbox: SandboxServer) -> Arrivals:
    """From the raw request log (the workspace dedupes ids, so a second delivery only shows here)."""
    found = Arrivals()
    for entry in sandbox.state.requests():
        found.by_status[entry["status"]] += 1
        if entry["status"] not in (200, 207) or not isinstance(entry["body"], dict):
            continue
        found.partial += entry["status"] == 207
        path = entry["path"].split("?")[0]
        if path.startswith("/api/v2/"):
            items = entry["body"].get("batch") if path.endswith("/batch") else [entry["body"]]
            for item in items or []:
                if isinstance(item, dict) and item.get("action") in EVENT_ACTIONS and item.get("id"):
                    who = item.get("identifiers") or {}
                    as_whom = f"person:{who.get('id')}" if item.get("type") == "person" else "anonymous:"
                    found.sequence.append((str(item["id"]).upper(), as_whom + str(item.get("anonymous_id") or "")))
        elif path.startswith("/api/v1/") and path.endswith("/events") and entry["body"].get("id"):
            parts = path.split("/")
            as_whom = (
                f"person:{parts[4]}" if parts[3] == "customers" else f"anonymous:{entry['body'].get('anonymous_id')}"
            )
            found.sequence.append((str(entry["body"]["id"]).upper(), as_whom))
    return found


# -- the consumers ----------------------------------------------------------------------------------------------
class ConsumerProcess:
    """One ``python -m posthog_customerio consume`` process; its stdout and stderr go to files."""

    def __init__(self, name: str, env: dict[str, str], args: list[str], logs: Path, command: list[str]) -> None:
        self.name = name
        self.stdout = logs / f"{name}.stdout"
        self.stderr = logs / f"{name}.stderr"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.process = subprocess.Popen(
                [*command, "consume", *args],
                env=env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )

    def log_records(self) -> list[dict[str, Any] | str]:
        """The stderr lines: JSON log records as dicts, anything else as text."""
        records: list[dict[str, Any] | str] = []
        for line in self.stderr.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                records.append(line)
                continue
            records.append(record if isinstance(record, dict) else line)
        return records

    def partitions(self) -> set[int] | None:
        """The partitions it holds by its log (its last ``assigned`` after its last ``revoked``/``lost``);
        ``None`` once it has exited."""
        if self.process.poll() is not None:
            return None
        held: set[int] = set()
        for record in self.log_records():
            message = str(record.get("message", "")) if isinstance(record, dict) else ""
            if message.startswith("kafka: assigned "):
                held = {int(n) for n in re.findall(r"\[(\d+)\]", message)}
            elif message.startswith(("kafka: revoked ", "kafka: lost ")):
                held = set()
        return held

    def errors(self) -> list[str]:
        """Its ERROR (or worse) log lines, tracebacks and ``error:`` lines (stderr), and stdout's ``error``."""
        found = []
        for record in self.log_records():
            if isinstance(record, dict):
                if str(record.get("level", "")).upper() in ("ERROR", "CRITICAL"):
                    found.append(str(record.get("message"))[:300])
            elif "traceback" in record.lower() or "error" in record.lower():
                found.append(record[:300])
        with contextlib.suppress(ValueError):
            summary = json.loads(self.stdout.read_text() or "null")
            if isinstance(summary, dict) and summary.get("error"):
                found.append(f"summary error: {summary['error']}"[:300])
        return found

    def summary(self) -> dict[str, Any]:
        with contextlib.suppress(ValueError):
            data = json.loads(self.stdout.read_text() or "null")
            if isinstance(data, dict):
                return data
        return {}

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


class Producer(threading.Thread):
    """Produces the messages in order, paced over about ``seconds`` of production (a live stream); ``produced``
    counts them. At each of ``gates`` (message counts) it stops until the test, having made its move there,
    calls :meth:`release` (the time stopped is not counted in the pace)."""

    def __init__(
        self, broker: Broker, topic: str, messages: list[tuple[str, bytes]], seconds: float, gates: list[int]
    ) -> None:
        super().__init__(name="stream-producer", daemon=True)
        self.broker, self.topic, self.messages, self.seconds = broker, topic, messages, seconds
        self.gates = {gate: (threading.Event(), threading.Event()) for gate in sorted(set(gates))}
        self.produced = 0
        self.failures: list[str] = []
        self.done = threading.Event()

    def reached(self, gate: int) -> bool:
        return self.gates[gate][0].is_set() or self.done.is_set()

    def release(self, gate: int | None = None) -> None:
        """Let the producer go on past ``gate`` (every gate: ``None``)."""
        for at, (_, go) in self.gates.items():
            if gate is None or at == gate:
                go.set()

    def run(self) -> None:
        from confluent_kafka import Producer as KafkaProducer

        # one record per batch: Tansu's ListOffsets answers the base offset of the last batch + 1
        producer = KafkaProducer(
            {
                "bootstrap.servers": self.broker.bootstrap,
                "linger.ms": 0,
                "batch.num.messages": 1,
                "logger": kafka_source.librdkafka_log,
            }
        )

        def delivered(error: Any, _message: Any) -> None:
            if error is not None:
                self.failures.append(str(error))

        try:
            total = len(self.messages)
            chunk = max(1, total // int(self.seconds * 5))
            started = time.monotonic()
            while self.produced < total:
                gate = next((at for at in self.gates if at == self.produced), None)
                if gate is not None:
                    reached, go = self.gates[gate]
                    stopped = time.monotonic()
                    reached.set()
                    if not go.wait(120):
                        raise TimeoutError(f"not released at {gate} messages")
                    started += time.monotonic() - stopped
                end = min([total, self.produced + chunk, *(at for at in self.gates if at > self.produced)])
                for key, value in self.messages[self.produced : end]:
                    producer.produce(self.topic, value=value, key=key.encode(), on_delivery=delivered)
                    producer.poll(0)
                if producer.flush(30):
                    self.failures.append("messages left unsent")
                self.produced = end
                # pacing (not synchronisation): the stream arrives over `seconds` of production
                ahead = started + self.seconds * self.produced / total - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        except Exception as exc:  # reported by the test
            self.failures.append(repr(exc))
        finally:
            self.done.set()


def outbox_rows(pg_url: str) -> tuple[int, int]:
    """(operations queued in the outbox, dead letters) of the shared PostgreSQL outbox."""
    import psycopg

    with psycopg.connect(pg_url, connect_timeout=5) as connection:
        queued = connection.execute("SELECT count(*) FROM outbox").fetchone()
        dead = connection.execute("SELECT count(*) FROM dead_letters").fetchone()
    return (int(queued[0]) if queued else -1, int(dead[0]) if dead else -1)


# -- the test -----------------------------------------------------------------------------------------------------
@pytest.fixture
def consumers() -> Iterator[list[ConsumerProcess]]:
    """The test's consumer processes; any still running at the end is killed (a failed test leaves none)."""
    started: list[ConsumerProcess] = []
    yield started
    for consumer in started:
        if consumer.process.poll() is None:
            consumer.process.kill()
            consumer.process.wait(10)


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param("clickhouse", id="clickhouse_events_json-uuid-keys"),
        pytest.param("plugin", id="events_plugin_ingestion-distinct_id-keys"),
    ],
)
def test_a_consumer_group_on_one_postgresql_outbox_delivers_everything_once_in_order(
    kafka_broker: Broker,
    sandbox: SandboxServer,
    pg_url: str,
    tmp_path: Path,
    consumers: list[ConsumerProcess],
    shape: str,
) -> None:
    started = time.monotonic()
    stream = make_stream(SEED)
    messages = encode_stream(stream, shape)
    expected = oracle(messages)
    by_uuid = {event["uuid"]: (event, person) for event, person in zip(stream.events, stream.owners, strict=True)}
    topic, group = new_topic(kafka_broker, partitions=PARTITIONS), f"cg-{shape}-{uuidlib.uuid4().hex[:6]}"
    logs = tmp_path / "logs"
    logs.mkdir()
    package_root = str(Path(posthog_customerio.__file__).resolve().parents[1])  # the code under test, in children
    base_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([package_root, *filter(None, [os.environ.get("PYTHONPATH")])]),
        "CUSTOMERIO_SITE_ID": SITE_ID,
        "CUSTOMERIO_API_KEY": API_KEY,
        "CUSTOMERIO_TRACK_URL": sandbox.url,
        "CUSTOMERIO_MAX_RPS": "1000",
        "OUTBOX_URL": pg_url,
        "LEASE_S": "5",  # as the replica tests: a killed consumer's claims run out in seconds
        "SHUTDOWN_GRACE_S": "2",
        "LOG_FORMAT": "json",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP_ID": group,
    }
    args = ["--batch-size", str(BATCH_SIZE), "--json"]
    for key, value in kafka_broker.consumer_settings.items():
        args += ["--kafka-config", f"{key}={value}"]
    timeline: list[str] = []
    kill_file = tmp_path / "kill-a"

    def note(what: str) -> None:
        timeline.append(f"{time.monotonic() - started:5.1f}s {what}")

    def start(name: str, data_dir: str | None = None, command: list[str] = CLI) -> ConsumerProcess:
        env = {**base_env, "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / (data_dir or name)), KILL_FILE: str(kill_file)}
        consumer = ConsumerProcess(name, env, args, logs, command)
        consumers.append(consumer)
        note(f"started {name} (pid {consumer.process.pid})")
        return consumer

    def describe_group() -> str:
        return "; ".join(f"{c.name}: exit {c.process.poll()}, {c.errors()[-1:] or 'no error'}" for c in consumers)

    def settle(members: list[ConsumerProcess], why: str) -> None:
        """Wait until exactly these consumers are alive, each holds partitions and together they hold every one
        once (at most 4 members for 6 partitions: every member gets some). Tansu (the
        test broker) stalls a group whose membership changes again before a rebalance has finished (a member that
        leaves while another joins: nobody is assigned for tens of seconds), so changes are made one at a time."""

        def stable() -> bool:
            held = [x.partitions() for x in consumers if x.process.poll() is None]
            if {x.name for x in consumers if x.process.poll() is None} != {x.name for x in members}:
                return False
            flat = [p for partitions in held for p in partitions or ()]
            return all(held) and sorted(flat) == list(range(PARTITIONS))  # each member holds some, all held once

        wait_for(stable, f"a stable group after {why}", 60, interval=0.1, describe=describe_group)
        note(f"group stable after {why}: " + ", ".join(f"{x.name} {sorted(x.partitions() or ())}" for x in members))

    a, b, c = start("a", command=KILLABLE), start("b"), start("c")
    settle([a, b, c], "the start")

    shares = (KILL_AT, ADD_AT, SIGTERM_AT, BURST_AT)
    producer = Producer(kafka_broker, topic, messages, PRODUCE_S, [int(len(messages) * share) for share in shares])
    kill_gate, add_gate, sigterm_gate, burst_gate = sorted(producer.gates)
    producer.start()
    note(f"producing {len(messages)} messages over ~{PRODUCE_S:.0f}s of production")

    def at(gate: int) -> None:
        wait_for(lambda: producer.reached(gate), f"{gate} messages produced", 60, interval=0.02)

    try:
        at(kill_gate)
        kill_file.touch()  # a kills itself with SIGKILL at its next offset commit (its batch is stored by then)
        producer.release(kill_gate)
        if a.wait(20) is None:  # no commit came (the consumer no longer commits through Consumer.commit?)
            a.signal(signal.SIGKILL)
            a.wait(10)
            note("a did not reach an offset commit: killed with SIGKILL at a random moment instead")
        note(f"kill -9 a (exit {a.process.returncode}) at {producer.produced} produced")
        assert a.process.returncode == -signal.SIGKILL, f"a ended with {a.process.returncode}, not by kill -9"
        settle([b, c], "a's death")
        a2 = start("a-restarted", data_dir="a")  # restarted as a supervisor does: same data dir
        settle([a2, b, c], "a's restart")
        at(add_gate)
        d = start("d")
        producer.release(add_gate)
        note(f"added d at {producer.produced} produced")
        settle([a2, b, c, d], "d joined")
        at(sigterm_gate)
        b.signal(signal.SIGTERM)
        producer.release(sigterm_gate)
        note(f"SIGTERM b at {producer.produced} produced")
        b_exit = b.wait(30)
        note(f"b exited {b_exit}")
        settle([a2, c, d], "b left")
        at(burst_gate)
        sandbox.state.add_fault(status=429, duration_s=BURST_S, retry_after=1)
        producer.release(burst_gate)
        note(f"429 burst for {BURST_S:.0f}s at {producer.produced} produced")
    finally:
        producer.release()
    assert producer.done.wait(60), "the producer did not finish"
    note("all produced")
    assert not producer.failures, producer.failures[:3]
    ends = end_offsets(kafka_broker, topic, PARTITIONS)
    assert sum(ends.values()) == len(messages), (ends, len(messages))

    state: dict[str, Any] = {}

    def settled() -> bool:
        state["committed"] = committed_offsets(kafka_broker, topic, group, PARTITIONS)
        state["queued"], state["dead"] = outbox_rows(pg_url)
        return bool(state["committed"] == ends and state["queued"] == 0)

    finished = True
    try:
        wait_for(settled, "committed == end offsets and an empty outbox", 60, interval=0.5)
    except AssertionError:
        finished = False
    note(f"settled={finished}: committed {sum(state['committed'].values())}/{len(messages)}, queued {state['queued']}")
    running = [x for x in consumers if x.process.poll() is None]
    exits: dict[str, int | None] = {}
    for consumer in running:  # one at a time, as a rolling stop does (Tansu stalls when several leave at once)
        consumer.signal(signal.SIGTERM)
        exits[consumer.name] = consumer.wait(30)
    note(f"stopped {', '.join(exits)}")
    seconds = time.monotonic() - started

    # -- the checks, all reported together ------------------------------------------------------------------------
    problems: list[str] = []
    if not finished:
        problems.append(
            f"timed out: committed {state['committed']} != end offsets {ends}, or {state['queued']} operations queued"
        )
    seen = arrivals(sandbox)
    delivered_ids = [event_id for event_id, _ in seen.sequence]
    counts = Counter(delivered_ids)

    # (a) nothing missing
    missing = expected.ids - set(counts)
    if missing:
        names = Counter(by_uuid[expected.source[i]][0]["event"] for i in missing)
        problems.append(
            f"(a) {len(missing)} of {len(expected.ids)} events never reached Customer.io (by event: {dict(names)}),"
            f" e.g. {sorted(missing)[:EXAMPLES]}"
        )
    extra = set(counts) - expected.ids
    if extra:
        problems.append(f"(a) {len(extra)} event ids a clean run does not send, e.g. {sorted(extra)[:EXAMPLES]}")

    # (b) no duplicate, in any form -- but what the killed consumer's workers held at the kill may arrive again: its
    # leases run out and another consumer sends it (at-least-once; the workspace dedupes it), once more at most
    in_flight_at_kill = Path(f"{kill_file}.in-flight")  # written by the killed consumer (consumer_group_child.py)
    held_at_kill = set(json.loads(in_flight_at_kill.read_text())) if in_flight_at_kill.exists() else set()
    twice = {event_id: n for event_id, n in counts.items() if n > 1 and not (event_id in held_at_kill and n == 2)}
    if twice:
        forms: Counter[str] = Counter()
        for event_id in twice:
            kinds = [whom.split(":")[0] for i, whom in seen.sequence if i == event_id]
            forms[" + ".join(kinds)] += 1
        problems.append(
            f"(b) {len(twice)} event ids accepted more than once ({sum(twice.values()) - len(twice)} extra"
            f" deliveries; as {dict(forms)}; the workspace counted {sandbox.state.stats().get('duplicates')}"
            f" duplicates), e.g. {sorted(twice.items())[:EXAMPLES]}"
        )

    # (c) each identified person's identified events, in order of first arrival, are in timestamp order
    first: dict[str, int] = {}
    for position, event_id in enumerate(delivered_ids):
        first.setdefault(event_id, position)
    per_person: dict[str, list[tuple[int, str, str, str]]] = defaultdict(list)
    for event_id, position in first.items():
        if event_id not in expected.source:
            continue
        event, person = by_uuid[expected.source[event_id]]
        if event["distinct_id"] == person.user:
            per_person[person.user].append((position, event["timestamp"], event["event"], event_id))
    inversions, people_inverted, pair_inversions, examples = 0, 0, 0, []
    for user, arrived in sorted(per_person.items()):
        arrived.sort()
        stamps = [timestamp for _, timestamp, _, _ in arrived]
        descents = [n for n in range(1, len(stamps)) if stamps[n] < stamps[n - 1]]
        pair_inversions += sum(
            1 for i in range(len(stamps)) for j in range(i + 1, len(stamps)) if stamps[i] > stamps[j]
        )
        if descents:
            people_inverted += 1
            inversions += len(descents)
            n = descents[0]
            examples.append(f"{user}: {arrived[n - 1][2]}@{stamps[n - 1]} arrived before {arrived[n][2]}@{stamps[n]}")
    if inversions:
        problems.append(
            f"(c) {inversions} order inversions (an identified event arriving after a later one; {pair_inversions}"
            f" inverted pairs) for {people_inverted} of {len(per_person)} people, e.g. {examples[:EXAMPLES]}"
        )

    # (d) the newest attributes PostHog set
    stale = []
    for person in stream.people:
        profile = sandbox.state.person(person.user)
        if profile is None:
            stale.append(f"{person.user}: no profile")
            continue
        wrong = {
            key: (profile["attributes"].get(key), value)
            for key, value in person.attributes.items()
            if profile["attributes"].get(key) != value
        }
        if profile.get("email") != person.email:
            wrong["email"] = (profile.get("email"), person.email)
        if wrong:
            stale.append(f"{person.user}: {wrong} (has, newest)")
    if stale:
        problems.append(
            f"(d) {len(stale)} of {len(stream.people)} people lack their newest attributes, e.g. {stale[:EXAMPLES]}"
        )

    # (e) committed == end offsets
    committed = committed_offsets(kafka_broker, topic, group, PARTITIONS)
    if committed != ends:
        problems.append(f"(e) committed offsets {committed} != end offsets {ends}")

    # (f) no ERROR line, SIGTERM exits 0
    if b_exit != 0:
        problems.append(f"(f) consumer b, SIGTERMed mid-run, exited {b_exit} (expected 0)")
    for name, code in exits.items():
        if code != 0:
            problems.append(f"(f) consumer {name}, SIGTERMed at the end, exited {code} (expected 0)")
    for consumer in consumers:
        errors = consumer.errors()
        if errors:
            problems.append(f"(f) {len(errors)} ERROR lines from consumer {consumer.name}, e.g. {errors[:3]}")

    if state.get("dead"):
        problems.append(f"{state['dead']} dead letters in the outbox")
    summaries = {
        x.name: {k: x.summary().get(k) for k in ("messages", "events", "commits", "queued")} for x in consumers
    }
    report = (
        f"seed {SEED}, {shape}, {len(stream.people)} people, {len(messages)} messages, {len(expected.ids)} event ids,"
        f" {PARTITIONS} partitions, {seconds:.0f}s; requests by status {dict(seen.by_status)}, {seen.partial} 207s;"
        f" consumers {summaries}\n  timeline:\n    " + "\n    ".join(timeline)
    )
    print(report)
    assert not problems, "\n".join(problems) + "\n" + report
