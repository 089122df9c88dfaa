"""The output plug-in point: the protocol delivery drives, the registry, and the classified results.

An output turns claimed neutral operations (:mod:`..operations`, stored by the
outbox) into requests of one Customer.io API. Delivery asks it to split a claim into
:class:`Unit` s (one request each), sends them in order, and hands every
:class:`SendResult` to the settlement policy (:mod:`..settlement`).

Outputs are declared in :data:`OUTPUTS`, keyed by their ``CUSTOMERIO_API`` value (each implementation
module registers its classes with :func:`register`); the runtime builds the chosen one with
:func:`create_output` from an :class:`OutputConfig` and never looks inside. What differs between outputs
(how to reach the API, the default delivery linger, the pacing workspace) is on the output.
"""

from __future__ import annotations

import email.utils
import enum
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeVar

import httpx

from ..operations import Claimed

__all__ = [
    "OUTPUTS",
    "RETRY_AFTER_MAX_S",
    "AuthError",
    "Outcome",
    "Output",
    "OutputConfig",
    "SendResult",
    "Unit",
    "Workspace",
    "classify",
    "create_output",
    "parse_retry_after",
    "register",
]

TRANSIENT_STATUSES = frozenset({408, 425, 429})
AUTH_STATUSES = frozenset({401, 403})
_BODY_KEEP = 2000
#: the longest pause a ``Retry-After`` may impose by default (``RETRY_AFTER_MAX_S``; = the backoff cap)
RETRY_AFTER_MAX_S = 60.0


class Outcome(enum.Enum):
    """What a response means for the operations it carried."""

    OK = "ok"  #: all accepted
    PARTIAL = "partial"  #: some items rejected (``item_errors``), the rest accepted
    TRANSIENT = "transient"  #: nothing applied; retry later (network, 408, 429, 5xx)
    PERMANENT = "permanent"  #: the request is bad (400, 404, 413, 422, ...)
    AUTH = "auth"  #: credentials or account problem (401, 403, redirect): stop


class AuthError(RuntimeError):
    """Customer.io rejected the credentials (or the region is wrong)."""


@dataclass(slots=True)
class SendResult:
    """One HTTP exchange with Customer.io, classified."""

    outcome: Outcome
    status: int | None = None
    body: str = ""
    error: str | None = None
    retry_after: float | None = None
    item_errors: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: False when the output refused the unit itself (nothing was sent: no request counted)
    sent: bool = True

    def describe(self) -> str:
        """A one-line description for logs and dead letters."""
        if not self.sent:
            return f"not sent: {self.error}"
        if self.status is None:
            return f"network error: {self.error}"
        return f"HTTP {self.status}: {self.body[:300]}" if self.body else f"HTTP {self.status}"


@dataclass(frozen=True, slots=True)
class Unit:
    """The operations of one request, in order; ``batch``: a batch request (a refused one is halved)."""

    items: Sequence[Claimed]
    batch: bool = True


def _not_configured() -> Any:
    raise ValueError("this output's credentials were not given")


@dataclass(frozen=True, slots=True)
class OutputConfig:
    """What an output is built from: made by the runtime from the settings (outputs never see the settings).

    Credentials are callables, read only by the output that needs them (a missing one raises the
    configuration error then, so the Track credentials are not required with the Pipelines API).
    """

    #: ``us``, ``eu`` or ``auto`` (``CUSTOMERIO_REGION``)
    region: str = "auto"
    #: the deadline of one request (already bounded by the claims' lease)
    timeout_s: float = 30.0
    #: the deadline of a region lookup (``CUSTOMERIO_TIMEOUT_S``)
    lookup_timeout_s: float = 30.0
    retry_after_max_s: float = RETRY_AFTER_MAX_S
    #: a failed region lookup logs a warning and uses the US host instead of raising (the service)
    fallback_to_us: bool = False
    #: Track API: ``(site_id, api_key)``, and a base URL that replaces the region's (``CUSTOMERIO_TRACK_URL``)
    track_credentials: Callable[[], tuple[str, str]] = _not_configured
    track_url: str | None = None
    #: Pipelines API: the source key, and a base URL that replaces the region's (``CUSTOMERIO_PIPELINES_URL``)
    pipelines_key: Callable[[], str] = _not_configured
    pipelines_url: str | None = None
    #: an HTTP transport in place of the network (tests)
    transport: httpx.BaseTransport | None = None


class Workspace(NamedTuple):
    """Who an output sends as: replicas sending as the same workspace share one pace."""

    account: str
    base_url: str


