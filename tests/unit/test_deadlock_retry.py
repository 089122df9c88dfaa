"""A PostgreSQL transaction aborted to break a deadlock runs again, a bounded number of times (issue 24, item 3)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from psycopg.errors import DeadlockDetected, UniqueViolation

from posthog_customerio.storage.postgres import DEADLOCK_TRIES, retry_deadlocks


def flaky(failures: int, error: type[Exception] = DeadlockDetected) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def attempt() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise error("deadlock detected")
        return "committed"

    return calls, attempt


def test_a_deadlocked_transaction_runs_again_after_a_short_pause(caplog: pytest.LogCaptureFixture) -> None:
    calls, attempt = flaky(2)
    pauses: list[float] = []
    with caplog.at_level(logging.WARNING):
        assert retry_deadlocks(attempt, pause=pauses.append) == "committed"
    assert len(calls) == 3
    assert len(pauses) == 2 and all(0 < pause < 1 for pause in pauses)
    assert [record.levelname for record in caplog.records] == ["WARNING", "WARNING"]
    assert "running it again (2 of 5)" in caplog.records[0].getMessage()


def test_the_retries_are_bounded() -> None:
    calls, attempt = flaky(DEADLOCK_TRIES)
    with pytest.raises(DeadlockDetected):
        retry_deadlocks(attempt, pause=lambda _: None)
    assert len(calls) == DEADLOCK_TRIES


def test_other_errors_are_not_retried() -> None:
    calls, attempt = flaky(1, UniqueViolation)
    with pytest.raises(UniqueViolation):
        retry_deadlocks(attempt, pause=lambda _: None)
    assert len(calls) == 1
