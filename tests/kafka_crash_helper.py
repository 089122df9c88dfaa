"""Run :func:`consume` and die like ``kill -9`` between storing a batch and committing its offsets.

Used by ``tests/integration/test_kafka_source.py``: the first offset commit ends the process with
``os._exit`` — no consumer close, no leave-group, no database close — right after the
batch was committed to the outbox. The next consumer of the group must read that batch again.

Usage: ``python tests/kafka_crash_helper.py BOOTSTRAP TOPIC GROUP DATA_DIR TRACK_URL [KEY=VALUE ...]``
(extra arguments are librdkafka settings). Exits with :data:`CRASH_EXIT_CODE` on the crash.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from confluent_kafka import Consumer

from posthog_customerio.config import load_settings
from posthog_customerio.runtime import Runtime
from posthog_customerio.sources import kafka as kafka_source

CRASH_EXIT_CODE = 37


class CrashOnCommit(Consumer):  # type: ignore[misc]
    """A consumer whose first offset commit kills the process instead."""

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        sys.stdout.write("crashing before the offset commit\n")
        sys.stdout.flush()
        os._exit(CRASH_EXIT_CODE)


def main(argv: list[str]) -> int:
    bootstrap, topic, group, data_dir, track_url, *pairs = argv
    settings = load_settings(
        {
            "customerio_site_id": os.environ["CUSTOMERIO_SITE_ID"],
            "customerio_api_key": os.environ["CUSTOMERIO_API_KEY"],
            "customerio_track_url": track_url,
            "posthog_customerio_data_dir": data_dir,
            "sqlite_synchronous": "NORMAL",
        }
    )
    kafka_source.Consumer = CrashOnCommit  # type: ignore[misc]
    runtime = Runtime(settings)
    kafka_source.consume(
        runtime, bootstrap, topic, group, poll_timeout_s=0.2, config=kafka_source.load_kafka_config(pairs)
    )
    return 0  # not reached: the first batch crashes


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
