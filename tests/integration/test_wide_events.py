"""One wide event never stalls ingestion (issue "Hardening II", item 1).

Fitting event data to Customer.io's limits is linear, runs before the write transaction takes
the writer, and its result fits (32,000 bytes per operation), with the dropped names bounded.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from posthog_customerio import limits, mapping
from posthog_customerio.operations import encode_payload
from posthog_customerio.sandbox import SandboxServer
from posthog_customerio.sources import parse_event

from ..helpers import deliver_events, ev, make_runtime
from ..service import running_service


def wide(n: int, distinct_id: str = "u1") -> dict[str, Any]:
    return ev("wide", distinct_id, 0, properties={f"p{i}": f"v{i}" for i in range(n)})


def test_fitting_event_data_is_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every property is measured a bounded number of times (the old loop re-measured the rest per drop)."""
    calls = 0
    real = limits.json_len

    def counting(value: Any) -> int:
        nonlocal calls
        calls += 1
        return real(value)

    monkeypatch.setattr(limits, "json_len", counting)
    for n in (8_000, 32_000):
        calls = 0
        data = {f"p{i}": f"v{i}" for i in range(n)}
        kept, listed = limits.fit_event_data(data, 31_000)
        assert calls <= 3 * n + 1_000, (n, calls)
        assert real(kept) + real(listed) + 30 <= 31_000
        assert real(listed) <= limits.MAX_DROPPED_NAMES_BYTES
        assert listed[-1].startswith("… and ") and listed[-1].endswith(" more")


@pytest.mark.parametrize("n", [8_000, 32_000])
def test_a_wide_event_maps_to_an_operation_that_fits(n: int) -> None:
    event, cuts = mapping.prefit_event(parse_event(wide(n)), mapping.MappingConfig())
    assert cuts > 0
    mapped = mapping.map_event(event, {}, mapping.MappingConfig())
    sizes = [len(encode_payload(op.payload).encode()) for op in mapped.operations]
    assert max(sizes) <= limits.MAX_OP_BYTES, sizes
    (data,) = [op.payload["attributes"] for op in mapped.operations if op.payload.get("action") == "event"]
    assert data["_truncated_properties"][-1].endswith(" more")


def test_wide_event_data_is_fitted_outside_the_write_transaction(
    sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside = threading.Event()
    fitted_inside: list[bool] = []
    real_prefit = mapping.prefit_event

    def spy(event: Any, config: Any) -> Any:
        fitted_inside.append(inside.is_set())
        return real_prefit(event, config)

    monkeypatch.setattr("posthog_customerio.ingestion.prefit_event", spy)
    with make_runtime(sandbox, tmp_path / "data", anonymous_hold_s=0) as runtime:
        real_transaction = runtime.db.transaction

        @contextlib.contextmanager
        def watched() -> Iterator[Any]:
            with real_transaction() as conn:
                inside.set()
                try:
                    yield conn
                finally:
                    inside.clear()

        monkeypatch.setattr(runtime.db, "transaction", watched)
        with running_service(runtime, deliver=False, close_runtime=False) as url:
            response = httpx.post(f"{url}/webhook", json=wide(20_000), timeout=60)
            assert response.status_code == 200, response.text
    assert fitted_inside and not any(fitted_inside)


def test_a_wide_event_reaches_customerio(sandbox: SandboxServer, tmp_path: Path) -> None:
    deliver_events(sandbox, tmp_path / "data", [wide(32_000)])
    (event,) = sandbox.state.events()
    assert event["name"] == "wide" and event["data"]["_truncated_properties"][-1].endswith(" more")
