"""``/openapi.json`` as generated from the declarations in :mod:`posthog_customerio.service.apidoc`.

The operations endpoints (and only they) declare the token's schemes and its 401; the security
dependencies only document: credentials FastAPI's own schemes would refuse get the service's answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from posthog_customerio.config import load_settings
from posthog_customerio.runtime import Runtime
from posthog_customerio.service import create_app
from posthog_customerio.service.paths import is_ops_path


@pytest.fixture(params=[{}, {"posthog_host": "http://127.0.0.1:9"}], ids=["standalone", "proxying"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    settings = load_settings({"posthog_customerio_data_dir": tmp_path / "data", **request.param})
    runtime = Runtime(settings, sandbox=True)
    try:  # no lifespan: the document and these answers need no delivery nor Customer.io probe
        yield TestClient(create_app(runtime, deliver=False))
    finally:
        runtime.close()


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            yield path, operation


def _is_error(schema: dict[str, Any]) -> bool:
    """``{"error": ...}``: the Error component, or its schema inline (an HTML endpoint's 401)."""
    return schema == {"$ref": "#/components/schemas/Error"} or schema.get("required") == ["error"]


def test_the_token_is_declared_on_the_operations_endpoints_only(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["opsBearer"] == {"type": "http", "scheme": "bearer", "description": "OPS_TOKEN (else WEBHOOK_TOKEN)"}
    assert schemes["opsBasic"]["scheme"] == "basic"
    guarded = 0
    for path, operation in _operations(spec):
        if is_ops_path(path):
            guarded += 1
            assert operation["security"] == [{"opsBearer": []}, {"opsBasic": []}], path
            unauthorized = operation["responses"]["401"]
            assert "WWW-Authenticate" in unauthorized["headers"], path
            assert _is_error(unauthorized["content"]["application/json"]["schema"]), path
        else:
            assert "security" not in operation, path
    assert guarded == 7


def test_every_error_answer_is_the_error_object(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["components"]["schemas"]["Error"]["required"] == ["error"]
    for path, operation in _operations(spec):
        for code, response in operation["responses"].items():
            if path == "/readyz":  # not ready: the readiness report, with its problems
                continue
            if code.startswith(("4", "5")) and code != "422" and "application/json" in response.get("content", {}):
                assert _is_error(response["content"]["application/json"]["schema"]), (path, code)


def test_the_request_schemas_are_in_the_document(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for path, operation in _operations(spec):
        ref = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
        if "$ref" in ref:
            assert ref["$ref"].rsplit("/", 1)[1] in schemas, path
    flat, hog = schemas["Event"]["oneOf"]
    assert flat["required"] == ["event"] and hog["required"] == ["event"]
    assert flat["properties"]["timestamp"]["anyOf"][0]["format"] == "date-time"


@pytest.mark.parametrize("authorization", ["Basic !!!", "Basic", "Bearer", "Digest x"])
def test_the_schemes_refuse_nothing_themselves(tmp_path: Path, authorization: str) -> None:
    """Without a token the operations API is open: odd credentials must not turn into FastAPI's 401/403."""
    runtime = Runtime(load_settings({"posthog_customerio_data_dir": tmp_path / "data"}), sandbox=True)
    try:
        client = TestClient(create_app(runtime, deliver=False))
        answer = client.get("/api/dead-letters", headers={"Authorization": authorization})
        assert answer.status_code == 200 and answer.json() == []
    finally:
        runtime.close()
