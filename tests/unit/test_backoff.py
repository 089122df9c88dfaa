"""The one backoff (:mod:`posthog_customerio.backoff`): deterministic with an injected random source."""

from __future__ import annotations

import math

import pytest

from posthog_customerio.backoff import Backoff


def fixed(value: float):  # type: ignore[no-untyped-def]
    return lambda: value


def test_delays_double_from_base_up_to_the_cap_without_jitter() -> None:
    backoff = Backoff(base=0.5, cap=10.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.failures == 7


def test_delay_is_pure_and_zero_before_any_failure() -> None:
    backoff = Backoff(base=1.0, cap=10.0, jitter=0.0)
    assert [backoff.delay(n) for n in range(6)] == [0.0, 1.0, 2.0, 4.0, 8.0, 10.0]
    assert backoff.failures == 0


def test_jitter_takes_a_random_share_of_the_delay() -> None:
    # the default jitter (½): a delay in [d/2, d], from the injected random source
    assert Backoff(base=4.0, cap=60.0, random=fixed(0.0)).next_delay() == 2.0
    assert Backoff(base=4.0, cap=60.0, random=fixed(0.5)).next_delay() == 3.0
    assert Backoff(base=4.0, cap=60.0, random=fixed(0.999)).next_delay() == pytest.approx(3.998)
    assert Backoff(base=4.0, cap=60.0, jitter=1.0, random=fixed(0.25)).next_delay() == 1.0


def test_jitter_stays_within_its_bounds_after_the_cap() -> None:
    backoff = Backoff(base=1.0, cap=8.0, random=fixed(0.0))
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]


def test_retry_after_wins_and_is_capped_by_the_configured_max() -> None:
    backoff = Backoff(base=1.0, cap=8.0, jitter=0.0, retry_after_max=30.0)
    assert backoff.next_delay(retry_after=7.0) == 7.0
    assert backoff.next_delay(retry_after=120.0) == 30.0
    assert backoff.next_delay(retry_after=-3.0) == 0.0
    assert backoff.failures == 3  # a Retry-After still counts as a failure
    assert backoff.next_delay(retry_after=math.nan) == 8.0  # not a number: the computed delay
    assert backoff.next_delay(retry_after=math.inf) == 8.0


def test_retry_after_is_not_capped_by_default() -> None:
    assert Backoff(cap=1.0).next_delay(retry_after=600.0) == 600.0


def test_reset_starts_over() -> None:
    backoff = Backoff(base=1.0, cap=60.0, jitter=0.0)
    for _ in range(4):
        backoff.next_delay()
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.next_delay() == 1.0


def test_a_long_outage_stays_at_the_cap() -> None:
    backoff = Backoff(base=0.5, cap=60.0, jitter=0.0, failures=5_000)
    assert backoff.next_delay() == 60.0


def test_jitter_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=1.5)
