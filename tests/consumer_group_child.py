"""``posthog-customerio ARGS`` as a user runs it, except that the process kills itself with SIGKILL (``kill -9``)
right before a Kafka offset commit once the file named by ``$CONSUMER_GROUP_KILL_FILE`` exists.

Used by ``tests/e2e/test_consumer_group.py``: the kill then lands in the window a random ``kill -9`` rarely hits,
after a batch was stored in the outbox and before its offsets were committed (no consumer close, no leave-group,
no database close), so the group's next owner of those partitions reads the batch again.

Only ``confluent_kafka.Consumer`` is replaced (before the product imports it); everything else is the real
command line: ``python tests/consumer_group_child.py consume --batch-size 50 ...``.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import confluent_kafka

KILL_FILE = "CONSUMER_GROUP_KILL_FILE"


#: the outboxes this process opened (its delivery workers' claims are in them)
OUTBOXES: list[Any] = []


def _in_flight_ids() -> list[str]:
    """The dedupe ids of the operations this process's workers hold now: sent, or about to be, and not settled.
    A ``kill -9`` leaves them leased; another consumer sends them again once the lease runs out, which is
    at-least-once delivery, not a double send (Customer.io's workspace dedupes them)."""
    ids: list[str] = []
    for outbox in OUTBOXES:
        seqs = sorted(outbox.in_flight_seqs())
        if seqs:
            with outbox.db.reading() as tx:
                payloads = tx.payloads(seqs)
            ids.extend(str(json.loads(row.payload).get("id", "")).upper() for row in payloads.values())
    return [found for found in ids if found]


class KilledBeforeCommit(confluent_kafka.Consumer):  # type: ignore[misc]
    """A consumer whose offset commit, once the kill file exists, is a ``kill -9`` of its own process instead
    (the ids its workers hold then are written to ``<kill file>.in-flight`` first)."""

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        trigger = os.environ.get(KILL_FILE)
        if trigger and os.path.exists(trigger):
            Path(trigger + ".in-flight").write_text(json.dumps(_in_flight_ids()))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().commit(*args, **kwargs)


confluent_kafka.Consumer = KilledBeforeCommit  # type: ignore[misc]

if __name__ == "__main__":
    from posthog_customerio import outbox
    from posthog_customerio.cli import main

    opened = outbox.Outbox.__init__

    def remembered(self: Any, *args: Any, **kwargs: Any) -> None:
        opened(self, *args, **kwargs)
        OUTBOXES.append(self)

    outbox.Outbox.__init__ = remembered  # type: ignore[method-assign]
    main()
