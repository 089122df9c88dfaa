"""``activity_queue`` on both backends: stored once per event_id, claimed by one owner at a time (leases), settled
by its owner only, re-queued, pruned; placement from the ``persons`` table (merges followed, never a guess)."""

from __future__ import annotations

import json
from collections.abc import Callable

from posthog_customerio.activity import ActivityInbox, ActivityStats, place
from posthog_customerio.mapping.activity import Activity
from posthog_customerio.storage import PersonRow, Storage
from posthog_customerio.storage.activity_sql import ActivitySettle


def activity(event_id: str, **identifiers: str) -> Activity:
    return Activity(event_id, "email", "opened", 1_704_067_200, identifiers, identifiers.get("id"))


def person(distinct_id: str, email: str | None = None, merged_into: str | None = None) -> PersonRow:
    return PersonRow(distinct_id, 1, email, 1, email, "{}", merged_into, json.dumps({}))


def test_stored_once_claimed_once_settled_by_its_owner(open_db: Callable[[], Storage]) -> None:
    first, second = open_db(), open_db()  # two replicas (or two connections to one SQLite file)
    inbox = ActivityInbox(first, ActivityStats(), clock=lambda: 100.0)
    assert [inbox.store(activity(f"e{n}", id="u1")) for n in range(3)] == [True] * 3
    assert inbox.store(activity("e1", id="u1")) is False  # Customer.io's retry
    assert inbox.stats.stored == 3 and inbox.stats.duplicates == 1
    mine = first.transact(lambda tx: tx.claim_activities(("queued",), "a", 100.0, 110.0, 2))
    theirs = second.transact(lambda tx: tx.claim_activities(("queued",), "b", 101.0, 111.0, 10))
    assert [row.event_id for row in mine] == ["e0", "e1"] and [row.event_id for row in theirs] == ["e2"]
    # the lease ended: another owner takes the row; the first owner's late settlement is then ignored
    again = second.transact(lambda tx: tx.claim_activities(("queued",), "b", 110.5, 121.0, 10))
    assert [row.event_id for row in again] == ["e0", "e1"]
    late = [ActivitySettle("e0", "captured", "u1", 1, None, 112.0, 112.0)]
    first.transact(lambda tx: tx.settle_activities("a", late))
    second.transact(lambda tx: tx.settle_activities("b", [*late, ActivitySettle("e1", "dead", "u1", 1, "400", 0, 0)]))
    with first.reading() as tx:
        assert tx.activity_counts() == {"captured": 1, "dead": 1, "queued": 1}
        assert tx.counters("customerio_activity") == {"stored": 3, "duplicates": 1}
        assert [row.event_id for row in tx.activity_rows(("dead",), 10)] == ["e1"]
    assert first.transact(lambda tx: tx.requeue_activities(("dead",), ["e1", "nope"], 200.0)) == 1
    assert first.transact(lambda tx: tx.prune_activities(112.5)) == 1
    with second.reading() as tx:
        assert tx.activity_counts() == {"queued": 2}


def test_placement_follows_the_persons_table(open_db: Callable[[], Storage]) -> None:
    db = open_db()
    db.transact(
        lambda tx: tx.upsert_persons(
            [
                person("anon-1", merged_into="user-1"),
                person("user-1", email="ada@example.com"),
                person("twin-a", email="same@example.com"),
                person("twin-b", email="same@example.com"),
            ]
        )
    )
    with db.reading() as tx:
        assert place(tx, activity("p1", id="anon-1")) == ("user-1", "")
        assert place(tx, activity("p2", email="ADA@example.com")) == ("user-1", "")
        assert place(tx, activity("p3", id="ada@example.com")) == ("user-1", "")
        twins, why = place(tx, activity("p4", email="same@example.com"))
        assert twins is None and "2 people" in why
        nobody, why = place(tx, activity("p5", id="stranger", cio_id="c9"))
        assert nobody is None and "stranger" in why
