"""Validate outgoing requests against Customer.io's official Track API OpenAPI 3.1 spec.

The spec lives beside the checkout (``../shared/reference/customerio-track-openapi.json``)
or at ``$CUSTOMERIO_OPENAPI_SPEC`` (download it from :data:`PUBLISHED_SPEC_URL`); it is not
part of the repository, so tests that need it are marked :data:`requires_spec` and skip
with that reason elsewhere — except where :data:`SPEC_REQUIRED` (CI), where its absence fails the run.

A request is ``(method, raw path, JSON body)``: the path as sent on the wire (still
percent-encoded, base URL stripped, any query string ignored).  It is matched against
the spec's path templates (a ``{param}`` matches exactly one encoded segment), the
decoded path parameters are checked against their parameter schemas, and the body
against the operation's ``application/json`` request schema with JSON Schema 2020-12.
``$ref``s resolve against the whole spec document: it is registered as one resource
(:data:`SPEC_URI`) and each schema is validated *in place* through a ``$ref`` to its
JSON pointer inside that document.

:func:`get_validator` corrects the spec's few self-contradictions first (see
:data:`KNOWN_SPEC_DEFECTS`); ``get_validator(corrected=False)`` validates against the
spec exactly as published.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = [
    "KNOWN_SPEC_DEFECTS",
    "PUBLISHED_SPEC_URL",
    "SPEC_PATH",
    "SPEC_REQUIRED",
    "SPEC_URI",
    "TrackApiValidator",
    "get_validator",
    "requires_spec",
    "spec_available",
]

_DEFAULT_SPEC = Path(__file__).resolve().parents[2] / "shared" / "reference" / "customerio-track-openapi.json"
SPEC_PATH = Path(os.environ.get("CUSTOMERIO_OPENAPI_SPEC") or _DEFAULT_SPEC)
SPEC_URI = "urn:customerio-track-openapi"


#: ``.ci/run`` sets ``POSTHOG_CUSTOMERIO_REQUIRE_SPEC=1``: there a missing spec stops the run
#: (conftest's ``pytest_sessionstart``) instead of silently skipping the checks that need it.
SPEC_REQUIRED = os.environ.get("POSTHOG_CUSTOMERIO_REQUIRE_SPEC") == "1"


def spec_available() -> bool:
    """Whether the spec file is there."""
    return SPEC_PATH.is_file()


#: Where Customer.io publishes the Track API's OpenAPI document (the "Download" link of
#: https://docs.customer.io/api/track/).
PUBLISHED_SPEC_URL = "https://docs.customer.io/files/journeys-track.json"

requires_spec = pytest.mark.skipif(
    not spec_available(),
    reason=f"Customer.io OpenAPI spec not found at {SPEC_PATH}"
    " (CI keeps it in ../shared/reference beside the checkout):"
    f" download {PUBLISHED_SPEC_URL} and run with CUSTOMERIO_OPENAPI_SPEC=/path/to/journeys-track.json",
)

# --- formats -------------------------------------------------------------------------------------
# jsonschema checks the formats it knows (email, uri, date-time, ...); the spec also names
# formats of its own, which are ignored unless registered here.
_FORMATS = FormatChecker()
# Crockford base32 (no I, L, O, U; decoders accept either case), 26 chars; first char 0-7 (128 bits)
_ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$", re.IGNORECASE)
_MAX_UNIX_SECONDS = 10**11  # year ~5138: anything larger is milliseconds (or worse), not seconds


def _is_ulid(value: object) -> bool:
    return not isinstance(value, str) or bool(_ULID.match(value))


def _is_unix_seconds(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int):
        return True  # "type" reports non-integers
    return 0 <= value < _MAX_UNIX_SECONDS


# v2 ops say "ULID", the v1 dedupe_id says "ulid"; format names are case-sensitive.
for _name in ("ULID", "ulid"):
    _FORMATS.checks(_name)(_is_ulid)
# v1 event timestamps say "unix timestamp" (an esp_suppression field "Unix timestamp").
for _name in ("unix timestamp", "Unix timestamp"):
    _FORMATS.checks(_name)(_is_unix_seconds)

# RFC 3986 path characters: unreserved / pct-encoded / sub-delims / ":" / "@", and "/".
_ENCODED_PATH = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*$")


def _pointer(parts: Iterable[Any]) -> str:
    """RFC 6901 JSON pointer of a path of keys/indices."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


