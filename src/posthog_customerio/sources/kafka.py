"""Kafka source: PostHog events from a Kafka topic into the outbox (self-hosted PostHog).

Works with any broker that speaks the Kafka protocol — Apache Kafka, Redpanda, and other
Kafka-compatible brokers (the tests run against Tansu) — through ``confluent-kafka``
(librdkafka).

Delivery guarantee: **exactly once into the outbox, never lost.** Auto-commit is off. For every
batch polled from the topic, the events are mapped and stored in the outbox in one transaction
together with each partition's position (offset and event index, ``stream_positions``) *first*;
only then are the Kafka offsets of that batch committed (synchronously). A crash between the two
re-reads the batch on the next start (or by the partition's next owner): events at positions already
stored are left out. A message that is not a valid event is counted, logged with its partition and
offset, and skipped: it never blocks its partition. So is an event that parses but cannot be stored
(:mod:`posthog_customerio.sources.store`): the rest of its batch is stored one by one.

Event-time order (:mod:`posthog_customerio.ordering`): each event is stored with its event time, a late
one takes its place before its person's later operations still queued, and the consumer records each
assigned partition's progress (the newest event time stored from it, whether it is read to its end,
refreshed about every second) so that delivery waits until every partition was read past an operation.
At the outbox bound only the partitions the watermark waits for keep being read.

Message values may hold one event or a JSON array of events, in any shape
:func:`posthog_customerio.sources.parse_payload` accepts. PostHog's own topics are
understood too:

* ``clickhouse_events_json`` (and ``events_json``): one processed event per message, with
  ``properties`` and ``person_properties`` as JSON *strings* and ClickHouse timestamps
  (``2024-01-01 12:00:00.123456``, UTC);
* ``events_plugin_ingestion`` (capture output): an envelope whose ``data`` is the event as a
  JSON string.

Backpressure: while the outbox holds half its bound (``OUTBOX_MAX_QUEUED``, :mod:`posthog_customerio.bound`) the
consumer pauses its assigned partitions and keeps polling (it stays in its group; partitions assigned meanwhile
are paused too), commits nothing more (only what is stored is ever committed), and resumes once there is room:
the events wait in Kafka, where they are already durable.

The public entry point is :func:`consume`; the ``posthog-customerio consume`` command is a
thin wrapper around it.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from ..backoff import Backoff
from ..ingestion import IngestReport
from ..ordering import position
from ..storage import StreamPosition
from .base import Batch, Intake, IntakeProvider, Source, run
from .events import EventParseError, PostHogEvent, loads_strict, parse_payload
from .store import Ingest, Stored, database_problem

__all__ = [
    "BatchResult",
    "ConsumeReport",
    "KafkaConsumeError",
    "KafkaSource",
    "consume",
    "consumer_config",
    "decode_message",
    "load_kafka_config",
    "normalize_event",
    "secret_values",
]

log = logging.getLogger(__name__)
#: librdkafka's own log lines (connection failures, rebalances…) go to this logger.
librdkafka_log = logging.getLogger(__name__ + ".librdkafka")
#: broker errors returned by ``consume`` (throttled like librdkafka's own lines)
broker_log = logging.getLogger(__name__ + ".broker")
#: a repeated broker failure is logged at most once per this many seconds
BROKER_LOG_INTERVAL_S = 30.0
_DIGITS = re.compile(r"\d+")


class RepeatThrottle(logging.Filter):
    """Log a line once per ``interval_s``, whatever its numbers (ports, ms, counts) say; the next one
    after the interval notes how many like it were held back. A dead broker then shows once per interval
    per kind of failure, not twenty lines a second."""

    def __init__(self, interval_s: float = BROKER_LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = _DIGITS.sub("#", record.getMessage())[:200]
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._held[key] = self._held.get(key, 0) + 1
                return False
            if len(self._last) >= 1000:  # bounded: forget old kinds rather than grow
                self._last.clear()
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.getMessage()} ({held} more like it in the last {self.interval_s:.0f} s)"
            record.args = ()
        return True


for _logger in (librdkafka_log, broker_log):
    _logger.addFilter(RepeatThrottle())

SOURCE = "kafka"

#: Settings the at-least-once guarantee depends on: a caller cannot override them.
_FIXED = {"enable.auto.commit": False, "enable.auto.offset.store": False}

#: how often a consumer refreshes its partitions' progress rows (alive; read to the end)
BEAT_S = 1.0
#: how long a stopping consumer waits to leave its group
CLOSE_TIMEOUT_S = 10.0
_COMMIT_ATTEMPTS = 3
_MAX_BACKOFF_S = 10.0
#: a retriable commit failure is retried after 0.1 s, then 0.2 s (``_COMMIT_ATTEMPTS`` in all)
_COMMIT_BACKOFF = Backoff(base=0.1, cap=1.0, jitter=0.0)


class KafkaConsumeError(RuntimeError):
    """Consuming stopped on an error; offsets of unstored messages were not committed."""


@dataclass(slots=True)
class BatchResult:
    """What one polled batch produced (passed to ``on_batch``)."""

    messages: int
    events: int
    invalid: int
    operations: int
    #: ``{(topic, partition): next offset}`` committed for this batch (empty if the commit failed).
    committed: dict[tuple[str, int], int]


@dataclass(slots=True)
class ConsumeReport:
    """Totals of one :func:`consume` run."""

    messages: int = 0
    events: int = 0
    invalid: int = 0
    batches: int = 0
    commits: int = 0
    commit_failures: int = 0
    ingest_failures: int = 0
    broker_errors: int = 0
    ingest: IngestReport = field(default_factory=IngestReport)
    #: Last committed next-offset per ``(topic, partition)``.
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    #: ``"stop"`` (the stop event was set) or ``"max_messages"``.
    stopped_by: str = ""
    seconds: float = 0.0
    #: times the partitions were paused because the outbox was at its bound, and for how long in all
    paused: int = 0
    paused_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary."""
        data = asdict(self)
        data["ingest"] = {
            "events": self.ingest.events,
            "operations": self.ingest.operations,
            "skipped": dict(self.ingest.skipped),
            "read_again": self.ingest.notes.get("stored_before", 0),
            "reordered": self.ingest.notes.get("reordered", 0),
            "late": self.ingest.notes.get("reorder_late_events", 0),
        }
        data["committed"] = {f"{topic}[{partition}]": offset for (topic, partition), offset in self.committed.items()}
        data["paused_s"] = round(self.paused_s, 3)
        return data


