"""The outbox's two lanes: person work is claimed apart from anonymous events, per-key order kept.

Both backends. Person work never waits behind anonymous events of other keys; an anonymous event
waits behind earlier person work of its own key; person work waiting on a visitor's anonymous event
in flight (here, or leased by another replica) waits for it; the first held anonymous event ends an
anonymous-lane scan. Request slots: a spare slot is only one nobody reserved.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from posthog_customerio.outbox import Outbox
from posthog_customerio.pacing import PostgresPacer, RateLimiter
from posthog_customerio.storage import PostgresStorage, SqliteStorage, Storage

from .test_anonymous_hold import anonymous, names, person

BACKENDS = ["sqlite", "postgresql"]
LIMITS = (100, 500_000, 32_000)


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    storage: Storage = (
        SqliteStorage(tmp_path / "db.sqlite")
        if request.param == "sqlite"
        else PostgresStorage(request.getfixturevalue("pg_url"))
    )
    yield storage
    storage.close()


def test_person_work_is_claimed_past_any_number_of_anonymous_events(db: Storage) -> None:
    outbox = Outbox(db)
    # the person lane reads past them by index: a claim's scan never looks at anonymous events
    outbox.put(anonymous(f"v{n}", 0) for n in range(3_000))
    outbox.put([person("alice", 1), person("bob", 1)])
    assert names(outbox.claim(*LIMITS, lane="person")) == ["alice:e1", "bob:e1"]
    assert names(outbox.claim(2, 500_000, 32_000, lane="anonymous")) == ["v0:e0", "v1:e0"]


def test_an_anonymous_event_waits_behind_earlier_person_work_of_its_key(db: Storage) -> None:
    outbox = Outbox(db)
    outbox.put([person("v1", 1), anonymous("v1", 2), anonymous("v2", 1)])
    assert names(outbox.claim(*LIMITS, lane="anonymous")) == ["v2:e1"]
    first = outbox.claim(*LIMITS, lane="person")
    assert names(first) == ["v1:e1"]
    assert outbox.claim(*LIMITS, lane="anonymous") == []  # v1's person work is in flight, not settled
    outbox.ack(first)
    assert names(outbox.claim(*LIMITS, lane="anonymous")) == ["v1:e2"]


def test_person_work_waiting_on_a_visitor_in_flight_waits_for_it(db: Storage) -> None:
    outbox = Outbox(db)
    outbox.put([anonymous("v1", 1)])
    in_flight = outbox.claim(*LIMITS, lane="anonymous")
    assert names(in_flight) == ["v1:e1"]
    outbox.put([person("alice", 1, after=("v1",)), person("bob", 1)])  # alice's identify attaches v1
    assert names(outbox.claim(*LIMITS, lane="person")) == ["bob:e1"]
    outbox.ack(in_flight)
    assert names(outbox.claim(*LIMITS, lane="person")) == ["alice:e1"]


def test_a_replicas_anonymous_event_in_flight_holds_the_person_work_waiting_on_it(pg_url: str) -> None:
    db_a, db_b = PostgresStorage(pg_url), PostgresStorage(pg_url)
    try:
        replica_a, replica_b = Outbox(db_a, lease_s=30), Outbox(db_b, lease_s=30)
        replica_a.put([anonymous("v1", 1)])
        leased = replica_a.claim(*LIMITS, lane="anonymous")
        replica_a.put([person("alice", 1, after=("v1",)), person("bob", 1)])
        assert names(replica_b.claim(*LIMITS, lane="person")) == ["bob:e1"]
        replica_a.ack(leased)
        assert names(replica_b.claim(*LIMITS, lane="person")) == ["alice:e1"]
    finally:
        db_a.close()
        db_b.close()


def test_the_first_held_anonymous_event_ends_the_lanes_scan(db: Storage) -> None:
    outbox = Outbox(db, anonymous_hold_s=60)
    with db.transaction() as conn:
        Outbox.enqueue(conn, [anonymous("old", 1)], now=1.0)  # enqueued long ago: not held
        Outbox.enqueue(conn, [anonymous("new", 1)])
    assert names(outbox.claim(*LIMITS, lane="anonymous")) == ["old:e1"]
    assert outbox.claim(*LIMITS, lane="anonymous") == []
    outbox.input_finished()
    assert names(outbox.claim(*LIMITS, lane="anonymous")) == ["new:e1"]


def test_a_spare_slot_is_one_nobody_reserved() -> None:
    now = [100.0]
    limiter = RateLimiter(10, clock=lambda: now[0])  # a slot every 0.1 s
    assert limiter.take_spare()
    assert not limiter.take_spare()  # the next slot is 0.1 s away
    now[0] += 0.1
    assert limiter.reserve() == 0.0  # person work reserved the slot of now...
    assert not limiter.take_spare()  # ...so it is not spare
    now[0] += 0.1
    limiter.pause_for(5)
    now[0] += 1.0
    assert not limiter.take_spare()  # no slot during a pause
    now[0] += 4.5
    assert limiter.take_spare()


def test_a_spare_slot_is_shared_by_replicas(pg_url: str) -> None:
    db = PostgresStorage(pg_url)
    try:
        workspace = f"spare-{threading.get_ident()}"
        one, two = PostgresPacer(db, workspace, rate=0.5), PostgresPacer(db, workspace, rate=0.5)  # a slot per 2 s
        assert one.take_spare()
        assert not two.take_spare() and not one.take_spare()
        assert two.reserve_delay() > 1.0
        one.pause_for(30)
        assert not two.take_spare()
    finally:
        with db.transaction() as conn:
            conn.execute("DELETE FROM delivery_pacing WHERE workspace LIKE 'spare-%%'")
        db.close()


def test_held_anonymous_events_are_not_waiting_work_for_the_health_check(db: Storage) -> None:
    outbox = Outbox(db, anonymous_hold_s=600)  # a long hold: /healthz must not call its rows a stall
    now = 1_000_000.0
    with db.transaction() as conn:
        Outbox.enqueue(conn, [anonymous("v1", 1)], now=now - 300)
    assert outbox.oldest_age(now) == 300
    assert outbox.oldest_age(now, claimable=True) == 0
    with db.transaction() as conn:
        Outbox.enqueue(conn, [person("alice", 1)], now=now - 100)
    assert outbox.oldest_age(now, claimable=True) == 100
    outbox.input_finished()
    assert outbox.oldest_age(now, claimable=True) == 300
