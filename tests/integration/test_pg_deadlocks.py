"""PostgreSQL: transactions locking overlapping outbox rows never deadlock, and one that does runs again
(issue 24, item 3: a delivery worker died on ``DeadlockDetected … relation "outbox"``).

Every statement that locks several outbox rows takes their locks in seq order, in one statement; the
first test hammers overlapping batches from two replicas with those statements (each in its own
transaction, as the outbox issues them: no retry here) and expects no deadlock at all. The second makes
a real deadlock and checks that :meth:`PostgresStorage.transact` runs the aborted transaction again.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from posthog_customerio.outbox import Outbox
from posthog_customerio.storage import NewOperation, PostgresStorage, Transaction
from posthog_customerio.storage.postgres import PostgresTransaction

from ..helpers import wait_for

ROWS = 120
#: how long the two replicas churn the same rows
CHURN_S = 6.0


def _rows(count: int, kind: str = "person") -> list[NewOperation]:
    now = time.time()
    rows = []
    for n in range(count):
        person = f"p{random.randrange(20)}"
        payload = json.dumps({"type": "person", "identifiers": {"id": person}, "action": "event", "name": f"e{n}"})
        rows.append(NewOperation(person, payload, len(payload), now, None, kind))
    return rows


def _churn(
    db: PostgresStorage, owner: str, seed: int, stop: float, errors: list[BaseException], rounds: list[int]
) -> None:
    """Lease, renew, release, give back, acknowledge (delete and queue new rows), adopt and expire random
    overlapping batches, each listed in a random order, each statement in its own transaction."""
    rng = random.Random(seed)
    try:
        while time.monotonic() < stop:
            with db.reading() as reader:
                seqs = [int(seq) for (seq,) in reader.execute("SELECT seq FROM outbox").fetchall()]
            batch = rng.sample(seqs, min(40, len(seqs)))  # random order: the database must not care
            now = time.time()
            step = rng.randrange(7)
            with db._transaction() as tx:
                if step == 0:
                    tx.lease(owner, now + 30, batch)
                elif step == 1:
                    tx.renew_leases(owner, now + 30, batch)
                elif step == 2:
                    tx.release_operations("retry", batch, owner)
                elif step == 3:
                    tx.unlease(owner, batch)
                elif step == 4:  # an acknowledgement; the queue refilled
                    tx.delete_operations(batch[:10])
                    tx.insert_operations(_rows(10, rng.choice(["person", "anonymous"])))
                elif step == 5:  # an adoption's delete; the queue refilled
                    tx.delete_unleased(batch[:10], now)
                    tx.insert_operations(_rows(10, "anonymous"))
                else:  # an expiry of anonymous events; the queue refilled
                    tx.expire_anonymous(now + 1, None, now, set(), 10)
                    tx.insert_operations(_rows(10, "anonymous"))
            rounds.append(1)
    except BaseException as exc:  # reported by the test
        errors.append(exc)


def test_replicas_settling_overlapping_batches_never_deadlock(pg_url: str) -> None:
    replicas = [PostgresStorage(pg_url), PostgresStorage(pg_url)]
    try:
        Outbox(replicas[0]).db.transact(lambda tx: tx.insert_operations(_rows(ROWS)))
        errors: list[BaseException] = []
        rounds: list[int] = []
        stop = time.monotonic() + CHURN_S
        threads = [
            threading.Thread(target=_churn, args=(db, f"replica-{n}:{worker}", n * 10 + worker, stop, errors, rounds))
            for n, db in enumerate(replicas)
            for worker in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(CHURN_S + 60)
        assert not any(thread.is_alive() for thread in threads)
        deadlocks = [exc for exc in errors if isinstance(exc, psycopg.errors.DeadlockDetected)]
        assert not deadlocks, f"{len(deadlocks)} deadlocks, e.g. {deadlocks[0]}"
        assert not errors, errors
        assert len(rounds) > 200  # they did churn
    finally:
        for db in replicas:
            db.close()


def _waiting_for_a_lock(db: PostgresStorage, pid: int) -> bool:
    with db.reading() as tx:
        return bool(tx.execute("SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", (pid,)).fetchone()[0])


def test_a_transaction_aborted_to_break_a_deadlock_runs_again(pg_url: str) -> None:
    """The outbox's transactions (:meth:`PostgresStorage.transact`) survive a deadlock: PostgreSQL aborts
    one of the two, which runs again once the other went on."""
    db = PostgresStorage(pg_url)
    other = psycopg.connect(pg_url)
    try:
        db.transact(lambda tx: tx.insert_operations(_rows(2)))
        first, second = sorted(int(seq) for (seq,) in other.execute("SELECT seq FROM outbox").fetchall())
        other.commit()
        attempts: list[int] = []
        backend: list[int] = []
        holding = threading.Event()

        def work(tx: Transaction) -> str:
            assert isinstance(tx, PostgresTransaction)
            attempts.append(1)
            backend.append(int(tx.execute("SELECT pg_backend_pid()").fetchone()[0]))
            tx.execute("SELECT seq FROM outbox WHERE seq = %s FOR UPDATE", (second,))
            holding.set()
            tx.execute("SELECT seq FROM outbox WHERE seq = %s FOR UPDATE", (first,))  # waits for `other`
            return "done"

        outcome: list[Any] = []
        thread = threading.Thread(target=lambda: outcome.append(_outcome(lambda: db.transact(work))))
        other.execute("SELECT seq FROM outbox WHERE seq = %s FOR UPDATE", (first,))
        thread.start()
        holding.wait(30)
        wait_for(lambda: _waiting_for_a_lock(db, backend[0]), "the transaction to wait for the first row")
        # this one waits for the second row now: a cycle; the transaction that waited first is aborted
        other.execute("SELECT seq FROM outbox WHERE seq = %s FOR UPDATE", (second,))
        other.commit()
        thread.join(30)
        assert outcome == ["done"], outcome
        assert len(attempts) == 2
    finally:
        other.close()
        db.close()


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:  # reported by the test
        return exc


@pytest.fixture(autouse=True)
def _reproducible() -> None:
    random.seed(24)