# -- message decoding ------------------------------------------------------------------------------
def normalize_event(obj: Any) -> Any:
    """Unwrap an ``events_plugin_ingestion`` envelope; other shapes pass through.

    The envelope's ``data`` is the event as a JSON string; its ``distinct_id``/``uuid`` fill
    in what the event lacks and its ``now`` stands in for a missing ``timestamp``. Raises
    :class:`EventParseError` when ``data`` is not valid JSON. (``properties``,
    ``person_properties``, ``$set``… given as JSON strings are decoded by
    :func:`~posthog_customerio.sources.parse_event`, the same for every source.)
    """
    if not isinstance(obj, dict):
        return obj
    obj = dict(obj)
    if isinstance(obj.get("data"), str) and "event" not in obj:
        try:
            inner = loads_strict(obj["data"])
        except (ValueError, RecursionError) as exc:
            raise EventParseError(f"data is a string but not valid JSON: {exc}") from None
        if not isinstance(inner, dict):
            raise EventParseError(f"data must hold a JSON object, got {type(inner).__name__}")
        for key in ("distinct_id", "uuid"):
            if inner.get(key) in (None, "") and obj.get(key) not in (None, ""):
                inner[key] = obj[key]
        if inner.get("timestamp") in (None, "") and obj.get("now"):
            inner["timestamp"] = obj["now"]
        obj = dict(inner)
    return obj