# --- the validator -------------------------------------------------------------------------------
class TrackApiValidator:
    """Checks ``(method, raw path, JSON body)`` against the spec's paths and schemas."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        resource = Resource.from_contents(spec, default_specification=DRAFT202012)
        self.registry: Registry = Registry().with_resource(SPEC_URI, resource)
        routes = []
        for template, item in spec["paths"].items():
            parts = re.split(r"(\{[^}/]+\})", template)
            regex = "".join(f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p) for p in parts)
            literal = len(re.sub(r"\{[^}/]+\}", "", template))
            routes.append((re.compile(f"^{regex}$"), template, item, literal))
        # Concrete paths win over templated ones (OpenAPI: /a/me before /a/{id}).
        self.routes = sorted(routes, key=lambda r: -r[3])
        self._schema_validators: dict[str, Draft202012Validator] = {}

    @classmethod
    def from_file(cls, path: Path | str = SPEC_PATH, *, corrected: bool = True) -> TrackApiValidator:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(correct_known_defects(spec) if corrected else spec)

    # -- schema plumbing --------------------------------------------------------------------------
    def _follow(self, pointer: str) -> tuple[str, Any]:
        """The node at ``pointer`` in the spec, following ``$ref``s; returns (final pointer, node)."""
        seen = set()
        while True:
            node: Any = self.spec
            for part in pointer.lstrip("/").split("/") if pointer else []:
                part = part.replace("~1", "/").replace("~0", "~")
                node = node[int(part)] if isinstance(node, list) else node[part]
            if not (isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#")):
                return pointer, node
            if pointer in seen:
                raise ValueError(f"$ref loop at {pointer}")
            seen.add(pointer)
            pointer = unquote(node["$ref"][1:])

    def _validator_at(self, pointer: str) -> Draft202012Validator:
        """A validator for the schema at ``pointer`` inside the spec (refs resolve in the spec)."""
        validator = self._schema_validators.get(pointer)
        if validator is None:
            ref = SPEC_URI + "#" + quote(pointer, safe="/~!$&'()*+,;=:@")
            validator = Draft202012Validator({"$ref": ref}, registry=self.registry, format_checker=_FORMATS)
            self._schema_validators[pointer] = validator
        return validator

    def _check(self, pointer: str, instance: Any, where: str) -> list[str]:
        problems: list[str] = []
        for error in self._validator_at(pointer).iter_errors(instance):
            for leaf in _explain(error):
                location = _pointer(leaf.absolute_path)
                message = self._short_message(leaf)
                problems.append(f"{where} at {location}: {message}" if location else f"{where}: {message}")
        return list(dict.fromkeys(problems))[:20]

    def _short_message(self, error: ValidationError) -> str:
        if error.validator == "oneOf" and not error.context:  # valid under more than one alternative
            titles = [
                _title(alt, i)
                for i, alt in enumerate(error.validator_value)
                if Draft202012Validator(_absolute_refs(alt), registry=self.registry, format_checker=_FORMATS).is_valid(
                    error.instance
                )
            ]
            alternatives = ", ".join(titles)
            count = len(titles)
            return (
                f"{_repr(error.instance)} matches {count} oneOf alternatives ({alternatives}): exactly one is allowed"
            )
        if error.validator in ("anyOf", "oneOf"):
            titles = [_title(alt, i) for i, alt in enumerate(error.validator_value)]
            return f"{_repr(error.instance)} matches none of {error.validator} ({', '.join(titles)})"
        if error.validator == "format":
            return f"{_repr(error.instance)} is not a valid {error.validator_value!r}"
        return error.message if len(error.message) <= 200 else error.message[:200] + "…"

    # -- public API -------------------------------------------------------------------------------
    def validate(self, method: str, path: str, body: Any | None) -> list[str]:
        """Problems with this request (empty when it is valid)."""
        if path.startswith(("http://", "https://")):
            path = urlsplit(path).path
        path = path.split("?", 1)[0].split("#", 1)[0]
        problems = [] if _ENCODED_PATH.match(path) else [f"path {path!r} is not percent-encoded"]
        matched = []
        for pattern, template, item, _ in self.routes:
            match = pattern.match(path)
            if match is None:
                continue
            matched.append(template)
            if method.lower() not in item:
                continue
            problems += self._check_parameters(template, match.groupdict(), method.lower())
            problems += self._check_body(template, method.lower(), body)
            return problems
        if matched:
            allowed = sorted({m.upper() for t in matched for m in self.spec["paths"][t] if m != "parameters"})
            return [*problems, f"{method.upper()} is not defined for {' / '.join(matched)} (only {', '.join(allowed)})"]
        return [*problems, f"no path in the spec matches {path}"]

    def assert_valid(self, method: str, path: str, body: Any | None) -> None:
        """Raise AssertionError listing the problems."""
        problems = self.validate(method, path, body)
        if problems:
            shown = json.dumps(body, ensure_ascii=False, default=str)
            shown = shown if len(shown) <= 300 else shown[:300] + "…"
            raise AssertionError(
                f"{method.upper()} {path} {shown} violates the Customer.io Track API spec:\n  - "
                + "\n  - ".join(problems)
            )

    # -- parts of a request ---------------------------------------------------------------------
    def _check_parameters(self, template: str, values: dict[str, str], method: str) -> list[str]:
        problems = []
        base = _pointer(["paths", template])
        declared = [f"{base}/parameters/{i}" for i in range(len(self.spec["paths"][template].get("parameters", [])))]
        declared += [
            f"{base}/{method}/parameters/{i}"
            for i in range(len(self.spec["paths"][template][method].get("parameters", [])))
        ]
        for pointer in declared:
            pointer, parameter = self._follow(pointer)
            name = parameter.get("name")
            if parameter.get("in") != "path" or name not in values or "schema" not in parameter:
                continue
            try:
                value = unquote(values[name], errors="strict")
            except UnicodeDecodeError:
                problems.append(f"path parameter {name}: {values[name]!r} is not percent-encoded UTF-8")
                continue
            problems += self._check(
                f"{pointer}/schema",
                _coerce(value, self._follow(f"{pointer}/schema")[1]),
                f"path parameter {name}={value!r}",
            )
        return problems

    def _check_body(self, template: str, method: str, body: Any | None) -> list[str]:
        pointer = _pointer(["paths", template, method, "requestBody"])
        if "requestBody" not in self.spec["paths"][template][method]:
            return [] if body in (None, "", {}) else [f"{method.upper()} {template} takes no body"]
        pointer, request_body = self._follow(pointer)
        if body is None:
            return ["a request body is required"] if request_body.get("required") else []
        if "application/json" not in request_body.get("content", {}):
            return [f"{method.upper()} {template} does not take a JSON body"]
        if "schema" not in request_body["content"]["application/json"]:
            return []
        return self._check(_pointer([*_split(pointer), "content", "application/json", "schema"]), body, "body")


def _split(pointer: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer.lstrip("/").split("/")] if pointer else []


def _coerce(value: str, schema: Any) -> Any:
    """A path segment is text; an integer/number parameter (e.g. segment_id) is checked as one."""
    kinds = schema.get("type") if isinstance(schema, dict) else None
    kinds = [kinds] if isinstance(kinds, str) else kinds or []
    if "string" not in kinds and ("integer" in kinds or "number" in kinds):
        try:
            return int(value) if re.fullmatch(r"-?\d+", value) else float(value)
        except ValueError:
            return value
    return value


# --- error reporting -----------------------------------------------------------------------------
def _explain(error: ValidationError) -> Iterator[ValidationError]:
    """The errors worth showing for ``error``.

    For an anyOf/oneOf that no alternative satisfies, descend into the alternatives that
    "almost" matched: those whose own ``enum``/``const`` checks (the discriminating ``type``
    and ``action``) held, and among them those with the fewest errors.  So a batch op with a
    float timestamp reports ``/batch/0/timestamp``, not "not valid under any of the given schemas".
    """
    if error.validator not in ("anyOf", "oneOf") or not error.context:
        yield error  # includes a oneOf that matched more than once (it has no context)
        return
    alternatives: dict[Any, list[ValidationError]] = {}
    for sub in error.context:
        alternatives.setdefault(sub.relative_schema_path[0], []).append(sub)
    candidates = [errors for errors in alternatives.values() if not _mismatched(errors)] or list(alternatives.values())
    fewest = min(len(errors) for errors in candidates)
    chosen = [errors for errors in candidates if len(errors) == fewest]
    if len(chosen) > 2:  # no alternative stands out: one summary line is clearer
        yield error
        return
    for errors in chosen:
        for sub in errors:
            yield from _explain(sub)


def _mismatched(errors: list[ValidationError]) -> bool:
    """Whether an alternative failed on a discriminator (an enum/const, e.g. ``type`` or ``action``),
    directly or because every alternative of a nested anyOf/oneOf did."""
    for error in errors:
        if error.validator in ("enum", "const"):
            return True
        if error.validator in ("anyOf", "oneOf") and error.context:
            groups: dict[Any, list[ValidationError]] = {}
            for sub in error.context:
                groups.setdefault(sub.relative_schema_path[0], []).append(sub)
            if all(_mismatched(group) for group in groups.values()):
                return True
    return False


def _absolute_refs(schema: Any) -> Any:
    """``schema`` with its document-local ``$ref``s made to point into the registered spec."""
    if isinstance(schema, dict):
        return {
            k: (SPEC_URI + v if k == "$ref" and isinstance(v, str) and v.startswith("#") else _absolute_refs(v))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_absolute_refs(v) for v in schema]
    return schema


def _title(schema: Any, index: int) -> str:
    if isinstance(schema, dict):
        if "title" in schema:
            return str(schema["title"])
        if "$ref" in schema:
            return str(schema["$ref"]).rsplit("/", 1)[-1]
        if "type" in schema:
            return str(schema["type"])
    return f"#{index}"


def _repr(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:80] + "…"


# --- spec corrections ----------------------------------------------------------------------------
#: Known defects of the official spec, corrected by :func:`correct_known_defects` (each explained).
KNOWN_SPEC_DEFECTS = {
    "anonymousEventsRequest": (
        "its oneOf alternatives overlap: 'Standard anonymous event' allows type page/screen, which the "
        "'Page view' / 'Mobile screen view' alternatives also match, so no anonymous page or screen body "
        "could ever satisfy oneOf. Validated as anyOf (at least one alternative must match)."
    ),
    "parameters track_customer_id / trackEvent_customer_id": (
        "the path identifier is oneOf three plain strings (id, email, cio_id; the cio_id 'format' "
        "'cio_[a-zA-Z0-9]*' is not a registered format), so every identifier matches all three and "
        "fails oneOf. Validated as anyOf (any string)."
    ),
    "POST /api/v1/merge_customers primary / secondary": (
        "oneOf id / email / cio_id alternatives with maxProperties 1 but without 'required', so "
        "{\"id\": ...} matches all three and fails oneOf. Each alternative is given the 'required' of "
        "its one property, as in the v2 person_merge schema: exactly one of id / email / cio_id."
    ),
    "eventsRequest (v1 person events), 'Mobile screen view'": (
        "requires anonymous_id, copied from the anonymous-event schema: a screen event of the person "
        "named in the path has no anonymous id. Validated without that requirement."
    ),
}


def correct_known_defects(spec: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``spec`` with :data:`KNOWN_SPEC_DEFECTS` corrected (every JSON pointer unchanged)."""
    spec = copy.deepcopy(spec)
    components = spec["components"]
    for schema in (
        components["schemas"]["anonymousEventsRequest"],
        *(components["parameters"][n]["schema"] for n in ("track_customer_id", "trackEvent_customer_id")),
    ):
        if "oneOf" in schema:
            schema["anyOf"] = schema.pop("oneOf")
    merge = spec["paths"]["/api/v1/merge_customers"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    for side in ("primary", "secondary"):
        for alternative in merge["properties"][side].get("oneOf", []):
            names = list(alternative.get("properties", {}))
            if len(names) == 1 and "required" not in alternative:
                alternative["required"] = names
    for alternative in components["schemas"]["eventsRequest"]["oneOf"]:
        if alternative.get("title") == "Mobile screen view":
            alternative["required"] = [r for r in alternative.get("required", []) if r != "anonymous_id"]
    return spec


@lru_cache(maxsize=2)
def get_validator(corrected: bool = True) -> TrackApiValidator:
    """The validator, loaded once (by default with :data:`KNOWN_SPEC_DEFECTS` corrected)."""
    return TrackApiValidator.from_file(SPEC_PATH, corrected=corrected)
