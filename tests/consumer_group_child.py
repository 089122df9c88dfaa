"""``posthog-customerio ARGS`` as a user runs it, except that the process kills itself with SIGKILL (``kill -9``)
right before a Kafka offset commit once the file named by ``$CONSUMER_GROUP_KILL_FILE`` exists.

Used by ``tests/e2e/test_consumer_group.py``: the kill then lands in the window a random ``kill -9`` rarely hits,
after a batch was stored in the outbox and before its offsets were committed (no consumer close, no leave-group,
no database close), so the group's next owner of those partitions reads the batch again.

Only ``confluent_kafka.Consumer`` is replaced (before the product imports it); everything else is the real
command line: ``python tests/consumer_group_child.py consume --batch-size 50 ...``.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import confluent_kafka

KILL_FILE = "CONSUMER_GROUP_KILL_FILE"


class KilledBeforeCommit(confluent_kafka.Consumer):  # type: ignore[misc]
    """A consumer whose offset commit, once the kill file exists, is a ``kill -9`` of its own process instead."""

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        trigger = os.environ.get(KILL_FILE)
        if trigger and os.path.exists(trigger):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().commit(*args, **kwargs)


confluent_kafka.Consumer = KilledBeforeCommit  # type: ignore[misc]

if __name__ == "__main__":
    from posthog_customerio.cli import main

    main()
