"""Property-based API test: schemathesis generates requests from ``/openapi.json`` and checks every
answer against it (no server errors, only documented status codes, bodies and content types as
documented). Runs against the in-process service and its sandbox on loopback, with bounded examples."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from posthog_customerio.runtime import Runtime

from ..helpers import make_settings
from ..service import running_service

pytestmark = pytest.mark.e2e

OPS = "ops-schemathesis-token"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.fixture(scope="module")
def service_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data: Path = tmp_path_factory.mktemp("schemathesis") / "data"
    runtime = Runtime(
        make_settings(data, shutdown_grace_s=0, ops_token=OPS, max_body_bytes=100_000),
        sandbox=True,
    )
    with running_service(runtime) as url:
        yield url


@pytest.fixture(scope="module")
def api_schema(service_url: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{service_url}/openapi.json")


def _operations(schema: schemathesis.BaseSchema) -> list[schemathesis.APIOperation]:
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]  # the receivers and operations endpoints
    return operations


def _fuzz(operation: schemathesis.APIOperation, mode: GenerationMode, token: str, examples: int) -> None:
    """``examples`` generated requests to ``operation``; every answer checked against the document."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS, timeout=10)

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
def test_every_answer_matches_the_openapi_document(api_schema: schemathesis.BaseSchema, mode: GenerationMode) -> None:
    started = time.monotonic()
    failures = []
    for operation in _operations(api_schema):
        try:
            _fuzz(operation, mode, OPS, examples=10)
        except Unsatisfiable:  # nothing to break: no parameters, no body (GET /healthz in negative mode)
            assert mode is GenerationMode.NEGATIVE, operation.label
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
    assert time.monotonic() - started < 50  # the budget: bounded examples stay well under a minute


def test_unauthorized_answers_are_documented_too(api_schema: schemathesis.BaseSchema) -> None:
    failures = []
    for operation in _operations(api_schema):
        try:
            _fuzz(operation, GenerationMode.POSITIVE, "wrong-token", examples=3)
        except Exception as exc:
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
