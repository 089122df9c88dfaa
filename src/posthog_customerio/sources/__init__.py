"""Input sources: PostHog events in every shape, and the jobs that bring them into the outbox.

* :mod:`.base` — the plug-in point: a :class:`~.base.Source` reads batches, :func:`~.base.run` (the one
  run loop) stores them through an :class:`~.base.Intake` and wakes delivery;
* :mod:`.events` — the strict parsers (:mod:`.parsing`, :mod:`.json_strict`, :mod:`.records`) and the event
  model (:class:`PostHogEvent`, defined in :mod:`posthog_customerio.events`), re-exported here;
* :mod:`.sdk_time` — SDK clock correction on the capture paths (PostHog's capture rules);
* :mod:`.decoding` — the body encodings PostHog SDKs use (gzip, base64 forms, lz64);
* :mod:`.store` — the one policy for events that cannot be stored (HTTP, file and Kafka share it);
* :mod:`.files` — the file sources and job (:func:`~.files.send_file`: JSONL / JSON array, :func:`~.files.send_export`:
  an events batch export → outbox → Customer.io);
* :mod:`.kafka` — the Kafka source and job (:func:`~.kafka.consume`).
* :mod:`.posthog_api` — reading every person of a project from PostHog's private API, paced and
  retried, with a resumable checkpoint (groundwork for ``sync-persons``).
* :mod:`.batch_exports` — the files of a PostHog batch export (JSON Lines or Parquet, persons and events models),
  read into :class:`~.batch_exports.ExportedPerson` and :class:`PostHogEvent` (the ``exports`` extra for Parquet/zstd).

The HTTP receivers live in :mod:`posthog_customerio.service`.
"""

from __future__ import annotations

from .events import (
    EventParseError,
    ParsedItem,
    PostHogEvent,
    TooManyEvents,
    loads_strict,
    parse_event,
    parse_payload,
    parse_v1_batch,
    read_events,
    to_unix_seconds,
)
from .sdk_time import SdkClock, capture_sent_at, v1_sent_at

__all__ = [
    "EventParseError",
    "ParsedItem",
    "PostHogEvent",
    "SdkClock",
    "TooManyEvents",
    "capture_sent_at",
    "loads_strict",
    "parse_event",
    "parse_payload",
    "parse_v1_batch",
    "read_events",
    "to_unix_seconds",
    "v1_sent_at",
]
