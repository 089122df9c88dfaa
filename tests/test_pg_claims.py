"""Per-person order of claims while other transactions commit (issue 16, defect 3).

A claim must read the queue as one snapshot: when a commit lands between two reads of one claim,
a person's earlier operation (invisible to the first read) must never be overtaken by a later one
that the second read sees.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from posthog_customerio import outbox as outbox_module
from posthog_customerio.db import Database, PostgresDatabase
from posthog_customerio.operations import Operation
from posthog_customerio.outbox import Claimed, Outbox
from posthog_customerio.storage import Storage

from .helpers import wait_for

#: rows a claim's first read returns on today's code (``storage.base.pages``)
PAGE = 1000


def op(person: str, n: int) -> Operation:
    """Operation number ``n`` of ``person`` (its name carries the number)."""
    payload = {"type": "person", "identifiers": {"id": person}, "action": "event", "name": f"e{n}", "attributes": {}}
    return Operation(person, payload)


def number(item: Claimed) -> int:
    return int(json.loads(item.payload)["name"][1:])


def claim_all(outbox: Outbox) -> list[Claimed]:
    """One big claim (more than a page of rows)."""
    return outbox.claim(5_000, 50_000_000, 32_000)


@contextlib.contextmanager
def between_reads(monkeypatch: pytest.MonkeyPatch, after_rows: int, action: Callable[[], None]) -> Iterator[None]:
    """Run ``action`` once a claim has consumed ``after_rows`` candidate rows, before it reads more."""
    original = outbox_module._select
    done = threading.Event()

    def hooked_rows(rows: Iterable[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
        iterator = iter(rows)
        for count in range(1 << 30):
            if count == after_rows and not done.is_set():
                done.set()
                action()
            row = next(iterator, None)
            if row is None:
                return
            yield row

    def select(rows: Iterable[tuple[Any, ...]], *args: Any) -> Any:
        return original(hooked_rows(rows), *args)

    monkeypatch.setattr(outbox_module, "_select", select)
    yield
    assert done.is_set(), "the claim never read that many rows"


def test_a_commit_between_a_claims_reads_never_lets_a_later_operation_overtake(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """p:e1 is committed (and p:e2 queued after it) while the claim is between two reads."""
    db = PostgresDatabase(pg_url)
    writer = Outbox(PostgresDatabase(pg_url))
    outbox = Outbox(db)
    slow = psycopg.connect(pg_url)
    try:
        # p:e1 takes its seq first but commits late; 1.5 pages of other people commit meanwhile
        slow.execute(
            "INSERT INTO outbox (person_key, payload, size, enqueued_at, kind) VALUES (%s, %s, %s, 0, 'person')",
            ("p", json.dumps(op("p", 1).payload), 10),
        )
        writer.put([op(f"other-{n}", n) for n in range(PAGE + PAGE // 2)])

        def commit_then_enqueue_later() -> None:
            slow.commit()
            writer.put([op("p", 2)])

        with between_reads(monkeypatch, PAGE, commit_then_enqueue_later):
            first = claim_all(outbox)
        claimed_p = [number(item) for item in first if item.person_key == "p"]
        assert claimed_p in ([], [1], [1, 2]), f"p's operations claimed out of order: {claimed_p}"
        outbox.ack(first)
        rest = [number(item) for item in claim_all(outbox) if item.person_key == "p"]
        assert claimed_p + rest == [1, 2]
    finally:
        slow.close()
        writer.db.close()
        db.close()


def _open(backend: str, tmp_path: Path, pg: Callable[[], str]) -> Callable[[], Storage]:
    if backend == "sqlite":
        shared = Database(tmp_path / "db.sqlite")
        return lambda: shared
    url = pg()
    return lambda: PostgresDatabase(url)


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_per_person_order_holds_under_concurrent_ingestion(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Writers commit batches of many people (each person written by one writer, in order, as the ingest
    locks do) while two claimers (two replicas on PostgreSQL) claim big batches and ack them."""
    open_db = _open(backend, tmp_path, lambda: str(request.getfixturevalue("pg_url")))
    writers, people_per_writer, rounds = 6, 50, 40
    opened: list[Storage] = []
    claimers = 2 if backend == "postgresql" else 1
    boxes = [Outbox(db) for db in (open_db() for _ in range(claimers))]
    opened.extend(box.db for box in boxes)
    seen: dict[str, list[int]] = {}
    seen_lock = threading.Lock()
    writing = threading.Event()
    errors: list[BaseException] = []

    def write(index: int) -> None:
        db = open_db()
        opened.append(db)
        box = Outbox(db)
        rng = random.Random(index)
        counters = dict.fromkeys((f"w{index}-p{n}" for n in range(people_per_writer)), 0)
        try:
            for _ in range(rounds):
                batch: list[Operation] = []
                for person in rng.sample(sorted(counters), 20):
                    for _ in range(rng.randint(1, 3)):  # several operations of one person in one POST
                        counters[person] += 1
                        batch.append(op(person, counters[person]))
                box.put(batch)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    def claim(box: Outbox) -> None:
        """Claims of up to 300 operations; three stay in flight (at the head of the queue) at a time."""
        in_flight: list[list[Claimed]] = []
        try:
            while writing.is_set() or not box.is_empty():
                items = box.claim(300, 50_000_000, 32_000)
                with seen_lock:
                    for item in items:
                        seen.setdefault(item.person_key, []).append(number(item))
                in_flight.append(items)
                if len(in_flight) > 3 or not items:
                    box.ack(in_flight.pop(0))
            for items in in_flight:
                box.ack(items)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    writing.set()
    threads = [threading.Thread(target=write, args=(index,)) for index in range(writers)]
    claiming = [threading.Thread(target=claim, args=(box,)) for box in boxes]
    for thread in (*threads, *claiming):
        thread.start()
    for thread in threads:
        thread.join(120)
    writing.clear()
    for thread in claiming:
        thread.join(120)
    try:
        assert not errors, errors
        assert not any(thread.is_alive() for thread in (*threads, *claiming))
        inversions = {person: numbers for person, numbers in seen.items() if numbers != sorted(numbers)}
        assert not inversions, f"{len(inversions)} people claimed out of order, e.g. {next(iter(inversions.items()))}"
        assert all(numbers == list(range(1, len(numbers) + 1)) for numbers in seen.values())
        wait_for(lambda: all(box.in_flight() == 0 for box in boxes), "claims settled", timeout=5)
    finally:
        for db in {id(db): db for db in opened}.values():
            with contextlib.suppress(Exception):
                db.close()