def decode_message(value: bytes | str | None) -> list[PostHogEvent]:
    """Turn one Kafka message value into events (one event or a JSON array of them).

    All or nothing, like :func:`parse_payload`; raises :class:`EventParseError` naming the
    problem for an empty value, invalid JSON or an invalid event.
    """
    if value is None or (isinstance(value, (bytes, str)) and not value.strip()):
        raise EventParseError("empty message")
    try:
        obj = loads_strict(value)
    except json.JSONDecodeError as exc:
        raise EventParseError(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # includes UnicodeDecodeError
        raise EventParseError(f"invalid JSON: {exc}") from None
    if isinstance(obj, list):
        obj = [normalize_event(item) for item in obj]
    elif isinstance(obj, dict) and isinstance(obj.get("batch"), list) and "event" not in obj:
        obj = {**obj, "batch": [normalize_event(item) for item in obj["batch"]]}
    else:
        obj = normalize_event(obj)
    return parse_payload(obj)


# -- configuration -----------------------------------------------------------------------------------
def load_kafka_config(pairs: Iterable[str] = (), file: str | Path | None = None) -> dict[str, str]:
    """librdkafka settings from ``KEY=VALUE`` strings and/or a properties file.

    The file holds one ``key=value`` per line (``#`` comments and blank lines ignored), so
    secrets such as ``sasl.password`` need not appear on the command line. Pairs win over
    the file. Raises :class:`ValueError` naming a malformed entry.
    """
    config: dict[str, str] = {}
    if file is not None:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read Kafka config file {file}: {exc.strerror}") from None
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"{file} line {number}: expected key=value")
            config[key.strip()] = value.strip()
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"Kafka setting {pair.split('=')[0]!r}: expected KEY=VALUE")
        config[key.strip()] = value.strip()
    return config


_SECRET_KEY_PARTS = ("password", "secret", "key.pem", "oauthbearer.config", "keystore")


def secret_values(config: Mapping[str, Any]) -> list[str]:
    """Values of secret librdkafka settings (``sasl.password``, ``ssl.key.password``…), for log redaction."""
    return [
        str(value)
        for key, value in config.items()
        if any(part in key for part in _SECRET_KEY_PARTS) and len(str(value)) >= 4
    ]


