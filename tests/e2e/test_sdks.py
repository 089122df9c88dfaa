"""PostHog's own server SDKs pointed at ``serve``, delivering to the sandbox.

posthog-python (PyPI, a test dependency) and posthog-node (npm, pinned in
``tests/node/package.json``, installed here with npm). Each runs one session:
capture with ``$set``/``$set_once``, identify, ``groupIdentify``, ``alias`` in the
SDK's own argument order, and a later event of the aliased id; with gzip on and off.
The result must be one Customer.io profile, the identified user's, with the merged
history, the group object and relationship, date attributes as Unix seconds and no
Customer.io event named after a person update.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from posthog_customerio.runtime import Runtime
from posthog_customerio.sandbox import SandboxServer

from ..helpers import make_settings, npm_install, wait_for
from ..service import running_service

pytestmark = pytest.mark.e2e
NODE_DIR = Path(__file__).resolve().parents[1] / "node"
NOT_EVENTS = {"$set", "$set_once", "$groupidentify", "$create_alias", "$merge_dangerously", "$delete_person"}


@pytest.fixture(scope="session")
def posthog_node() -> Path:
    """``tests/node`` with posthog-node installed (``npm ci`` from the committed lock file)."""
    return npm_install(NODE_DIR, "posthog-node", "ci", timeout=300)


@pytest.fixture
def service(sandbox: SandboxServer, tmp_path: Path) -> Iterator[str]:
    settings = make_settings(
        tmp_path / "data", sandbox, customerio_max_rps=10_000, group_type_map="company=1", shutdown_grace_s=1
    )
    with running_service(Runtime(settings)) as url:
        yield url


def delivered(url: str) -> bool:
    """The service's outbox is empty (the SDK calls returned: everything was received)."""
    return httpx.get(f"{url}/api/status").json()["outbox"]["depth"] == 0


def assert_one_profile_for_the_user(sandbox: SandboxServer, prefix: str, first: str) -> None:
    def settled() -> bool:
        person = sandbox.state.person(f"{prefix}-user")
        return person is not None and len(person["events"]) >= 3 and len(sandbox.state.people()) == 1

    wait_for(settled, "the user's profile with the merged events")
    (person,) = sandbox.state.people()
    assert (person["id"], person["email"]) == (f"{prefix}-user", f"{prefix}@example.com")
    attributes = sandbox.state.person(f"{prefix}-user")["attributes"]
    assert attributes["plan"] == "pro" and attributes["first"] == first and attributes["first_plan"] == "pro"
    assert attributes["trial_ends"] == 1_706_745_600  # ISO 8601 date-time -> Unix seconds
    names = {e["name"] for e in sandbox.state.person(f"{prefix}-user")["events"]}
    assert {"browsed", "purchase", "clicked"} <= names  # the aliased id's history and later event
    assert not names & NOT_EVENTS
    (company,) = sandbox.state.objects()
    assert (company["object_id"], company["attributes"]) == (f"{prefix}-acme", {"name": "Acme"})
    assert [r["person"] for r in company["relationships"]] == [person["cio_id"]]


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
def test_posthog_node(posthog_node: Path, service: str, sandbox: SandboxServer, compress: bool) -> None:
    prefix = "node-gz" if compress else "node"
    run = subprocess.run(
        ["node", "scenario.mjs", service, "gzip" if compress else "plain", prefix],
        cwd=posthog_node,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    encodings = set(json.loads(run.stdout.strip().splitlines()[-1]))
    assert encodings == ({"gzip"} if compress else {"identity"})
    wait_for(lambda: delivered(service), "delivery")
    assert_one_profile_for_the_user(sandbox, prefix, first="node")


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
def test_posthog_python(service: str, sandbox: SandboxServer, compress: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    posthog = pytest.importorskip("posthog")
    import requests

    encodings: list[str] = []
    original = requests.Session.post

    def recording_post(self: requests.Session, url: str, *args: Any, **kwargs: Any) -> Any:
        encodings.append((kwargs.get("headers") or {}).get("Content-Encoding", "identity"))
        return original(self, url, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "post", recording_post)
    p = "py-gz" if compress else "py"
    client = posthog.Posthog("phc_sdk_test", host=service, gzip=compress, sync_mode=True, disable_geoip=True)
    client.capture("browsed", distinct_id=f"{p}-legacy", properties={"page": "a"})
    client.set(distinct_id=f"{p}-user", properties={"email": f"{p}@example.com", "trial_ends": "2024-02-01T00:00:00Z"})
    client.set_once(distinct_id=f"{p}-user", properties={"first": "python"})
    client.capture(
        "purchase",
        distinct_id=f"{p}-user",
        groups={"company": f"{p}-acme"},
        properties={"amount": 5, "$set": {"plan": "pro"}, "$set_once": {"first": "x", "first_plan": "pro"}},
    )
    client.group_identify("company", f"{p}-acme", {"name": "Acme"})
    client.alias(previous_id=f"{p}-legacy", distinct_id=f"{p}-user")  # posthog-python: distinct_id = previous id
    client.capture("clicked", distinct_id=f"{p}-legacy", properties={"button": "b"})
    client.shutdown()
    assert encodings and set(encodings) == ({"gzip"} if compress else {"identity"})
    wait_for(lambda: delivered(service), "delivery")
    assert_one_profile_for_the_user(sandbox, p, first="python")
