"""Request bodies and error answers: bounded reads, SDK decodings, strict JSON, ``{"error": ...}`` responses."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from ..sources import TooManyEvents, loads_strict
from ..sources.decoding import DecodeError
from ..sources.decoding import decode_body as _decode

__all__ = ["HttpError", "decode_body", "parse_json", "read_body", "too_many"]

_REASONS = {400: "bad_request", 401: "auth", 413: "too_large", 415: "unsupported_media"}


class HttpError(Exception):
    """An HTTP error answer with a JSON body ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.reason = reason or _REASONS.get(status, str(status))

    def response(self) -> JSONResponse:
        """The JSON response for this error."""
        return JSONResponse({"error": self.message}, status_code=self.status, headers=self.headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes (413) before reading it all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"body is {declared} bytes, over MAX_BODY_BYTES ({limit})", reason="body_too_large")
    chunks, total = [], 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise HttpError(413, f"body is over MAX_BODY_BYTES ({limit})", reason="body_too_large")
            chunks.append(chunk)
    except ClientDisconnect:  # the client went away, or HTTP_READ_TIMEOUT_S closed a slow one
        message = "the connection closed before the whole body arrived"
        raise HttpError(400, message, reason="client_disconnect") from None
    return b"".join(chunks)


def decode_body(request: Request, body: bytes, limit: int) -> bytes:
    """Undo the encodings PostHog SDKs use (see :mod:`posthog_customerio.sources.decoding`), or a 4xx."""
    try:
        return _decode(request.headers, request.query_params, body, limit)
    except DecodeError as exc:
        raise HttpError(exc.status, exc.message, reason=exc.reason) from None


def parse_json(body: bytes, max_events: int | None = None) -> Any:
    """JSON from bytes, or a 400 naming the problem (413 past ``max_events`` top-level items)."""
    if not body.strip():
        raise HttpError(400, "empty body: expected JSON", reason="empty_body")
    if max_events is not None and body.count(b",") < max_events:
        # no array in it can hold more than max_events: the counting decoder (slower, in Python) is not needed
        with contextlib.suppress(Exception):  # refused: the counting decoder below says why, as it always did
            return loads_strict(body)
    try:
        return loads_strict(body, max_events)
    except TooManyEvents as exc:
        raise HttpError(413, too_many(exc.limit), reason="too_many_events") from None
    except UnicodeDecodeError:
        raise HttpError(400, "body is not UTF-8 JSON", reason="not_utf8") from None
    except json.JSONDecodeError as exc:
        message = f"malformed JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        raise HttpError(400, message, reason="malformed_json") from None
    except RecursionError:
        raise HttpError(400, "malformed JSON: nested too deeply", reason="malformed_json") from None
    except ValueError as exc:
        raise HttpError(400, f"malformed JSON: {str(exc)[:200]}", reason="malformed_json") from None


def too_many(limit: int) -> str:
    """The 413 message for more than ``limit`` events in one request."""
    return f"more than {limit} events in one request (MAX_EVENTS_PER_REQUEST); send them in batches of at most {limit}"
