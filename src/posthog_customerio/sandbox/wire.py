"""HTTP plumbing shared by the sandbox's routes: body parsing, JSON responses, raw paths, one Track API call."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

JSON = "application/json"

#: What a Track API handler answers: the HTTP status and the JSON payload.
Answer = tuple[int, Any]


class _NoBody:
    """Marker: the request had no body."""


class _BadJson:
    """Marker: the body is not valid JSON."""


NO_BODY: Any = _NoBody()
BAD_JSON: Any = _BadJson()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_body(body: bytes) -> Any:
    """Parsed JSON, or ``NO_BODY`` / ``BAD_JSON`` (``NaN``/``Infinity`` are not JSON)."""
    if not body.strip():
        return NO_BODY
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError):
        return BAD_JSON


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    """A compact UTF-8 JSON response."""
    content = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str)
    return Response(content.encode("utf-8"), status_code=status, media_type=JSON, headers=headers)


def raw_path(scope: Mapping[str, Any]) -> str:
    """The request path as sent (still percent-encoded), without the query."""
    raw = scope.get("raw_path")
    if not raw:
        return str(scope["path"])
    return str(raw.decode("latin-1")).partition("?")[0]


@dataclass(slots=True)
class Call:
    """One ``/api`` request, as the Track API handlers see it."""

    method: str
    segments: list[str]  # raw (still percent-encoded) path segments after "api"
    body: bytes
    parsed: Any
    base_url: str
    region: str
    query: dict[str, str] = field(default_factory=dict)
