"""``/openapi.json`` and the service agree, where a conformance run (schemathesis, every check) found they did not.

One test per gap: a body the document declared valid but the service refuses (non-JSON bytes under a
declared binary/text content type), a query value the document forbids but the service took
(``limit=1%0B``), a body the document forbids but the service took (``{"ids": [{}]}``), and
``OPTIONS`` on ``/flags`` and ``/decide`` (undocumented, answered 405 with ``Allow: GET`` although POST
is allowed). Strict answers are ``400`` with ``{"error": ...}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from posthog_customerio.config import load_settings
from posthog_customerio.runtime import Runtime

from ..service import running_service

OPS = "ops-conformance-token"
AUTH = {"Authorization": f"Bearer {OPS}"}
RECEIVERS = ("/webhook", "/batch", "/capture", "/e", "/i/v0/e", "/i/v1/analytics/events")
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    data: Path = tmp_path_factory.mktemp("conformance") / "data"
    settings = {"posthog_customerio_data_dir": data, "ops_token": OPS, "shutdown_grace_s": 0}
    with running_service(Runtime(load_settings(settings), sandbox=True)) as url:
        yield url, httpx.get(f"{url}/openapi.json", timeout=30).json()


def _error(answer: httpx.Response, status: int = 400) -> str:
    assert answer.status_code == status, (answer.status_code, answer.text)
    body = answer.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    return str(body["error"])


def test_no_receiver_declares_a_body_it_refuses(service: tuple[str, dict[str, Any]]) -> None:
    url, spec = service
    for path in RECEIVERS:
        content = spec["paths"][path]["post"]["requestBody"]["content"]
        # only JSON is declared: a declared binary or free-text body would promise that any bytes are valid
        assert set(content) == {"application/json"}, (path, sorted(content))
        for content_type in ("application/octet-stream", "text/plain", "application/json"):
            answer = httpx.post(f"{url}{path}", content=PNG, headers={"content-type": content_type}, timeout=30)
            _error(answer)


@pytest.mark.parametrize("value", ["1%0B", "%201", "1%20", "%2B5", "0", "10001", "-1", "abc", "1.0", "", "99999999"])
def test_dead_letter_limit_is_strict(service: tuple[str, dict[str, Any]], value: str) -> None:
    url, spec = service
    (limit,) = spec["paths"]["/api/dead-letters"]["get"]["parameters"]
    assert limit["name"] == "limit" and limit["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 10_000,
        "default": 100,
    }
    assert "limit" in _error(httpx.get(f"{url}/api/dead-letters?limit={value}", headers=AUTH, timeout=30))
    assert "limit" in _error(httpx.get(f"{url}/api/dead-letters?limit=5&limit=6", headers=AUTH, timeout=30))
    for good in ("1", "10000", "05"):
        assert httpx.get(f"{url}/api/dead-letters?limit={good}", headers=AUTH, timeout=30).json() == []


@pytest.mark.parametrize(
    "body", ['{"ids":[{}]}', '{"ids":[true]}', '{"ids":["1"]}', '{"ids":[1.5]}', '{"ids":"1"}', "[]", '"x"', ""]
)
def test_dead_letter_retry_body_is_strict(service: tuple[str, dict[str, Any]], body: str) -> None:
    url, spec = service
    declared = spec["paths"]["/api/dead-letters/retry"]["post"]["requestBody"]
    assert declared["required"] is True
    assert declared["content"]["application/json"]["schema"]["properties"]["ids"]["items"] == {"type": "integer"}
    headers = {**AUTH, "content-type": "application/json"}
    _error(httpx.post(f"{url}/api/dead-letters/retry", content=body, headers=headers, timeout=30))
    for good in ("{}", '{"ids": []}', '{"ids": [3, 4.0, -1]}'):
        answer = httpx.post(f"{url}/api/dead-letters/retry", content=good, headers=headers, timeout=30)
        assert answer.json() == {"requeued": 0}, (good, answer.text)


@pytest.mark.parametrize("path", ["/flags", "/decide"])
def test_options_on_flags_and_decide_is_documented_and_consistent(
    service: tuple[str, dict[str, Any]], path: str
) -> None:
    url, spec = service
    operations = spec["paths"][path]
    assert set(operations) == {"get", "post", "options"}
    allowed = {"GET", "POST", "OPTIONS"}
    for variant in (path, path + "/"):
        answer = httpx.options(f"{url}{variant}", timeout=30)
        assert answer.status_code == 204 and "204" in operations["options"]["responses"], answer.text
        assert {m.strip() for m in answer.headers["allow"].split(",")} == allowed
        preflight = httpx.options(
            f"{url}{variant}",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
            timeout=30,
        )
        assert preflight.status_code == 200 and "200" in operations["options"]["responses"]
        assert preflight.headers["access-control-allow-origin"] in ("*", "https://app.example")
        for method in ("PUT", "DELETE", "PATCH", "HEAD"):
            refused = httpx.request(method, f"{url}{variant}", timeout=30)
            assert refused.status_code == 405, (method, refused.status_code)
            assert {m.strip() for m in refused.headers["allow"].split(",")} == allowed
            if method != "HEAD":
                _error(refused, 405)
        assert httpx.get(f"{url}{variant}", timeout=30).status_code == 200
        assert httpx.post(f"{url}{variant}", json={}, timeout=30).status_code == 200


@pytest.mark.parametrize("path", RECEIVERS)
def test_api_key_is_a_string_as_documented(service: tuple[str, dict[str, Any]], path: str) -> None:
    url, spec = service
    for shape in spec["components"]["schemas"]["Event"]["oneOf"]:
        assert shape["properties"]["api_key"]["type"] == "string"
    for body in ({"api_key": 5, "batch": []}, [{"event": "x", "distinct_id": "u", "api_key": None}]):
        assert "api_key" in _error(httpx.post(f"{url}{path}", json=body, timeout=30))
    if path != "/i/v1/analytics/events":  # capture v1 bodies are {"batch": [...]} only
        assert httpx.post(f"{url}{path}", json={"api_key": "phc_x", "batch": []}, timeout=30).status_code == 200


def test_receivers_accept_what_the_document_allows_and_refuse_the_rest(service: tuple[str, dict[str, Any]]) -> None:
    """Schemathesis with the data checks: a body the document allows is stored (2xx), one it forbids gets a 4xx.

    (``tests/e2e/test_schemathesis.py`` checks the answers; this checks the request schemas of the receivers.)
    """
    url, _ = service
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path not in RECEIVERS:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz_data(operation, mode)
            except Exception as exc:  # collect every operation's failure, then report them all
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)


def _fuzz_data(operation: schemathesis.APIOperation, mode: GenerationMode) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=[positive_data_acceptance, negative_data_rejection], timeout=10)

    run()
