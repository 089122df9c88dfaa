"""The SQLite outbox: durability, per-person order, byte packing, dead letters."""

from __future__ import annotations

import threading

import pytest

from posthog_customerio.operations import Operation
from posthog_customerio.outbox import Outbox
from posthog_customerio.state import PersonState, load_states, save_states
from posthog_customerio.storage import PostgresStorage


def op(person: str, n: int, pad: int = 0) -> Operation:
    return Operation(
        person,
        {
            "type": "person",
            "identifiers": {"id": person},
            "action": "event",
            "name": f"e{n}",
            "attributes": {"pad": "x" * pad},
        },
    )


@pytest.fixture
def outbox(open_db) -> Outbox:
    return Outbox(open_db())


def names(items) -> list[str]:
    import json

    return [f"{item.person_key}:{json.loads(item.payload)['name']}" for item in items]


def test_claim_returns_operations_in_enqueue_order(outbox: Outbox) -> None:
    outbox.put([op("a", 1), op("b", 1), op("a", 2)])
    assert names(outbox.claim(10, 100_000, 32_000)) == ["a:e1", "b:e1", "a:e2"]


def test_a_person_in_flight_gets_nothing_more_until_settled(outbox: Outbox) -> None:
    outbox.put([op("a", 1), op("a", 2), op("b", 1)])
    first = outbox.claim(1, 100_000, 32_000)
    assert names(first) == ["a:e1"]
    # a:e2 must wait for a:e1; b is free
    assert names(outbox.claim(10, 100_000, 32_000)) == ["b:e1"]
    assert outbox.claim(10, 100_000, 32_000) == []
    outbox.ack(first)
    assert names(outbox.claim(10, 100_000, 32_000)) == ["a:e2"]


def test_byte_budget_blocks_the_person_whose_operation_did_not_fit(outbox: Outbox) -> None:
    outbox.put([op("a", 1, pad=400), op("b", 1, pad=900), op("a", 2), op("c", 1)])
    claimed = outbox.claim(10, 1000, 32_000)
    # b:e1 does not fit in what is left; a:e2 and c:e1 do (b is blocked, not a)
    assert names(claimed) == ["a:e1", "a:e2", "c:e1"]
    assert sum(item.size + 1 for item in claimed) <= 1000


def test_max_items_is_respected(outbox: Outbox) -> None:
    outbox.put([op(f"p{i}", 1) for i in range(10)])
    assert len(outbox.claim(3, 100_000, 32_000)) == 3


def test_oversized_operation_is_dead_lettered_with_the_reason(outbox: Outbox) -> None:
    outbox.put([op("a", 1, pad=40_000), op("a", 2)])
    assert names(outbox.claim(10, 500_000, 32_000)) == ["a:e2"]
    (letter,) = outbox.dead_letters()
    assert "32000-byte limit" in letter.reason and letter.person_key == "a"


def test_release_keeps_the_operation_and_counts_the_attempt(outbox: Outbox) -> None:
    outbox.put([op("a", 1)])
    items = outbox.claim(10, 100_000, 32_000)
    outbox.release(items, "HTTP 500")
    again = outbox.claim(10, 100_000, 32_000)
    assert names(again) == ["a:e1"] and again[0].attempts == 1


def test_ack_deletes_and_dead_letter_moves(outbox: Outbox) -> None:
    outbox.put([op("a", 1), op("b", 1)])
    a, b = outbox.claim(10, 100_000, 32_000)
    outbox.ack([a])
    outbox.dead_letter([(b, "bad attribute", 207, '{"reason":"x"}')])
    assert outbox.depth() == 0 and outbox.in_flight() == 0
    (letter,) = outbox.dead_letters()
    assert (letter.reason, letter.status, letter.attempts) == ("bad attribute", 207, 1)


def test_retry_dead_letters_requeues_them(outbox: Outbox) -> None:
    outbox.put([op("a", 1), op("b", 1)])
    items = outbox.claim(10, 100_000, 32_000)
    outbox.dead_letter([(item, "nope", 400, None) for item in items])
    first_id = outbox.dead_letters()[0].id
    assert outbox.retry_dead_letters([first_id]) == 1
    assert outbox.dead_letter_count() == 1
    assert outbox.retry_dead_letters() == 1
    assert names(outbox.claim(10, 100_000, 32_000)) == ["a:e1", "b:e1"]


def test_operations_survive_reopening_the_database(open_db, tmp_path) -> None:
    import time

    first = Outbox(open_db(), lease_s=6)
    first.put([op("a", 1), op("a", 2)])
    claimed_at = time.monotonic()
    first.claim(10, 100_000, 32_000)  # claimed but never acked: a crash
    first.db.close()
    reopened = Outbox(open_db())
    if reopened.db.dialect == "postgresql":  # another replica: the dead one's lease must expire first
        again = reopened.claim(10, 100_000, 32_000)
        assert again == [] or time.monotonic() - claimed_at >= 6, "claimed while the lease held"
        deadline = time.monotonic() + 60
        while not again:
            assert time.monotonic() < deadline, "the dead replica's lease never expired"
            time.sleep(0.2)
            again = reopened.claim(10, 100_000, 32_000)
        assert time.monotonic() - claimed_at >= 6 and names(again) == ["a:e1", "a:e2"]
        return
    # SQLite: the next deliverer takes the delivery lock (as every one does), which drops the dead one's leases
    lock = reopened.db.take_delivery_lock(tmp_path)
    assert lock is not None
    assert names(reopened.claim(10, 100_000, 32_000)) == ["a:e1", "a:e2"]
    lock.close()