class Output(Protocol):
    """One output API, as delivery drives it (:mod:`.track`, :mod:`.pipelines`)."""

    #: the ``CUSTOMERIO_API`` value that selects it
    name: str
    #: the most bytes of operations one request may carry, and one operation may be
    max_batch_bytes: int
    max_op_bytes: int
    #: seconds delivery waits for a fuller claim unless ``DELIVERY_LINGER_S`` says otherwise
    linger_s: float
    #: whether one request carries many anonymous events (else: one request each)
    batches_anonymous: bool

    @property
    def workspace(self) -> Workspace:
        """The account and API address requests go to (the key of the pace replicas share)."""
        ...

    def claim_size(self, max_items: int, interval: float) -> int:
        """How many operations to claim at once, given the seconds between request slots."""
        ...

    def units(self, items: Sequence[Claimed]) -> list[Unit]:
        """Split a claim into requests, in the order they must be sent."""
        ...

    def send(self, unit: Unit) -> SendResult:
        """Encode and send one unit; never raises for HTTP or network trouble."""
        ...

    def check_credentials(self) -> None:
        """Raise :class:`AuthError` while the credentials are rejected (other errors: try later)."""
        ...

    def close(self) -> None:
        """Close its connections."""
        ...


class OutputFactory(Protocol):
    """An output class as the registry holds it: its name and how to build it from an :class:`OutputConfig`."""

    name: str

    def create(self, config: OutputConfig) -> Output:
        """The output, connected as ``config`` says (may ask Customer.io for the region)."""
        ...


#: ``CUSTOMERIO_API`` value -> the output class it selects (filled by :func:`register`)
OUTPUTS: dict[str, OutputFactory] = {}

_F = TypeVar("_F", bound=OutputFactory)


def register(factory: _F) -> _F:
    """Class decorator: declare an output under its ``name`` (its ``CUSTOMERIO_API`` value)."""
    OUTPUTS[factory.name] = factory
    return factory


def create_output(api: str, config: OutputConfig) -> Output:
    """The output for ``CUSTOMERIO_API`` (ValueError for an unknown one)."""
    try:
        factory = OUTPUTS[api]
    except KeyError:
        raise ValueError(f"unknown CUSTOMERIO_API {api!r} (one of {', '.join(OUTPUTS)})") from None
    return factory.create(config)


def parse_retry_after(value: str | None, now: float | None = None, limit: float = RETRY_AFTER_MAX_S) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP date), within ``[0, limit]``.

    Negative values and past dates give 0; ``inf``, huge numbers and far dates give ``limit``;
    garbage (and ``nan``) gives None, so the caller's own backoff applies.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds: float | None = float(value)
    except ValueError:
        seconds = _seconds_until(value, time.time() if now is None else now)
    if seconds is None or math.isnan(seconds):
        return None
    return min(max(0.0, seconds), max(0.0, limit))


def _seconds_until(value: str, now: float) -> float | None:
    """Seconds from ``now`` to an HTTP date, or None when it is not one."""
    try:
        moment = email.utils.parsedate_to_datetime(value)
        return moment.timestamp() - now if moment is not None else None
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def _item_errors(body: str) -> dict[int, dict[str, Any]]:
    try:
        parsed = json.loads(body) if body else {}
    except json.JSONDecodeError:
        return {}
    errors = parsed.get("errors") if isinstance(parsed, dict) else None
    found: dict[int, dict[str, Any]] = {}
    for error in errors or []:
        if isinstance(error, dict) and isinstance(error.get("batch_index"), int):
            found[error["batch_index"]] = error
    return found


def classify(response: httpx.Response, retry_after_max_s: float = RETRY_AFTER_MAX_S) -> SendResult:
    """Turn an HTTP response into a :class:`SendResult` (``Retry-After`` clamped to ``retry_after_max_s``)."""
    status = response.status_code
    body = response.text[:_BODY_KEEP]
    retry_after = parse_retry_after(response.headers.get("retry-after"), limit=retry_after_max_s)
    if 200 <= status < 300:
        errors = _item_errors(response.text) if response.content else {}
        outcome = Outcome.PARTIAL if errors else Outcome.OK
        return SendResult(outcome, status, body, item_errors=errors)
    if 300 <= status < 400:
        location = response.headers.get("location", "?")
        message = f"Customer.io redirected to {location}: set CUSTOMERIO_REGION (or use auto)"
        return SendResult(Outcome.AUTH, status, body, error=message)
    if status in AUTH_STATUSES:
        return SendResult(Outcome.AUTH, status, body, error="Site ID or API key invalid")
    if status in TRANSIENT_STATUSES or status >= 500:
        return SendResult(Outcome.TRANSIENT, status, body, retry_after=retry_after)
    return SendResult(Outcome.PERMANENT, status, body)
