"""Error answers for bad input name the field and the problem, never a value of the request.

Before the fix some 4xx messages quoted what was sent (a timestamp, a form field, a number, a header, a
query parameter), and every 4xx message is logged and shown in ``/status``: an email address put in
the wrong field ended up in the logs and on the status page.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from posthog_customerio.config import Settings
from posthog_customerio.runtime import Runtime

from ..service import in_process_service

EMAIL = "marker.secret-7c1d@example.com"
NUMBER = "31415926535"
OPS = "ops-no-echo-token"
NO_CUSTOMERIO = "http://127.0.0.1:9"  # delivery is off: nothing is sent


def _event(**fields: Any) -> dict[str, Any]:
    return {"event": "clicked", "distinct_id": "u1", "timestamp": "2024-01-01T00:00:00Z", **fields}


def _json(body: Any) -> dict[str, Any]:
    return {"content": json.dumps(body).encode(), "headers": {"content-type": "application/json"}}


#: (what, method, path, request keyword arguments): each answered 4xx
BAD_REQUESTS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("timestamp text", "POST", "/batch", _json({"batch": [_event(timestamp=EMAIL)]})),
    ("timestamp number", "POST", "/batch", {"content": f'{{"event":"x","distinct_id":"u","timestamp":{NUMBER}e999}}'}),
    ("number in properties", "POST", "/webhook", {"content": f'{{"event":"x","distinct_id":"u","n":-{NUMBER}e400}}'}),
    ("properties string", "POST", "/webhook", _json(_event(properties=f'{{"email": "{EMAIL}", "n": {NUMBER}e999}}'))),
    ("group type", "POST", "/webhook", _json({"event": _event(), "groups": {EMAIL: "not json"}})),
    (
        "form field",
        "POST",
        "/e/",
        {"content": f"data=e30&{EMAIL}", "headers": {"content-type": "application/x-www-form-urlencoded"}},
    ),
    ("base64", "POST", "/e/?compression=base64", {"content": f"data={EMAIL}"}),
    ("content encoding", "POST", "/batch", {"content": b"{}", "headers": {"content-encoding": f"x-{EMAIL}"}}),
    ("limit", "GET", f"/api/dead-letters?limit={EMAIL}", {}),
    ("ids", "POST", "/api/dead-letters/retry", _json({"ids": [EMAIL]})),
    ("v1 options", "POST", "/i/v1/analytics/events", _json({"batch": [_event(options=EMAIL)]})),
    ("distinct id", "POST", "/capture", _json(_event(distinct_id=[EMAIL]))),
]


@pytest.mark.parametrize("what", [case[0] for case in BAD_REQUESTS])
def test_no_answer_log_or_status_repeats_a_value(
    what: str, settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    _, method, path, kwargs = next(case for case in BAD_REQUESTS if case[0] == what)
    caplog.set_level(logging.DEBUG)
    runtime = Runtime(settings(customerio_track_url=NO_CUSTOMERIO, ops_token=OPS))
    ops = {"authorization": f"Bearer {OPS}"}
    with in_process_service(runtime) as client:
        headers = {**kwargs.get("headers", {}), **ops}
        answer = client.request(method, path, content=kwargs.get("content"), headers=headers)
        assert 400 <= answer.status_code < 500, (answer.status_code, answer.text)
        assert set(answer.json()) == {"error"}, answer.text
        status = client.get("/api/status", headers=ops).text
    # every record but the test's own HTTP client's (which logs the URL it requested)
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore")))
    seen = {"answer": answer.text, "log": logged, "/api/status": status}
    for where, text in seen.items():
        for marker in (EMAIL, NUMBER, base64.b64encode(EMAIL.encode()).decode()):
            assert marker not in text, f"{what}: {where} repeats a value of the request: {text[:500]}"
    assert answer.json()["error"][:40] in logged and answer.json()["error"][:40] in status  # the rejection was reported