def test_state_and_operations_commit_together_or_not_at_all(open_db) -> None:
    db = open_db()
    with pytest.raises(RuntimeError), db.transaction() as conn:
        save_states(conn, [PersonState("a", created=True)])
        Outbox.enqueue(conn, [op("a", 1)])
        raise RuntimeError("crash before commit")
    assert Outbox(db).depth() == 0
    with db.reading() as conn:
        assert load_states(conn, ["a"]) == {}


def test_schema_migration_is_idempotent(open_db) -> None:
    open_db().close()
    db = open_db()
    with db.reading() as conn:
        if db.dialect == "sqlite":
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1
        else:
            versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
            assert versions == list(range(1, len(versions) + 1)) and versions


def test_two_replicas_never_claim_the_same_operation_nor_a_person_out_of_order(pg_url: str) -> None:
    """PostgreSQL only: one process delivers from a SQLite file."""
    replica_a, replica_b = Outbox(PostgresStorage(pg_url)), Outbox(PostgresStorage(pg_url))
    replica_a.put([op("p", 1), op("p", 2), op("q", 1), op("r", 1)])
    taken_a = replica_a.claim(1, 100_000, 32_000)
    taken_b = replica_b.claim(10, 100_000, 32_000)
    assert names(taken_a) == ["p:e1"]
    assert names(taken_b) == ["q:e1", "r:e1"]  # p:e2 waits for p:e1, leased by replica A
    assert replica_b.claim(10, 100_000, 32_000) == []
    replica_a.ack(taken_a)
    assert names(replica_b.claim(10, 100_000, 32_000)) == ["p:e2"]
    replica_a.db.close()
    replica_b.db.close()


def test_a_dead_replicas_leases_expire(pg_url: str) -> None:
    """PostgreSQL only: leases are that backend's."""
    import time

    dead, alive = Outbox(PostgresStorage(pg_url), lease_s=4), Outbox(PostgresStorage(pg_url), lease_s=4)
    dead.put([op("p", 1)])
    claimed_at = time.monotonic()
    assert names(dead.claim(10, 100_000, 32_000)) == ["p:e1"]
    again = alive.claim(10, 100_000, 32_000)
    assert again == [] or time.monotonic() - claimed_at >= 4, "claimed while the lease held"
    deadline = time.monotonic() + 60
    while not again:  # until the lease expires
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.2)
        again = alive.claim(10, 100_000, 32_000)
    assert time.monotonic() - claimed_at >= 4 and names(again) == ["p:e1"]
    dead.db.close()
    alive.db.close()


def test_an_operation_waiting_on_other_keys_is_never_sent_with_their_earlier_operations(outbox: Outbox) -> None:
    merge = Operation("user", {"type": "person", "action": "merge", "name": "merge"}, after=("anon",))
    outbox.put([op("anon", 1), op("user", 1), merge, op("other", 1)])
    first = outbox.claim(10, 100_000, 32_000)
    assert names(first) == ["anon:e1", "user:e1", "other:e1"]  # the merge waits for anon and user
    assert outbox.claim(10, 100_000, 32_000) == []  # both still in flight
    outbox.ack(first)
    (claimed,) = outbox.claim(10, 100_000, 32_000)
    assert claimed.keys == ("user", "anon")


def test_dead_letters_keep_their_wait_keys_when_retried(outbox: Outbox) -> None:
    outbox.put([Operation("user", {"action": "merge", "name": "m"}, after=("anon",))])
    items = outbox.claim(10, 100_000, 32_000)
    outbox.dead_letter([(items[0], "nope", 400, None)])
    outbox.retry_dead_letters()
    assert outbox.claim(10, 100_000, 32_000)[0].keys == ("user", "anon")


def test_person_work_depth_leaves_anonymous_events_out_and_settlements_wake_a_waiter(outbox: Outbox) -> None:
    """What ``OUTBOX_MAX_QUEUED`` counts, on both backends; and the settlement count a source waits on."""
    import threading

    anonymous = [Operation(f"v{n}", {"action": "event", "name": f"a{n}"}, kind="anonymous") for n in range(3)]
    outbox.put([op("a", 1), *anonymous, op("b", 1)])
    assert outbox.person_work_depth() == 2 and outbox.depth() == 5
    seen = outbox.settled_total()
    woken: list[int] = []
    waiter = threading.Thread(target=lambda: woken.append(outbox.wait_settled(seen, timeout=30)), daemon=True)
    waiter.start()
    outbox.ack(outbox.claim(1, 1_000_000, 1_000_000, lane="person"))
    waiter.join(10)
    assert woken == [seen + 1] and outbox.person_work_depth() == 1
    assert outbox.wait_settled(seen + 1, timeout=0.01) == seen + 1  # nothing more settled: it times out


