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
from posthog_customerio.operations import Claimed, Operation
from posthog_customerio.outbox import Outbox
from posthog_customerio.storage import CandidateRow, PostgresStorage, SqliteStorage, Storage

from ..helpers import wait_for

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

    def hooked_rows(rows: Iterable[CandidateRow]) -> Iterator[CandidateRow]:
        iterator = iter(rows)
        for count in range(1 << 30):
            if count == after_rows and not done.is_set():
                done.set()
                action()
            row = next(iterator, None)
            if row is None:
                return
            yield row

    def select(rows: Iterable[CandidateRow], *args: Any) -> Any:
        return original(hooked_rows(rows), *args)

    monkeypatch.setattr(outbox_module, "_select", select)
    yield
    assert done.is_set(), "the claim never read that many rows"


_INSERT = "INSERT INTO outbox (person_key, payload, size, enqueued_at, kind) VALUES (%s, %s, %s, 0, 'person')"


@pytest.mark.parametrize("post", ["one POST", "two POSTs"])
def test_a_commit_between_a_claims_reads_never_lets_a_later_operation_overtake(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, post: str
) -> None:
    """p:e1 takes its seq first, 1.5 pages of other people commit, then p:e1's transaction commits while
    the claim is between two reads, with p:e2 in it ("one POST") or queued right after it ("two POSTs")."""
    db = PostgresStorage(pg_url)
    writer = Outbox(PostgresStorage(pg_url))
    outbox = Outbox(db)
    slow = psycopg.connect(pg_url)
    try:
        slow.execute(_INSERT, ("p", json.dumps(op("p", 1).payload), 10))
        writer.put([op(f"other-{n}", n) for n in range(PAGE + PAGE // 2)])
        if post == "one POST":
            slow.execute(_INSERT, ("p", json.dumps(op("p", 2).payload), 10))

        def commit() -> None:
            slow.commit()
            if post == "two POSTs":
                writer.put([op("p", 2)])

        with between_reads(monkeypatch, PAGE, commit):
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
        shared = SqliteStorage(tmp_path / "db.sqlite")
        return lambda: shared
    url = pg()
    return lambda: PostgresStorage(url)


def _write(box: Outbox, index: int, people: int, rounds: int, errors: list[BaseException]) -> None:
    """POSTs of 150 operations for 30 of this writer's people, each person's spread over the POST."""
    rng = random.Random(index)
    counters = dict.fromkeys((f"w{index}-p{n}" for n in range(people)), 0)
    try:
        for _ in range(rounds):
            chosen = rng.sample(sorted(counters), 30)
            batch: list[Operation] = []
            for _ in range(5):
                for person in chosen:
                    counters[person] += 1
                    batch.append(op(person, counters[person]))
            box.put(batch)
    except BaseException as exc:  # reported by the main thread
        errors.append(exc)


def _claim(box: Outbox, writing: threading.Event, seen: dict[str, list[int]], errors: list[BaseException]) -> None:
    """Claim everything there is (page after page, to the queue's tail), ack, again."""
    try:
        while writing.is_set() or not box.is_empty():
            items = claim_all(box)
            for item in items:
                seen.setdefault(item.person_key, []).append(number(item))
            box.ack(items)
    except BaseException as exc:  # reported by the main thread
        errors.append(exc)


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_per_person_order_holds_under_concurrent_ingestion(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Six writers commit POSTs of many people side by side (each person written by one writer, as the
    ingest locks do; their rows interleave in the queue) while claimers (two replicas on PostgreSQL)
    claim the whole queue and ack it, three times over: every person's operations are claimed in order."""
    open_db = _open(backend, tmp_path, lambda: str(request.getfixturevalue("pg_url")))
    opened: list[Storage] = []
    try:
        for cycle in range(3):
            claimers = [Outbox(open_db()) for _ in range(2 if backend == "postgresql" else 1)]
            writers = [Outbox(open_db()) for _ in range(6)]
            opened.extend(box.db for box in (*claimers, *writers))
            seen: dict[str, list[int]] = {}  # one dict per claimer would do; the GIL keeps appends whole
            errors: list[BaseException] = []
            writing = threading.Event()
            writing.set()
            threads = [
                threading.Thread(target=_write, args=(box, cycle * 10 + index, 50, 30, errors))
                for index, box in enumerate(writers)
            ]
            claiming = [threading.Thread(target=_claim, args=(box, writing, seen, errors)) for box in claimers]
            for thread in (*threads, *claiming):
                thread.start()
            for thread in threads:
                thread.join(120)
            writing.clear()
            for thread in claiming:
                thread.join(120)
            assert not errors, errors
            assert not any(thread.is_alive() for thread in (*threads, *claiming))
            inversions = {person: numbers for person, numbers in seen.items() if numbers != sorted(numbers)}
            example = next(iter(inversions.items()), None)
            assert not inversions, f"cycle {cycle}: {len(inversions)} people claimed out of order, e.g. {example}"
            assert all(numbers == list(range(1, len(numbers) + 1)) for numbers in seen.values())
    finally:
        for db in {id(db): db for db in opened}.values():
            with contextlib.suppress(Exception):
                db.close()


def _claim_waits_on_a_row_lock(db: Storage) -> bool:
    with db.reading() as tx:
        waiting = tx.execute(
            "SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid"
            " WHERE NOT l.granted AND a.query LIKE 'UPDATE outbox SET lease_owner%'"
        ).fetchone()[0]
    return bool(waiting)


def test_a_claim_never_takes_anonymous_events_an_identify_is_adopting(pg_url: str) -> None:
    """An ingestion adopting a visitor's queued events (delete, re-queue behind the identify) and a claim
    at the same moment: the claim either takes the events before the ingestion reads them (then they are
    not adopted) or not at all; never both sent anonymously and re-queued as the person's."""
    writer, claimer = Outbox(PostgresStorage(pg_url)), Outbox(PostgresStorage(pg_url))
    visit = {"type": "anonymous", "anonymous_id": "anon-1", "action": "event", "name": "visit", "attributes": {}}
    writer.put([Operation("anon-1", visit, kind="anonymous")])
    claimed: list[list[Claimed]] = []
    thread = threading.Thread(target=lambda: claimed.append(claim_all(claimer)))
    try:
        with writer.db.transaction() as tx:
            queued = writer.queued(tx, "anon-1", "anonymous")
            assert len(queued) == 1
            thread.start()
            wait_for(lambda: not thread.is_alive() or _claim_waits_on_a_row_lock(claimer.db), "the claim to run")
            adopted = {**visit, "type": "person", "identifiers": {"id": "user-1"}}
            writer.replace(tx, queued, [Operation("user-1", adopted)])
        thread.join(30)
        assert not thread.is_alive()
        taken = [(item.person_key, item.kind) for item in claimed[0]]
        assert ("anon-1", "anonymous") not in taken, "sent anonymously while being adopted"
        claimer.ack(claimed[0])
        rest = [(item.person_key, item.kind) for item in claim_all(claimer)]
        assert taken + rest == [("user-1", "person")]
    finally:
        writer.db.close()
        claimer.db.close()


def test_a_row_that_could_not_be_leased_holds_back_the_later_rows_of_its_keys() -> None:
    """After the lease: a chosen row left unleased (deleted, or locked by an ingestion) keeps every later
    chosen row of its person, or waiting on it, out of the claim."""
    from posthog_customerio.storage.base import in_order as _in_order

    def row(seq: int, person: str, after: list[str] | None = None) -> CandidateRow:
        return CandidateRow(seq, person, 10, 0, 0.0, json.dumps(after) if after else None, None, None, "person")

    chosen = [row(1, "a"), row(2, "b"), row(3, "a"), row(4, "c", ["a"]), row(5, "c"), row(6, "d")]
    assert [r.seq for r in _in_order(chosen, {2, 3, 4, 5, 6})] == [2, 6]
    assert [r.seq for r in _in_order(chosen, {1, 2, 3, 4, 5, 6})] == [1, 2, 3, 4, 5, 6]
