"""At CUSTOMERIO_MAX_RPS, batches wait longer and grow instead of queueing small ones.

A steady trickle of person events, more requests' worth than a low rate limit allows, is
delivered through real HTTP to the sandbox twice: with the rate adaptation and without. The
adapted run makes clearly fewer requests for the same events, and neither exceeds the limit.
Ratios and upper bounds only (a loaded machine changes timings, not these).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources import PostHogEvent

from ..helpers import make_settings

pytestmark = pytest.mark.e2e

MAX_RPS = 5.0
RATE = 40.0  # events per second offered: eight per request slot
EVENTS = 160


def trickle(sandbox: SandboxServer, tmp_path: Path, adapt: bool) -> tuple[list[float], int]:
    """Deliver a paced stream of person events; returns (request times, delivered operations)."""
    sandbox.state.reset()
    settings = make_settings(tmp_path / ("on" if adapt else "off"), sandbox, customerio_max_rps=MAX_RPS)
    with Runtime(settings) as runtime:
        deliverer = runtime.deliverer()
        deliverer.adapt_to_rate = adapt
        deliverer.start()
        started = time.monotonic()
        for n in range(EVENTS):
            event = PostHogEvent("clicked", f"person-{n % 20}", datetime.now(UTC), {"n": n})
            runtime.ingestor.ingest([event])
            deliverer.notify()
            time.sleep(max(0.0, started + (n + 1) / RATE - time.monotonic()))
        assert deliverer.wait_until_empty(60)
        deliverer.stop()
        delivered = deliverer.stats.delivered
    return sorted(r["time"] for r in sandbox.state.requests()), delivered


def within_limit(times: list[float]) -> bool:
    """No more requests in any stretch than the limit allows (one slot of slack for clock jitter)."""
    interval = 1 / MAX_RPS
    return all(
        times[j] - times[i] >= (j - i - 1) * interval * 0.9 for i in range(len(times)) for j in range(i + 1, len(times))
    )


def test_at_the_rate_limit_batches_grow_and_fewer_requests_are_made(sandbox: SandboxServer, tmp_path: Path) -> None:
    plain, plain_delivered = trickle(sandbox, tmp_path, adapt=False)
    adapted, adapted_delivered = trickle(sandbox, tmp_path, adapt=True)
    assert plain_delivered == adapted_delivered == EVENTS + 20  # every event, and one identify per person
    assert within_limit(plain) and within_limit(adapted)
    # without the adaptation the limit is used up with small batches; with it, a fraction of the requests
    assert len(adapted) <= 0.6 * len(plain), (len(adapted), len(plain))
