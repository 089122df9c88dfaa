"""The settlement policy on its own: a unit and a classified answer -> what to do with each operation."""

from __future__ import annotations

from typing import Any

import pytest

from posthog_customerio.backoff import Backoff
from posthog_customerio.operations import Claimed
from posthog_customerio.output.base import Outcome, SendResult, Unit
from posthog_customerio.settlement import Settlement, Verdict


def items(count: int) -> list[Claimed]:
    return [Claimed(seq, f"p{seq}", "{}", 2, 0, 0.0) for seq in range(count)]


def seqs(claimed: Any) -> list[int]:
    return [item.seq for item in claimed]


def summary(verdict: Verdict) -> dict[str, Any]:
    return {
        "ack": seqs(verdict.ack),
        "dead": [(item.seq, reason, status) for item, reason, status, _ in verdict.dead],
        "release": seqs(verdict.release),
        "halves": None if verdict.halves is None else [seqs(half) for half in verdict.halves],
        "auth": verdict.auth_error,
        "paused": verdict.pause_s is not None,
    }


NONE: dict[str, Any] = {"ack": [], "dead": [], "release": [], "halves": None, "auth": None, "paused": False}

#: (case, unit size, answer, expected verdict)
CASES: list[tuple[str, int, SendResult, dict[str, Any]]] = [
    ("200 acks everything", 3, SendResult(Outcome.OK, 200), {**NONE, "ack": [0, 1, 2]}),
    (
        "207 dead-letters the listed items, acks the rest",
        3,
        SendResult(Outcome.PARTIAL, 207, item_errors={1: {"reason": "invalid", "batch_index": 1}, 7: {"reason": "x"}}),
        {**NONE, "ack": [0, 2], "dead": [(1, "invalid", 207)]},
    ),
    (
        "a message wins over a reason",
        1,
        SendResult(Outcome.PARTIAL, 207, item_errors={0: {"message": "m", "reason": "r"}}),
        {**NONE, "dead": [(0, "m", 207)]},
    ),
    (
        "a 207 without a readable list of rejected items is not a success: the batch is halved",
        3,
        SendResult(Outcome.OK, 207, "<html>oops</html>"),
        {**NONE, "halves": [[0], [1, 2]]},
    ),
    (
        "a 207 listing only positions outside the batch is halved too",
        2,
        SendResult(Outcome.PARTIAL, 207, item_errors={5: {"reason": "x", "batch_index": 5}}),
        {**NONE, "halves": [[0], [1]]},
    ),
    (
        "a single operation answered 207 without a readable list is the rejected one",
        1,
        SendResult(Outcome.OK, 207, "not json"),
        {**NONE, "dead": [(0, "HTTP 207 without a readable list of rejected items: not json", 207)]},
    ),
    (
        "a refused batch is halved",
        5,
        SendResult(Outcome.PERMANENT, 400, "bad"),
        {**NONE, "halves": [[0, 1], [2, 3, 4]]},
    ),
    (
        "a refused single operation is dead-lettered",
        1,
        SendResult(Outcome.PERMANENT, 422, "no"),
        {**NONE, "dead": [(0, "HTTP 422: no", 422)]},
    ),
    ("5xx releases and pauses", 2, SendResult(Outcome.TRANSIENT, 503), {**NONE, "release": [0, 1], "paused": True}),
    (
        "network errors release and pause",
        2,
        SendResult(Outcome.TRANSIENT, error="ConnectError: refused"),
        {**NONE, "release": [0, 1], "paused": True},
    ),
    (
        "401 releases and pauses on credentials",
        2,
        SendResult(Outcome.AUTH, 401, error="Site ID or API key invalid"),
        {**NONE, "release": [0, 1], "auth": "Site ID or API key invalid"},
    ),
]


@pytest.mark.parametrize(("case", "size", "result", "expected"), CASES, ids=[case[0] for case in CASES])
def test_settlement(case: str, size: int, result: SendResult, expected: dict[str, Any]) -> None:
    verdict = Settlement().settle(Unit(items(size)), result)
    assert summary(verdict) == expected
    assert verdict.delivered is not bool(expected["release"])


def test_a_transient_failure_backs_off_and_retry_after_wins() -> None:
    settlement = Settlement(Backoff(base=1.0, cap=8.0))
    delays = [settlement.settle(Unit(items(1)), SendResult(Outcome.TRANSIENT, 500)).pause_s for _ in range(5)]
    bounds = [(0.5, 1), (1, 2), (2, 4), (4, 8), (4, 8)]  # doubling, capped, jittered in [1/2, 1]
    assert None not in delays
    assert all(low <= delay <= high for delay, (low, high) in zip(delays, bounds, strict=True))  # type: ignore[operator]
    told = settlement.settle(Unit(items(1)), SendResult(Outcome.TRANSIENT, 429, retry_after=7.0))
    assert told.pause_s == 7.0 and told.reason == "HTTP 429"


def test_a_success_resets_the_backoff() -> None:
    backoff = Backoff(base=1.0, cap=60.0)
    settlement = Settlement(backoff)
    for _ in range(4):
        settlement.settle(Unit(items(1)), SendResult(Outcome.TRANSIENT, 500))
    assert backoff.failures == 4
    settlement.settle(Unit(items(1)), SendResult(Outcome.OK, 200))
    assert backoff.failures == 0
    first = settlement.settle(Unit(items(1)), SendResult(Outcome.TRANSIENT, 500)).pause_s
    assert first is not None and 0.5 <= first <= 1.0


def test_settling_writes_nothing() -> None:
    # the policy only decides: the claimed items are returned, not acted on
    batch = items(2)
    verdict = Settlement().settle(Unit(batch), SendResult(Outcome.OK, 200))
    assert list(verdict.ack) == batch and verdict.errors == ()