def test_sqlite_leases_commit_unflushed_and_what_was_accepted_commits_flushed(tmp_path) -> None:
    """A claim's leases (and giving them back) matter only while the deliverer runs: their commits do not
    wait for the disk (``synchronous=NORMAL``); deleting what Customer.io accepted does (``FULL``)."""
    from posthog_customerio.storage import SqliteStorage

    db = SqliteStorage(tmp_path / "db.sqlite", synchronous="FULL")
    outbox = Outbox(db)
    outbox.put([op("a", 1), op("b", 1)])
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)

    def level_at_each_commit() -> list[str]:
        level, levels = "FULL", []
        for statement in statements:
            if statement.upper().startswith("PRAGMA SYNCHRONOUS="):
                level = statement.split("=", 1)[1].strip().upper()
            elif statement.upper() == "COMMIT":
                levels.append(level)
        return levels

    first = outbox.claim(1, 100_000, 32_000)
    outbox.unclaim(first)
    assert level_at_each_commit() == ["NORMAL", "NORMAL"]
    statements.clear()
    claimed = outbox.claim(10, 100_000, 32_000)
    outbox.ack(claimed)
    assert level_at_each_commit() == ["NORMAL", "FULL"]
    assert db.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again
    db.close()


def test_a_sqlite_claim_does_not_read_the_rows_in_flight_again(tmp_path) -> None:
    """The rows this process's workers hold are leased in the file: a claim's scan leaves them out (a backlog's
    head in flight was read again by every claim), and what follows them for their people still waits."""
    from posthog_customerio.storage import SqliteStorage
    from posthog_customerio.storage.sql import SqlTransaction

    db = SqliteStorage(tmp_path / "db.sqlite")
    outbox = Outbox(db)
    outbox.put([op(f"p{n}", 1) for n in range(50)] + [op("p0", 2)] + [op(f"q{n}", 1) for n in range(10)])
    first = outbox.claim(50, 1_000_000, 32_000)
    assert len(first) == 50
    read: list[int] = []
    candidates = SqlTransaction.candidates

    def counted(self: SqlTransaction, *args: object, **kwargs: object) -> object:
        rows = candidates(self, *args, **kwargs)  # type: ignore[arg-type]
        read.extend(row.seq for row in rows)
        return rows

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SqlTransaction, "candidates", counted)
        second = outbox.claim(50, 1_000_000, 32_000)
    assert names(second) == [f"q{n}:e1" for n in range(10)]  # p0's second waits for its first
    assert not {item.seq for item in first} & set(read)  # the 50 in flight were not read again
    outbox.ack(first)
    assert names(outbox.claim(50, 1_000_000, 32_000)) == ["p0:e2"]
    db.close()


def test_claims_forgotten_while_the_database_failed_are_claimable_again(open_db) -> None:
    outbox = Outbox(open_db(), lease_s=60)
    outbox.put([op("a", 1), op("b", 1)])
    claimed = outbox.claim(10, 100_000, 32_000)
    outbox.forget_claims(claimed)  # e.g. the release failed: the rows keep their leases in the database
    assert names(outbox.claim(10, 100_000, 32_000)) == ["a:e1", "b:e1"]


def test_unleased_person_work_is_counted_up_to_a_bound(open_db) -> None:
    """Delivery's trickle check: person work nobody holds, anonymous events and claimed rows left out."""
    outbox = Outbox(open_db(), lease_s=60)
    anonymous = Operation("v", {"type": "anonymous", "action": "event", "name": "x"}, kind="anonymous")
    outbox.put([op("a", 1), op("b", 1), op("c", 1), anonymous])
    assert outbox.unleased_person_work(10) == 3 and outbox.unleased_person_work(2) == 2
    outbox.claim(1, 100_000, 32_000, lane="person")
    assert outbox.unleased_person_work(10) == 2


def test_sqlite_committed_reads_see_commits_and_a_threads_own_open_transaction(tmp_path) -> None:
    """:meth:`SqliteStorage.committed_reading` reads on a second connection (what is committed), except inside the
    reading thread's own open transaction, whose writes it then sees."""
    from posthog_customerio.storage import SqliteStorage

    db = SqliteStorage(tmp_path / "db.sqlite")
    outbox = Outbox(db)
    outbox.put([op("a", 1)])
    assert outbox.depth() == 1
    with db.transaction() as tx:
        outbox.enqueue(tx, [op("b", 1)])
        assert outbox.depth() == 2  # this thread's transaction, read where it is open
        seen_elsewhere: list[int] = []
        reader = threading.Thread(target=lambda: seen_elsewhere.append(Outbox(db).depth()))
        reader.start()
        reader.join(10)
        assert seen_elsewhere == [1]  # another thread reads what is committed, without waiting for the writer
    assert outbox.depth() == 2
    db.close()