def consumer_config(bootstrap: str, group: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The librdkafka consumer configuration :func:`consume` uses.

    ``extra`` (TLS, SASL, timeouts…) is applied over the defaults; auto-commit and the
    automatic offset store stay off whatever it says (the guarantee depends on it).
    """
    if not bootstrap.strip():
        raise ValueError("Kafka bootstrap servers are empty (expected HOST:PORT[,HOST:PORT…])")
    if not group.strip():
        raise ValueError("Kafka consumer group is empty")
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "client.id": "posthog-customerio",
        "logger": librdkafka_log,
        # a refused connection is retried after 1 s, doubling up to 10 s (not every 100 ms)
        "reconnect.backoff.ms": 1000,
        "reconnect.backoff.max.ms": 10000,
        # a partition read to its end says so: its progress is then the wall clock (event-time order)
        "enable.partition.eof": True,
    }
    for key, value in (extra or {}).items():
        if key in _FIXED and str(value).lower() not in ("false", "0"):
            raise ValueError(f"{key} cannot be enabled: offsets are committed only after the events are stored")
        config[key] = value
    config.update(_FIXED)
    return config


# -- the consumer loop -----------------------------------------------------------------------------------
def consume(
    runtime: IntakeProvider,
    bootstrap: str,
    topic: str,
    group: str,
    *,
    batch_size: int = 500,
    poll_timeout_s: float = 1.0,
    stop: threading.Event | None = None,
    max_messages: int | None = None,
    on_batch: Callable[[BatchResult], None] | None = None,
    config: Mapping[str, Any] | None = None,
    ingest_retries: int = 5,
    retry_backoff_s: float = 0.5,
) -> ConsumeReport:
    """Read PostHog events from ``topic`` as member of consumer group ``group`` until stopped.

    Each batch (up to ``batch_size`` messages, waiting at most ``poll_timeout_s``) is parsed
    (:class:`KafkaSource`) and, by the shared run loop (:func:`.base.run`), ingested in one
    transaction through ``runtime.intake("kafka")``; the delivery workers are woken if this
    process runs them, and only then are the batch's offsets committed synchronously. Invalid
    messages are counted, logged with partition and offset, and skipped (their offsets are
    committed with the batch).

    Stops when ``stop`` is set (after finishing the batch in hand: set it from a SIGTERM
    handler) or once ``max_messages`` messages were read. A failed ingest (database error)
    is retried ``ingest_retries`` times with exponential backoff from ``retry_backoff_s``;
    then :class:`KafkaConsumeError` is raised without committing, so the messages are read
    again by the next consumer of the group. A failed commit is logged and counted: the
    events are already stored, and a later commit (or a replay, harmless thanks to the
    dedupe ids) covers them. Fatal librdkafka errors raise :class:`KafkaConsumeError`.

    ``config`` adds librdkafka settings (``security.protocol``, ``sasl.*``, ``ssl.*``,
    ``session.timeout.ms``…); invalid ones raise :class:`ValueError`. ``on_batch`` is called
    after each batch was stored and its commit attempted.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if not topic.strip():
        raise ValueError("Kafka topic is empty")
    stop = stop or threading.Event()
    report = ConsumeReport()
    started = time.monotonic()
    try:
        consumer = Consumer(consumer_config(bootstrap, group, config))
    except KafkaException as exc:  # e.g. "No such configuration property"
        raise ValueError(f"invalid Kafka settings: {_kafka_message(exc)}") from None
    try:
        consumer.subscribe(
            [topic],
            on_assign=lambda _c, partitions: log.info("kafka: assigned %s", _describe(partitions)),
            on_revoke=lambda _c, partitions: log.info("kafka: revoked %s", _describe(partitions)),
            on_lost=lambda _c, partitions: log.warning(
                "kafka: lost %s (their messages since the last commit will be read again)", _describe(partitions)
            ),
        )
        log.info("kafka: consuming %s as group %s from %s", topic, group, bootstrap)
        intake = runtime.intake(SOURCE)
        source = KafkaSource(
            consumer,
            report,
            stop,
            intake=intake,
            topic=topic,
            group=group,
            batch_size=batch_size,
            poll_timeout_s=poll_timeout_s,
            max_messages=max_messages,
            on_batch=on_batch,
            ingest_retries=ingest_retries,
            retry_backoff_s=retry_backoff_s,
        )
        source.register_partitions()
        try:
            run(source, intake)
        finally:
            source.last_beat()
        if report.stopped_by == "max_messages":  # a bounded run: nothing more comes to adopt or reorder anything
            intake.ingestor.outbox.input_finished()
    finally:
        report.seconds = round(time.monotonic() - started, 3)
        _close(consumer)
    return report


def _close(consumer: Consumer, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """Leave the group (commits nothing: auto-commit is off), for at most ``timeout_s``: a broker that does not
    finish a rebalance must not keep a stopping process alive. What was stored is committed already; a member that
    did not leave is dropped by the broker after ``session.timeout.ms``, its partitions read on from the commits."""

    def close() -> None:
        try:
            consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("kafka: closing the consumer failed: %s", exc)

    closing = threading.Thread(target=close, name="kafka-close", daemon=True)
    closing.start()
    closing.join(timeout_s)
    if closing.is_alive():
        log.warning(
            "kafka: leaving the group did not finish within %.0f s; stopping anyway (the broker drops this member"
            " after session.timeout.ms; nothing stored is uncommitted)",
            timeout_s,
        )


@dataclass(slots=True)
class Polled(Batch):
    """One polled batch: its events, the messages read, and the next offset per ``(topic, partition)``."""

    read: int = 0
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    #: each event's ``(partition, position)`` (:func:`~..ordering.position`), in the order of :attr:`events`
    places: list[tuple[int, int]] = field(default_factory=list)
    #: partitions read to their end in this poll
    ends: set[int] = field(default_factory=set)


class KafkaSource(Source[Polled]):
    """A subscribed consumer's batches; offsets are committed once a batch is stored (:func:`consume`)."""

    name = SOURCE

    def __init__(
        self,
        consumer: Consumer,
        report: ConsumeReport,
        stop: threading.Event,
        *,
        intake: Intake,
        topic: str,
        group: str,
        batch_size: int,
        poll_timeout_s: float,
        max_messages: int | None,
        on_batch: Callable[[BatchResult], None] | None,
        ingest_retries: int,
        retry_backoff_s: float,
    ) -> None:
        self.consumer = consumer
        self.report = report
        self.stop = stop
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.max_messages = max_messages
        self.on_batch = on_batch
        self.ingest_retries = ingest_retries
        self.retry_backoff_s = retry_backoff_s
        self.intake = intake
        self.topic = topic
        #: the stream's name in ``stream_positions`` (positions and progress per partition, :mod:`..ordering`)
        self.stream = f"kafka:{group}:{topic}"
        #: messages a poll returned while the partitions were paused (assigned by a rebalance during the pause):
        #: neither stored nor committed yet; they make the first batch after the pause
        self._carried: list[Message] = []
        #: per assigned partition: the newest event time stored from it (its progress), and those read to their end
        self._progress: dict[int, float] = {}
        #: partitions read to their end, and since when (wall clock)
        self._at_end: dict[int, float] = {}
        self._beat_at = -math.inf
        #: partitions paused while only those holding the watermark back are read (:meth:`wait_for_room`)
        self._paused_ahead: list[TopicPartition] = []

    def _wanted(self) -> int:
        """Messages the next poll may return (``batch_size``, less near ``max_messages``)."""
        if self.max_messages is None:
            return self.batch_size
        return min(self.batch_size, self.max_messages - self.report.messages - len(self._carried))

    def batches(self) -> Iterator[Polled]:
        """Poll until stopped or ``max_messages`` were read; batches holding no fetched message are skipped."""
        report = self.report
        while not self.stop.is_set():
            self._beat()
            if self._carried:
                messages, self._carried = self._carried, []
            else:
                wanted = self._wanted()
                if wanted <= 0:
                    report.stopped_by = "max_messages"
                    return
                messages = self._consume(wanted, self.poll_timeout_s)
            if messages:
                batch = _decode_batch(messages, report)
                if batch is not None:
                    for part in {part for part, _ in batch.places}:
                        self._at_end.pop(part, None)
                    for part in batch.ends:
                        self._at_end.setdefault(part, time.time())
                    if batch.read:
                        yield batch
        report.stopped_by = "stop"

    # -- event-time progress (:mod:`..ordering`) ----------------------------------------------------------------
    def register_partitions(self) -> None:
        """Before reading: a row for every partition of the topic, so the watermark waits for partitions no
        consumer has read yet (a metadata failure is logged: the rows come as partitions are read)."""
        try:
            metadata = self.consumer.list_topics(self.topic, timeout=10)
            parts = sorted(metadata.topics[self.topic].partitions)
        except (KafkaException, KeyError, RuntimeError) as exc:
            log.warning("kafka: could not read the partitions of %s: %s", self.topic, exc)
            return
        now = time.time()
        rows = [StreamPosition(self.stream, part, 0, 0.0, None, now) for part in parts]
        self.intake.ingestor.db.transact(lambda tx: tx.save_stream_positions(rows))

    def _mine(self) -> list[int]:
        return sorted(tp.partition for tp in self._assignment() if tp.topic == self.topic)

    def _beat(self, force: bool = False) -> None:
        """About every second: tell the other consumers this one is alive on its partitions (``updated_at``), and
        which of them are read to their end (they hold nothing back: :func:`~..ordering.watermark_of`)."""
        now = time.time()
        if not force and now - self._beat_at < BEAT_S:
            return
        self._beat_at = now
        mine = self._mine()
        for kept in (self._at_end, self._progress):
            for part in [part for part in kept if part not in mine]:
                del kept[part]
        rows = [StreamPosition(self.stream, part, 0, 0.0, self._at_end.get(part), now) for part in mine]
        if rows:
            try:
                self.intake.ingestor.db.transact(lambda tx: tx.save_stream_positions(rows))
            except Exception as exc:  # the next beat tries again; storing a batch reports database trouble
                log.debug("kafka: storing partition progress failed: %s", database_problem(exc))

    def last_beat(self) -> None:
        """On the way out: record what was read to its end (the rows stay fresh a while, so a consumer taking
        these partitions over continues in order; unclaimed, they stop holding anything after
        ``REORDER_STALE_S``)."""
        try:
            self._beat(force=True)
        except (KafkaException, RuntimeError) as exc:
            log.debug("kafka: the last progress beat failed: %s", exc)

    def _holding_back(self) -> list[TopicPartition]:
        """This consumer's partitions that hold the watermark back while the gate holds the queue's head: read
        them between the level where sources wait (half of ``OUTBOX_MAX_QUEUED``) and the bound itself, so what
        the gate holds is released by their progress rather than by ``REORDER_STALE_S`` (empty when the gate holds
        nothing, or at the bound)."""
        gate = self.intake.ingestor.outbox.gate
        bound = getattr(self.intake.room, "bound", None)
        if gate is None or bound is None or bound.full(max_age_s=1.0):  # never past OUTBOX_MAX_QUEUED itself
            return []
        mark = gate.watermark().at
        if mark is None or not gate.holds_head():
            return []
        progress, ended = self._progress, self._at_end
        return [
            tp
            for tp in self._assignment()
            if tp.topic == self.topic and tp.partition not in ended and progress.get(tp.partition, 0.0) <= mark
        ]

    def _consume(self, wanted: int, timeout: float) -> list[Message]:
        try:
            return self.consumer.consume(num_messages=wanted, timeout=timeout)
        except KafkaException as exc:
            raise KafkaConsumeError(f"Kafka consumer failed: {_kafka_message(exc)}") from exc

    def wait_for_room(self, intake: Intake) -> bool:
        """At the level where sources wait (half of ``OUTBOX_MAX_QUEUED``): pause the assigned partitions and keep
        polling (the consumer stays in its group, nothing more is fetched, stored or committed) until there is room
        or :attr:`stop` is set, then resume. Always True: the polling loop itself ends on a stop."""
        room = intake.room
        if self.stop.is_set() or not room.full():
            if self._paused_ahead:
                self._call(self.consumer.resume, self._paused_ahead)
                self._paused_ahead = []
            return True
        laggards = self._holding_back()
        if laggards:  # read only the partitions the gate waits for: what they store releases the rest
            keep = {(tp.topic, tp.partition) for tp in laggards}
            ahead = [tp for tp in self._assignment() if (tp.topic, tp.partition) not in keep]
            self._call(self.consumer.pause, ahead)
            self._call(self.consumer.resume, laggards)
            self._paused_ahead = ahead
            return True
        started = time.monotonic()
        self.report.paused += 1
        log.info("kafka: waiting for delivery (half of OUTBOX_MAX_QUEUED queued): paused %s", _describe(self._pause()))
        try:
            room.wait(tick=self._poll_paused, stop=lambda: self.stop.is_set() or bool(self._holding_back()))
        finally:
            self._paused_ahead = []
            self.report.paused_s += time.monotonic() - started
            resumed = self._assignment()
            self._call(self.consumer.resume, resumed)
            log.info(
                "kafka: room in the outbox after %.1fs: resumed %s", time.monotonic() - started, _describe(resumed)
            )
        return True

    def _assignment(self) -> list[TopicPartition]:
        try:
            return list(self.consumer.assignment())
        except (KafkaException, RuntimeError):  # closed, or mid-rebalance: nothing to pause now
            return []

    def _call(self, action: Callable[[list[TopicPartition]], None], partitions: list[TopicPartition]) -> None:
        """``pause`` or ``resume`` these partitions (a rebalance may have taken one: the next poll sorts it out)."""
        if partitions:
            try:
                action(partitions)
            except KafkaException as exc:
                log.debug("kafka: %s of %s failed: %s", action.__name__, _describe(partitions), exc)

    def _pause(self) -> list[TopicPartition]:
        paused = self._assignment()
        self._call(self.consumer.pause, paused)
        return paused

    def _poll_paused(self) -> None:
        """While paused: pause what a rebalance assigned meanwhile, and poll (group membership, rebalances); a
        message fetched before its partition was paused is kept for after the pause, never dropped."""
        if self.stop.is_set():
            return
        self._beat()
        self._pause()
        wanted = self._wanted()
        if wanted > 0:
            self._carried.extend(self._consume(wanted, 0))

    def store(self, intake: Intake, batch: Polled) -> Stored:
        """Store with retries, each event with its partition and position (one stored before is left out): a
        database error is retried, then stops consuming without a commit."""
        places = {id(event): place for event, place in zip(batch.events, batch.places, strict=True)}
        stream, ingestor = self.stream, intake.ingestor

        def ingest(events: Sequence[PostHogEvent], source: str) -> IngestReport:
            return ingestor.ingest_stream(events, source, stream, [places[id(event)] for event in events])

        return _ingest(intake, batch.events, self.report, self.stop, self.ingest_retries, self.retry_backoff_s, ingest)

    def stored(self, batch: Polled, stored: Stored) -> None:
        """Count the batch, commit its offsets, tell ``on_batch``."""
        report, ingested, unstorable = self.report, stored.report, len(stored.rejected)
        report.invalid += unstorable
        report.events += ingested.events
        report.ingest.add(ingested)
        for event, (part, _) in zip(batch.events, batch.places, strict=True):
            self._progress[part] = max(self._progress.get(part, 0.0), event.timestamp.timestamp())
        committed = _commit(self.consumer, batch.next_offsets, report)
        if self.on_batch is not None:
            self.on_batch(
                BatchResult(batch.read, ingested.events, batch.invalid + unstorable, ingested.operations, committed)
            )


def _decode_batch(messages: Sequence[Message], report: ConsumeReport) -> Polled | None:
    """The events of the fetched messages (an invalid one is logged and counted); None when none was fetched."""
    batch = Polled()
    for message in messages:
        error = message.error()
        if error is not None:
            ended = message.partition()
            if error.code() == KafkaError._PARTITION_EOF and ended is not None:
                batch.ends.add(ended)
            _broker_error(error, report)
            continue
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:  # not a fetched message
            continue
        batch.read += 1
        batch.next_offsets[(topic, partition)] = offset + 1
        batch.ends.discard(partition)
        try:
            events = decode_message(message.value())
            batch.events.extend(events)
            batch.places.extend((partition, position(offset, index)) for index in range(len(events)))
        except EventParseError as exc:
            batch.invalid += 1
            log.warning("kafka: skipped the message at %s[%d] offset %d: %s", topic, partition, offset, exc)
    if not batch.read:
        return batch if batch.ends else None
    report.messages += batch.read
    report.invalid += batch.invalid
    report.batches += 1
    return batch


def _broker_error(error: KafkaError, report: ConsumeReport) -> None:
    if error.code() == KafkaError._PARTITION_EOF:
        return
    if error.fatal():
        raise KafkaConsumeError(f"Kafka consumer failed: {error.str()}")
    report.broker_errors += 1
    broker_log.warning("kafka: %s (librdkafka retries by itself)", error.str())


def _ingest(
    intake: Intake,
    events: list[PostHogEvent],
    report: ConsumeReport,
    stop: threading.Event,
    retries: int,
    backoff_s: float,
    ingest: Ingest | None = None,
) -> Stored:
    """Store ``events`` under the shared policy (what was stored, and the events that could not be)."""
    if not events:
        return Stored()
    attempt = 0
    while True:
        try:
            stored = intake.store(events, ingest)
        except Exception as exc:  # database errors: retried (a replay of stored events is harmless)
            report.ingest_failures += 1
            attempt += 1
            if attempt > retries or stop.is_set():
                raise KafkaConsumeError(
                    f"could not store {len(events)} events from Kafka: {database_problem(exc)}"
                    " (offsets not committed: the messages will be read again)"
                ) from exc
            delay = Backoff(base=backoff_s, cap=_MAX_BACKOFF_S, jitter=0.0).delay(attempt)
            log.warning(
                "kafka: storing %d events failed (%s); retry %d/%d in %.1fs",
                len(events),
                database_problem(exc),
                attempt,
                retries,
                delay,
            )
            stop.wait(delay)
            continue
        for rejected in stored.rejected:
            log.warning("kafka: skipped %s: it cannot be stored (%s)", rejected.label, rejected.error)
        return stored


def _commit(
    consumer: Consumer, next_offsets: dict[tuple[str, int], int], report: ConsumeReport
) -> dict[tuple[str, int], int]:
    offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in next_offsets.items()]
    for attempt in range(1, _COMMIT_ATTEMPTS + 1):
        try:
            answered = consumer.commit(offsets=offsets, asynchronous=False) or []
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if error is not None and error.fatal():
                raise KafkaConsumeError(f"Kafka offset commit failed: {error.str()}") from exc
            if error is not None and error.retriable() and attempt < _COMMIT_ATTEMPTS:
                time.sleep(_COMMIT_BACKOFF.delay(attempt))
                continue
            report.commit_failures += 1
            log.warning(
                "kafka: committing offsets %s failed: %s (the events are stored; these messages may"
                " be read again, which is harmless)",
                _describe(offsets),
                exc,
            )
            return {}
        failed = [tp for tp in answered if tp.error is not None]
        committed = {
            key: offset
            for key, offset in next_offsets.items()
            if not any((tp.topic, tp.partition) == key for tp in failed)
        }
        if failed:
            report.commit_failures += 1
            log.warning(
                "kafka: committing offsets failed for %s: %s",
                _describe(failed),
                "; ".join(str(tp.error) for tp in failed),
            )
        if committed:
            report.commits += 1
            report.committed.update(committed)
        return committed
    return {}  # pragma: no cover - the loop always returns


def _kafka_message(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)


def _describe(partitions: Iterable[TopicPartition]) -> str:
    parts = [f"{tp.topic}[{tp.partition}]" + (f"@{tp.offset}" if tp.offset >= 0 else "") for tp in partitions]
    return ", ".join(parts) or "nothing"
