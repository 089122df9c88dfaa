"""The source plug-in point (sources/base.py): the one run loop every pulling source shares."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from posthog_customerio.config import load_settings
from posthog_customerio.runtime import Runtime
from posthog_customerio.sources import PostHogEvent, parse_event
from posthog_customerio.sources.base import Batch, Intake, Source, run
from posthog_customerio.sources.store import Stored


def _event(distinct_id: str, **properties: Any) -> PostHogEvent:
    raw = {
        "event": "signed_up",
        "distinct_id": distinct_id,
        "timestamp": "2024-01-01T00:00:00Z",
        "properties": {"$set": {"email": f"{distinct_id}@example.com"}, **properties},
    }
    return parse_event(raw)


class ListSource(Source[Batch]):
    name = "test"

    def __init__(self, batches: list[Batch]) -> None:
        self.given = batches
        self.seen: list[tuple[int, int, int]] = []

    def batches(self) -> Iterator[Batch]:
        yield from self.given

    def stored(self, batch: Batch, stored: Stored) -> None:
        self.seen.append((stored.report.events, stored.report.operations, len(stored.rejected)))


def test_the_loop_counts_refused_input_stores_wakes_delivery_and_hands_each_batch_back(tmp_path: Path) -> None:
    settings = load_settings({"posthog_customerio_data_dir": tmp_path})
    woken: list[int] = []
    with Runtime(settings) as runtime:
        intake = Intake(runtime.ingestor, "test", lambda: woken.append(runtime.outbox.depth()))
        source = ListSource(
            [
                Batch([_event("a"), _event("bad", s="\ud800"), _event("b")], invalid=2),
                Batch([], invalid=1),  # nothing to store: no wake-up
                Batch([_event("c")]),
            ]
        )
        run(source, intake)
        assert [(events, rejected) for events, _, rejected in source.seen] == [(2, 1), (0, 0), (1, 0)]
        assert source.seen[0][1] > 0 and source.seen[1][1] == 0
        assert len(woken) == 2 and woken[0] > 0  # woken after the batch was stored, once per batch with operations
        assert runtime.ingestor.invalid_by_source["test"] == 2 + 1 + 1  # refused by the source, plus unstorable
        assert runtime.ingestor.received_by_source["test"] == 3


def test_the_runtime_intake_wakes_only_the_workers_this_process_started(tmp_path: Path) -> None:
    settings = load_settings({"posthog_customerio_data_dir": tmp_path})
    with Runtime(settings) as runtime:
        intake = runtime.intake("test")
        assert intake.source == "test" and intake.ingestor is runtime.ingestor
        intake.wake()  # no deliverer: nothing to do, no error
