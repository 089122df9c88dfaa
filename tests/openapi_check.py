"""Validate outgoing requests against Customer.io's official Track API OpenAPI 3.1 spec.

The spec lives beside the checkout (``../shared/reference/customerio-track-openapi.json``)
or at ``$CUSTOMERIO_OPENAPI_SPEC``; it is not part of the repository, so tests that
need it are marked :data:`requires_spec` and skip with that reason elsewhere.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = ["SPEC_PATH", "spec_available", "requires_spec", "TrackApiValidator", "get_validator"]

SPEC_PATH = Path(
    os.environ.get("CUSTOMERIO_OPENAPI_SPEC")
    or Path(__file__).resolve().parents[2] / "shared" / "reference" / "customerio-track-openapi.json"
)
_SPEC_URI = "urn:customerio-track-openapi"
_ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")


def spec_available() -> bool:
    """Whether the spec file is there."""
    return SPEC_PATH.is_file()


requires_spec = pytest.mark.skipif(
    not spec_available(),
    reason=f"Customer.io OpenAPI spec not found at {SPEC_PATH}: it lives in ../shared/reference beside the checkout "
    "(or set CUSTOMERIO_OPENAPI_SPEC)",
)

_formats = FormatChecker()


@_formats.checks("ULID")
def _is_ulid(value: object) -> bool:
    return not isinstance(value, str) or bool(_ULID.match(value))


class TrackApiValidator:
    """Checks (method, raw path, JSON body) against the spec's paths and schemas."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.registry = Registry().with_resource(_SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012))
        self.routes = [(self._pattern(template), template, item) for template, item in spec["paths"].items()]

    @staticmethod
    def _pattern(template: str) -> re.Pattern[str]:
        parts = re.split(r"(\{[^}]+\})", template)
        regex = "".join(f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p) for p in parts)
        return re.compile(f"^{regex}$")

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            target: Any = self.spec
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            node = target
        return node

    def _check(self, schema: dict[str, Any], instance: Any, where: str) -> list[str]:
        rooted = json.loads(json.dumps(schema).replace('"$ref": "#/', f'"$ref": "{_SPEC_URI}#/'))
        validator = Draft202012Validator(rooted, registry=self.registry, format_checker=_formats)
        problems = []
        for error in validator.iter_errors(instance):
            deepest = best_match([error, *error.context]) if error.context else error
            location = "/".join(map(str, deepest.absolute_path))
            problems.append(f"{where}/{location}: {deepest.message[:200]} (schema {'/'.join(map(str, deepest.relative_schema_path))[:120]})")
        return problems

    def validate(self, method: str, path: str, body: Any | None) -> list[str]:
        """Problems with this request (empty when it is valid)."""
        path = path.split("?", 1)[0].split("#", 1)[0]
        for pattern, template, item in self.routes:
            match = pattern.match(path)
            if match is None:
                continue
            operation = item.get(method.lower())
            if operation is None:
                return [f"{method} is not defined for {template}"]
            problems = self._check_parameters(item, operation, match.groupdict())
            problems += self._check_body(operation, body)
            return problems
        return [f"no path in the spec matches {path}"]

    def _check_parameters(self, item: dict[str, Any], operation: dict[str, Any], values: dict[str, str]) -> list[str]:
        problems = []
        for parameter in [*item.get("parameters", []), *operation.get("parameters", [])]:
            parameter = self._resolve(parameter)
            if parameter.get("in") != "path" or parameter.get("name") not in values:
                continue
            value = unquote(values[parameter["name"]])
            if "schema" in parameter:
                problems += self._check(parameter["schema"], value, f"path parameter {parameter['name']}")
        return problems

    def _check_body(self, operation: dict[str, Any], body: Any | None) -> list[str]:
        request_body = operation.get("requestBody")
        if request_body is None:
            return [] if body in (None, "", {}) else ["this operation takes no body"]
        request_body = self._resolve(request_body)
        schema = request_body.get("content", {}).get("application/json", {}).get("schema")
        if body is None:
            return ["a request body is required"] if request_body.get("required") else []
        if schema is None:
            return []
        return self._check(schema, body, "body")

    def assert_valid(self, method: str, path: str, body: Any | None) -> None:
        """Raise AssertionError listing the problems."""
        problems = self.validate(method, path, body)
        assert not problems, f"{method} {path} {json.dumps(body)[:300]}: " + "; ".join(problems)


#: Known defects of the official spec, corrected before validating (each explained).
KNOWN_SPEC_DEFECTS = {
    "anonymousEventsRequest": (
        "its oneOf alternatives overlap: 'Standard anonymous event' allows type page/screen, which the "
        "'Page view' / 'Mobile screen view' alternatives also match, so no anonymous page or screen body "
        "could ever satisfy oneOf. Validated as anyOf (at least one alternative must match)."
    ),
    "parameters track_customer_id / trackEvent_customer_id": (
        "the path identifier is oneOf three plain strings (id, email, cio_id), so every identifier "
        "matches all three and fails oneOf. Validated as anyOf (any string)."
    ),
    "POST /api/v1/merge_customers primary / secondary": (
        "oneOf id / email / cio_id alternatives without 'required', so {\"id\": ...} matches several "
        "and fails oneOf. Validated as anyOf (maxProperties 1 still allows one identifier only)."
    ),
    "eventsRequest (v1 person events), 'Mobile screen view'": (
        "requires anonymous_id, copied from the anonymous-event schema: a screen event of the person "
        "named in the path has no anonymous id. Validated without that requirement."
    ),
}


def _resolve_ref(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _correct(spec: dict[str, Any]) -> dict[str, Any]:
    schemas = [spec["components"]["schemas"]["anonymousEventsRequest"]]
    schemas += [spec["components"]["parameters"][name]["schema"] for name in ("track_customer_id", "trackEvent_customer_id")]
    for schema in schemas:
        if "oneOf" in schema:
            schema["anyOf"] = schema.pop("oneOf")
    merge = spec["paths"]["/api/v1/merge_customers"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    merge = _resolve_ref(spec, merge)
    schemas += [_resolve_ref(spec, merge["properties"][side]) for side in ("primary", "secondary")]
    for schema in schemas:
        if "oneOf" in schema:
            schema["anyOf"] = schema.pop("oneOf")
    for alternative in spec["components"]["schemas"]["eventsRequest"]["oneOf"]:
        if alternative.get("title") == "Mobile screen view":
            alternative["required"] = [r for r in alternative.get("required", []) if r != "anonymous_id"]
    return spec


@lru_cache(maxsize=1)
def get_validator() -> TrackApiValidator:
    """The validator, loaded once (with :data:`KNOWN_SPEC_DEFECTS` corrected)."""
    return TrackApiValidator(_correct(json.loads(SPEC_PATH.read_text())))
