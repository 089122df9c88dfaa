"""Short leases kept alive by a heartbeat (issue 24, item 4): a killed replica's people resumed only after
the whole ``LEASE_S`` (30 s), so the lease could not be short while a live replica's long waits needed it long.

Now a live replica renews every lease it holds every ``LEASE_S``/3: a claim survives any wait, and a dead
replica (no more beats, claims never settled) leaves leases that run out at most ``LEASE_S`` after its last
beat. Two replicas in this process on one PostgreSQL, ``LEASE_S=2``, real HTTP to the sandbox.
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from posthog_customerio.config import Settings
from posthog_customerio.operations import Operation
from posthog_customerio.outbox import LeaseHeartbeat, Outbox
from posthog_customerio.pacing import finite_delay
from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.storage import PostgresStorage

from ..helpers import assert_exactly_once, make_runtime, wait_for

LEASE_S = 2.0
#: after a lease ran out: the other replica's next look at the queue, its claim and its request
PICK_UP_S = 4.0


def event_id(person: int, n: int) -> str:
    """A ULID (Customer.io's event ids are), one per person and number."""
    return f"01HQ7E0000000000000000{person:02d}{n:02d}"


def operations(people: int, per_person: int) -> list[Operation]:
    return [
        Operation(
            f"p{person}",
            {
                "type": "person",
                "identifiers": {"id": f"p{person}"},
                "action": "event",
                "name": "e",
                "id": event_id(person, n),
                "attributes": {"n": n},
            },
        )
        for n in range(per_person)
        for person in range(people)
    ]


IDS = [event_id(person, n) for person in range(3) for n in range(3)]


def lease_until(outbox: Outbox) -> float:
    with outbox.db.reading() as tx:
        return float(tx.execute("SELECT MAX(lease_until) FROM outbox").fetchone()[0])


def replica(stack: ExitStack, sandbox: SandboxServer, pg_url: str, data_dir: Path, **overrides: Any) -> Runtime:
    runtime = make_runtime(sandbox, data_dir, outbox_url=pg_url, lease_s=LEASE_S, sqlite_synchronous=None, **overrides)
    return stack.enter_context(runtime)


def test_the_default_lease_is_short_and_renewed_three_times_per_lease(pg_url: str) -> None:
    assert Settings.model_fields["lease_s"].default == 10.0
    outbox = Outbox(PostgresStorage(pg_url), lease_s=10.0)
    try:
        assert outbox.claims.heartbeat_s == 10.0 / 3
        assert outbox.claims.bound_timeout(30.0) == 7.5  # every request still ends well inside its lease
    finally:
        outbox.db.close()


def test_a_dead_replicas_people_go_out_within_the_lease(sandbox: SandboxServer, pg_url: str, tmp_path: Path) -> None:
    """Replica A claims three people's operations and beats for two leases (B, delivering, gets none of
    them), then dies: no more beats, its claim never settled. B sends them within LEASE_S of the death."""
    with ExitStack() as stack:
        dead = Outbox(stack.enter_context(_closing(PostgresStorage(pg_url))), lease_s=LEASE_S)
        dead.put(operations(people=3, per_person=3))
        assert len(dead.claim(100, 1_000_000, 32_000)) == 9
        first_lease = lease_until(dead)
        heartbeat = LeaseHeartbeat(dead)
        heartbeat.start()
        other = replica(stack, sandbox, pg_url, tmp_path / "b")
        deliverer = other.deliverer()
        deliverer.start()
        stack.callback(deliverer.stop)
        wait_for(lambda: time.time() > first_lease + LEASE_S, "two leases to pass", timeout=30)
        assert heartbeat.beats >= 3
        assert sandbox_ids(sandbox) == [], "a live replica's claim was taken over"
        heartbeat.stop()  # the replica dies: its leases run out LEASE_S after its last beat at the latest
        died = time.monotonic()
        wait_for(lambda: len(sandbox_ids(sandbox)) >= 9, "the other replica to send them", timeout=30)
        took = time.monotonic() - died
        assert took < LEASE_S + PICK_UP_S, f"the dead replica's people waited {took:.1f} s"
        assert_exactly_once(sandbox, IDS)
        wait_for(lambda: deliverer.stats.delivered == 9, "the other replica to record them as delivered")


def test_a_live_replica_waiting_longer_than_the_lease_keeps_its_claim(
    sandbox: SandboxServer, pg_url: str, tmp_path: Path
) -> None:
    """Replica A's worker claims three people's operations, then waits for its request slot three leases
    long (a pause shared by replicas, a busy rate limit); replica B delivers meanwhile. A's claim is
    never taken over: A sends everything once when its slot comes, B sends nothing, no claim is lost."""
    with ExitStack() as stack:
        live = replica(stack, sandbox, pg_url, tmp_path / "a", delivery_concurrency=1)
        other = replica(stack, sandbox, pg_url, tmp_path / "b")
        live.outbox.put(operations(people=3, per_person=3))
        slow = live.deliverer()
        waiting, slot = threading.Event(), threading.Event()
        take = slow.limiter.take

        def late_slot(stop: threading.Event) -> bool:
            if not slot.is_set():
                waiting.set()
                slot.wait(finite_delay(60))
            return take(stop)

        slow.limiter.take = late_slot  # type: ignore[method-assign]
        slow.start()
        stack.callback(slow.stop)
        wait_for(waiting.is_set, "A's worker to claim and wait for its slot")
        assert live.outbox.in_flight() == 9
        claimed_until = lease_until(live.outbox)
        fast = other.deliverer()
        fast.start()
        stack.callback(fast.stop)
        wait_for(lambda: time.time() > claimed_until + 2 * LEASE_S, "three leases to pass", timeout=30)
        assert sandbox_ids(sandbox) == [], "another replica sent a live replica's claim"
        slot.set()
        wait_for(lambda: len(sandbox_ids(sandbox)) >= 9, "A to send its claim", timeout=30)
        assert_exactly_once(sandbox, IDS)
        wait_for(lambda: slow.stats.delivered == 9, "A to record them as delivered")
        assert fast.stats.delivered == 0
        assert slow.stats.last_error is None, slow.stats.last_error  # no LeaseLost


def sandbox_ids(sandbox: SandboxServer) -> list[str]:
    return [event["id"] for event in sandbox.state.events() if event.get("id")]


class _closing:
    """A storage closed when the block ends."""

    def __init__(self, db: PostgresStorage) -> None:
        self.db = db

    def __enter__(self) -> PostgresStorage:
        return self.db

    def __exit__(self, *_: object) -> None:
        self.db.close()
