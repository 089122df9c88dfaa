"""The rolling latency window behind person work's p50/p99."""

from __future__ import annotations

from posthog_customerio.latency import LatencyWindow


def test_percentiles_over_the_window_only() -> None:
    now = [0.0]
    window = LatencyWindow(window_s=60, clock=lambda: now[0])
    assert window.percentiles() == {"count": 0, "p50_s": None, "p99_s": None, "window_s": 60}
    window.observe([100.0] * 10)  # old: leaves the window
    now[0] = 30.0
    window.observe([float(n) for n in range(1, 101)])
    assert window.percentiles()["count"] == 110
    now[0] = 61.0
    figures = window.percentiles()
    assert figures["count"] == 100
    assert figures["p50_s"] == 50.0
    assert figures["p99_s"] == 99.0
    now[0] = 200.0
    assert window.percentiles()["count"] == 0
