"""Customer.io's official Pipelines clients against the sandbox, and our encoders against them.

PyPI ``customerio-cdp-analytics`` and npm ``@customerio/cdp-analytics-node`` (pinned in
``tests/cdp_node/package.json``, installed here with ``npm ci``) send the same sequence of calls; the sandbox
must accept all of it and end in the documented state, and the calls our encoders build must equal theirs
field by field (volatile fields aside: messageId, timestamp, sentAt, context.library, _metadata, empty
integrations/context, null ids).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from posthog_customerio.output import pipelines as pl
from posthog_customerio.output.base import Outcome
from posthog_customerio.sandbox import SandboxServer

from ..helpers import npm_install, unavailable

KEY = "sandbox"
NODE_DIR = Path(__file__).parents[1] / "cdp_node"

# (python client method, kwargs) — node takes the same calls with camelCase params.
SEQUENCE: list[tuple[str, dict[str, Any]]] = [
    ("track", {"anonymous_id": "v1", "event": "Viewed", "properties": {"path": "/"}}),
    ("page", {"anonymous_id": "v1", "name": "Landing", "properties": {"url": "https://example.com/"}}),
    ("identify", {"user_id": "u1", "anonymous_id": "v1", "traits": {"email": "u1@example.com", "plan": "pro"}}),
    ("track", {"user_id": "u1", "event": "Order Completed", "properties": {"total": 9.5, "items": [1, 2]}}),
    ("page", {"user_id": "u1", "name": "Home", "properties": {"url": "https://example.com/home", "path": "/home"}}),
    ("screen", {"user_id": "u1", "name": "Cart"}),
    ("group", {"user_id": "u1", "group_id": "acme", "traits": {"name": "Acme", "objectTypeId": "2"}}),
    ("identify", {"user_id": "u2", "traits": {"a": 1}}),
    ("alias", {"user_id": "u1", "previous_id": "u2"}),
    (
        "track",
        {"user_id": "u1", "event": "Device Created or Updated", "context": {"device": {"token": "tok", "type": "ios"}}},
    ),
    ("track", {"anonymous_id": "v3", "event": "Later"}),
]

OURS: list[dict[str, Any]] = [
    pl.track("Viewed", {"path": "/"}, anonymous_id="v1"),
    pl.page("Landing", {"url": "https://example.com/"}, anonymous_id="v1"),
    pl.identify("u1", {"email": "u1@example.com", "plan": "pro"}, anonymous_id="v1"),
    pl.track("Order Completed", {"total": 9.5, "items": [1, 2]}, user_id="u1"),
    pl.page("Home", {"url": "https://example.com/home", "path": "/home"}, user_id="u1"),
    pl.screen("Cart", user_id="u1"),
    pl.group("acme", {"name": "Acme"}, object_type_id="2", user_id="u1"),
    pl.identify("u2", {"a": 1}),
    pl.alias("u1", "u2"),
    pl.device_created_or_updated("u1", "tok", "ios"),
    pl.track("Later", anonymous_id="v3"),
]

_CAMEL = {"user_id": "userId", "anonymous_id": "anonymousId", "group_id": "groupId", "previous_id": "previousId"}


@pytest.fixture(scope="session")
def cdp_node() -> Path:
    """``tests/cdp_node`` with its pinned packages installed (``npm ci``)."""
    return npm_install(NODE_DIR, None, "ci")


CDP_PYTHON_DIR = Path(__file__).parents[1] / ".cdp_python"
CDP_PYTHON_REQUIREMENT = "customerio-cdp-analytics>=1.1"


@pytest.fixture(scope="session")
def cdp_python() -> Any:
    """Customer.io's Pipelines Python client, installed from PyPI beside the Track client.

    Both official packages ship a top-level ``customerio/__init__.py`` (the Pipelines one empty), so
    installing them into one environment breaks whichever was installed first. The Pipelines client is
    installed into its own directory (``pip install --target``) and its ``customerio.analytics``
    subpackage is added to the Track package's path.
    """
    import sys

    if not (CDP_PYTHON_DIR / "customerio" / "analytics").is_dir():
        try:
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "--target", str(CDP_PYTHON_DIR), CDP_PYTHON_REQUIREMENT],
                check=True,
                capture_output=True,
                text=True,
                timeout=600,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            unavailable(f"pip install {CDP_PYTHON_REQUIREMENT} failed: {getattr(exc, 'stderr', '') or exc}")
    import customerio

    extra = str(CDP_PYTHON_DIR / "customerio")
    if extra not in customerio.__path__:
        customerio.__path__.append(extra)
    if str(CDP_PYTHON_DIR) not in sys.path:
        sys.path.append(str(CDP_PYTHON_DIR))  # its own dependencies (backoff, dateutil, ...)
    from customerio import analytics

    return analytics


@pytest.fixture
def pipes(sandbox: SandboxServer) -> SandboxServer:
    sandbox.pipelines.reset()
    return sandbox


def _view(server: SandboxServer, name: str) -> Any:
    return httpx.get(f"{server.url}/_sandbox/pipelines/{name}", timeout=30).json()


def _recorded_calls(server: SandboxServer) -> list[dict[str, Any]]:
    requests = _view(server, "requests")
    assert requests and all(r["status"] == 200 and r["applied"] for r in requests), requests
    return [call for r in requests for call in r["body"]["batch"]]


def _comparable(call: dict[str, Any]) -> dict[str, Any]:
    """A call without its volatile fields (ids, times, library) and empty containers."""
    out: dict[str, Any] = {}
    for key, value in call.items():
        if key in ("messageId", "timestamp", "sentAt", "_metadata") or value is None:
            continue
        if key == "context":
            value = {k: v for k, v in value.items() if k != "library"}
        if key in ("context", "integrations") and not value:
            continue
        out[key] = value
    return out


def _assert_documented_state(server: SandboxServer) -> None:
    """What SEQUENCE leaves in the workspace, as the Journeys destination applies it."""
    (person,) = _view(server, "people")
    assert person["userId"] == "u1" and person["email"] == "u1@example.com"
    assert person["attributes"] == {"email": "u1@example.com", "plan": "pro", "a": 1}  # u2 merged in by alias
    assert person["anonymous_ids"] == ["v1"]
    assert [(d["token"], d["type"]) for d in person["devices"]] == [("tok", "ios")]
    assert person["relationships"] == [{"objectTypeId": "2", "groupId": "acme", "attributes": {}}]
    events = _view(server, "events")
    assert [(e["type"], e["name"], e["userId"]) for e in events] == [
        ("track", "Viewed", "u1"),
        ("page", "Landing", "u1"),  # anonymous activity attached by the identify
        ("track", "Order Completed", "u1"),
        ("page", "Home", "u1"),
        ("screen", "Cart", "u1"),
    ]
    assert events[2]["properties"] == {"total": 9.5, "items": [1, 2]}
    assert [(e["name"], e["anonymousId"]) for e in _view(server, "anonymous_events")] == [("Later", "v3")]
    (obj,) = _view(server, "objects")
    assert (obj["objectTypeId"], obj["groupId"], obj["attributes"]) == ("2", "acme", {"name": "Acme"})


def _assert_same_shape(theirs: list[dict[str, Any]]) -> None:
    assert len(theirs) == len(OURS)
    for index, (their, our) in enumerate(zip(theirs, OURS, strict=True)):
        assert _comparable(our) == _comparable(their), f"call {index} ({SEQUENCE[index][0]}) differs"


def test_python_client_against_sandbox(pipes: SandboxServer, cdp_python: Any) -> None:
    Client = cdp_python.Client

    client = Client(KEY, host=pipes.url, sync_mode=True)  # sync: each call is POSTed, errors raise
    for method, kwargs in SEQUENCE:
        getattr(client, method)(**kwargs)
    _assert_documented_state(pipes)
    _assert_same_shape(_recorded_calls(pipes))


def test_node_client_against_sandbox(pipes: SandboxServer, cdp_node: Path) -> None:
    calls = [
        {"method": method, "params": {_CAMEL.get(k, k): v for k, v in kwargs.items()}} for method, kwargs in SEQUENCE
    ]
    done = subprocess.run(
        ["node", "send.js", pipes.url, KEY],
        cwd=cdp_node,
        input=json.dumps(calls),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr
    _assert_documented_state(pipes)
    _assert_same_shape(_recorded_calls(pipes))


def test_our_encoders_reach_the_same_state(pipes: SandboxServer) -> None:
    with pl.PipelinesClient(KEY, pipes.url) as client:
        texts = [pl.encode_call(call) for call in OURS]
        (batch,) = pl.pack(texts, overhead=client.batch_overhead).batches
        result = client.send_batch([texts[i] for i in batch])
    assert result.outcome is Outcome.OK, result.describe()
    _assert_documented_state(pipes)


def test_python_client_bad_key_is_refused_in_strict_mode_only(pipes: SandboxServer, cdp_python: Any) -> None:
    from customerio.analytics.request import APIError

    Client = cdp_python.Client

    Client("wrong", host=pipes.url, sync_mode=True).track(user_id="u1", event="E")  # permissive: 200, dropped
    assert _view(pipes, "events") == []
    with pl.PipelinesClient("wrong", pipes.url) as client:
        assert client.send_call(pl.track("E", user_id="u1")).status == 401
    # the error body has the shape Customer.io's client parses ({"code", "message"})
    response = httpx.post(
        pipes.url + "/v1/track", json={"userId": "u1", "event": "E"}, auth=("wrong", ""), headers={"X-Strict-Mode": "1"}
    )
    error = APIError(response.status_code, response.json()["code"], response.json()["message"])
    assert error.status == 401 and error.code == "unauthorized"
