"""The receivers' hot path (issue 22): what it does on the event loop answers as the slower path did.

The group commit awaited on the loop (one wake-up per group, a cancelled waiter harmless), the outbox's room
from recent counts (one count for the requests waiting on it), the bound known without a count, and JSON
parsed without the counting decoder where no array can pass the limit (the same values, the same refusals).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from posthog_customerio.bound import OutboxBound
from posthog_customerio.ingestion import GroupCommitter, Ingestor
from posthog_customerio.mapping import MappingConfig
from posthog_customerio.outbox import Outbox
from posthog_customerio.service.bodies import HttpError, parse_json
from posthog_customerio.service.room import RoomGauge
from posthog_customerio.service.wakeups import Wakeups, wait_for
from posthog_customerio.sources import PostHogEvent
from posthog_customerio.storage import SqliteStorage

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _answer(body: bytes, max_events: int) -> Any:
    """What :func:`parse_json` gives: the value, or the refusal (status, message)."""
    try:
        return ("ok", parse_json(body, max_events))
    except HttpError as exc:
        return ("refused", exc.status, exc.message)


def _counted_only(body: bytes, max_events: int) -> Any:
    """The same through the counting decoder alone (what every body went through before)."""
    from posthog_customerio.service import bodies

    original = bodies.loads_strict
    try:
        bodies.loads_strict = lambda text, max_items=None: original(text, max_items if max_items else max_events)
        return _answer(body, max_events)
    finally:
        bodies.loads_strict = original


@pytest.mark.parametrize(
    "body",
    [
        b'{"event": {"event": "e", "distinct_id": "u"}, "person": {"properties": {"a": 1}}}',
        b'[{"event": "a"}, {"event": "b"}]',
        b'[{"event": "a"}, {"event": "b"}, {"event": "c"}]',  # over a limit of 2: 413 either way
        b'{"batch": [1, 2, 3], "batch": []}',  # a duplicate key: the counting decoder saw the first array
        b'{"api_key": "k", "batch": [{"event": "a"}]}',
        b'{"a": NaN}',
        b'{"a": 1e999}',
        b'{"a": "\\ud800"}',
        b'{"a": "x\\u0000y"}',
        b"[1, 2",
        b'{"a": 1} x',
        b'{"a": 1,}',
        b"\xff\xfe{\x00}\x00",
        b'"just a string"',
        b"[" * 150 + b"]" * 150,
        b"\xc3\x28",
    ],
)
def test_json_parsed_without_the_counting_decoder_answers_as_with_it(body: bytes) -> None:
    assert _answer(body, 2) == _counted_only(body, 2)


def test_a_body_with_more_commas_than_the_limit_is_counted_as_before() -> None:
    body = b"[" + b",".join(b"{}" for _ in range(5)) + b"]"
    assert _answer(body, 4) == ("refused", 413, _counted_only(body, 4)[2])
    assert _answer(body, 5)[0] == "ok"


def test_the_bound_says_when_it_needs_a_count(tmp_path: Path) -> None:
    db = SqliteStorage(tmp_path / "db.sqlite", synchronous="NORMAL")
    now = [100.0]
    written = [0]
    bound = OutboxBound(Outbox(db), 10, lambda: written[0], clock=lambda: now[0])
    assert bound.full_if_known(1.0) is None  # never counted
    assert bound.full(max_age_s=1.0) is False  # counts: empty
    assert bound.full_if_known(1.0) is False  # the estimate (0 + nothing written) is under the bound
    written[0] = 12  # this process wrote past the bound since: the estimate says maybe, a fresh count says no
    assert bound.full_if_known(1.0) is False  # the count is fresh: 0 operations of person work
    now[0] += 2.0
    assert bound.full_if_known(1.0) is None  # stale: a count is needed


def test_room_counts_once_for_requests_waiting_together(tmp_path: Path) -> None:
    db = SqliteStorage(tmp_path / "db.sqlite", synchronous="NORMAL")
    outbox = Outbox(db)
    counts: list[int] = []
    depth = outbox.depth

    def counting_depth(max_age_s: float = 0.0) -> int:
        counts.append(1)
        return depth(max_age_s)

    outbox.depth = counting_depth  # type: ignore[method-assign]
    room = RoomGauge(outbox, OutboxBound(outbox, 1_000), max_queue=3)

    async def requests() -> None:
        await asyncio.gather(*(room.check("webhook") for _ in range(20)))
        await room.check("webhook")  # the count is fresh: none more

    asyncio.run(requests())
    assert len(counts) == 1


def test_room_refuses_at_max_queue_with_retry_after(tmp_path: Path) -> None:
    db = SqliteStorage(tmp_path / "db.sqlite", synchronous="NORMAL")
    ingestor = Ingestor(db, Outbox(db), MappingConfig(anonymous_events="person"))
    ingestor.ingest([PostHogEvent("clicked", f"p{n}", NOW, {}) for n in range(2)], "webhook")
    room = RoomGauge(ingestor.outbox, OutboxBound(ingestor.outbox, 1_000), max_queue=2)
    with pytest.raises(HttpError) as refused:
        asyncio.run(room.check("webhook"))
    assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "30"}
    assert "(MAX_QUEUE 2)" in refused.value.message


def test_a_group_of_futures_wakes_the_loop_once() -> None:
    async def main() -> tuple[list[int], int]:
        loop = asyncio.get_running_loop()
        wakes = []
        original = loop.call_soon_threadsafe

        def counting(*args: Any, **kwargs: Any) -> Any:
            wakes.append(1)
            return original(*args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        wakeups = Wakeups(loop)
        futures: list[Future[int]] = [Future() for _ in range(50)]
        waiters = [wakeups.wait(future) for future in futures]
        error = Future()  # type: ignore[var-annotated]
        failed = wakeups.wait(error)

        def finish() -> None:  # as the committer does: every future of the group, one after the other
            for n, future in enumerate(futures):
                future.set_result(n)
            error.set_exception(ValueError("stored nothing"))

        thread = threading.Thread(target=finish)
        thread.start()
        thread.join()  # on the loop's thread: the loop takes the group only once all of it is finished
        results = await asyncio.gather(*waiters)
        with pytest.raises(ValueError, match="stored nothing"):
            await failed
        return results, len(wakes)

    results, wakes = asyncio.run(main())
    assert results == list(range(50)) and wakes == 1


def test_a_cancelled_waiter_leaves_the_group_commit_working(tmp_path: Path) -> None:
    db = SqliteStorage(tmp_path / "db.sqlite", synchronous="NORMAL")
    ingestor = Ingestor(db, Outbox(db), MappingConfig(anonymous_events="person"))
    committer = GroupCommitter(ingestor)

    async def main() -> None:
        with db.lock:  # the commit waits: the request's waiter is cancelled meanwhile (a server shutting down)
            waiting = asyncio.ensure_future(wait_for(committer.submit([PostHogEvent("a", "p1", NOW, {})], "webhook")))
            await asyncio.sleep(0)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        report = await wait_for(committer.submit([PostHogEvent("b", "p2", NOW, {})], "webhook"))
        assert report.events == 1

    asyncio.run(main())
    assert ingestor.totals.events == 2  # the cancelled request was committed all the same
