"""Customer.io Track API: the HTTP client (auth, region) and the two Track outputs.

:class:`TrackClient` sends requests and classifies answers (:func:`.base.classify`).
:class:`TrackV2Output` (``CUSTOMERIO_API=v2``) sends a claim as one v2 batch, and
anonymous events one v1 request each (v2 has none); :class:`TrackV1Output`
(``CUSTOMERIO_API=v1``) sends one v1 request per operation, and what v1 cannot
express (objects, relationships) as a v2 batch of one. The encoders are
:mod:`.track_v1` and :mod:`.track_v2`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Self

import httpx

from .. import __version__
from ..operations import MAX_BATCH_BYTES, MAX_OP_BYTES, Claimed, Kind
from .base import (
    AUTH_STATUSES,
    RETRY_AFTER_MAX_S,
    AuthError,
    Outcome,
    OutputConfig,
    SendResult,
    Unit,
    Workspace,
    classify,
    register,
)
from .deadline import DeadlineClient
from .track_v1 import MAX_SEGMENT_IDS, has_v1_equivalent, segment_key, segment_request, v1_body_text, v1_request
from .track_v2 import BATCH_ENVELOPE, BATCH_PATH, batch_body, batch_item

__all__ = ["REGION_URLS", "TrackClient", "TrackOutput", "TrackV1Output", "TrackV2Output", "resolve_track_url"]

log = logging.getLogger(__name__)

REGION_URLS = {"us": "https://track.customer.io", "eu": "https://track-eu.customer.io"}


class TrackClient:
    """A Track API client bound to one workspace (site ID + API key) and base URL."""

    def __init__(
        self,
        site_id: str,
        api_key: str,
        base_url: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        retry_after_max_s: float = RETRY_AFTER_MAX_S,
    ) -> None:
        self.site_id = site_id
        self.base_url = base_url.rstrip("/")
        self.retry_after_max_s = retry_after_max_s
        self._http = DeadlineClient(
            timeout,
            base_url=self.base_url,
            auth=httpx.BasicAuth(site_id, api_key),
            headers={
                "User-Agent": f"posthog-customerio/{__version__}",
                "Content-Type": "application/json",
            },
            follow_redirects=False,
            transport=transport,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> TrackClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def account_region(self) -> dict[str, Any]:
        """``GET /api/v1/accounts/region``: verifies credentials, returns the region.

        Raises :class:`AuthError` for bad credentials and ``httpx.HTTPError`` for
        network problems or unexpected answers.
        """
        response = self._http.get("/api/v1/accounts/region")
        if response.status_code in AUTH_STATUSES:
            raise AuthError("Customer.io rejected the credentials (Site ID or API key invalid)")
        response.raise_for_status()
        data = response.json()
        if not isinstance(data, dict) or "url" not in data:
            raise httpx.DecodingError("unexpected answer from /api/v1/accounts/region")
        return data

    def request(self, method: str, path: str, body: str | None) -> SendResult:
        """Send one request with a pre-encoded JSON body and classify the answer."""
        try:
            response = self._http.request(method, path, content=body.encode() if body is not None else None)
        except httpx.HTTPError as exc:
            return SendResult(Outcome.TRANSIENT, error=f"{type(exc).__name__}: {exc}")
        return classify(response, self.retry_after_max_s)

    def send_batch(self, payload_texts: list[str]) -> SendResult:
        """``POST /api/v2/batch`` with already-encoded operations (in order)."""
        return self.request("POST", BATCH_PATH, batch_body(payload_texts))

    def send_v1(self, payload: dict[str, Any], kind: Kind = "person") -> SendResult:
        """Send one neutral operation of ``kind`` through the matching v1 endpoint."""
        method, path, body = v1_request(payload, kind)
        return self.request(method, path, v1_body_text(body))


class TrackOutput:
    """What both Track outputs share: sending a unit as a v2 batch or as one v1 request."""

    name = "track"
    max_batch_bytes = MAX_BATCH_BYTES - BATCH_ENVELOPE
    max_op_bytes = MAX_OP_BYTES
    #: a claim is sent as soon as it is there (a short wait lets a burst fill it)
    linger_s = 0.1
    #: an anonymous event is one v1 request
    batches_anonymous = False

    def __init__(self, client: TrackClient) -> None:
        self.client = client

    @classmethod
    def create(cls, config: OutputConfig) -> Self:
        """The output with a client for the configured workspace (asks Customer.io for an ``auto`` region)."""
        site_id, api_key = config.track_credentials()
        client = TrackClient(
            site_id,
            api_key,
            track_url(config),
            timeout=config.timeout_s,
            transport=config.transport,
            retry_after_max_s=config.retry_after_max_s,
        )
        return cls(client)

    @property
    def workspace(self) -> Workspace:
        """The Site ID and the Track API address."""
        return Workspace(self.client.site_id, self.client.base_url)

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()

    def claim_size(self, max_items: int, interval: float) -> int:
        """A full batch."""
        return max_items

    def units(self, items: Sequence[Claimed]) -> list[Unit]:
        """One batch of everything (subclasses route what v2 cannot carry)."""
        return [Unit(items)] if items else []

    def send(self, unit: Unit) -> SendResult:
        """A batch unit as one ``/api/v2/batch``; a single one through v1 (v2 when v1 has no equivalent); segment
        changes as one ``add_customers``/``remove_customers``."""
        if unit.items and unit.items[0].kind == "segment":
            try:
                verb, where, ids = segment_request([json.loads(item.payload) for item in unit.items])
            except (ValueError, KeyError, TypeError, StopIteration) as exc:
                return SendResult(Outcome.PERMANENT, error=f"malformed segment operation: {exc}", sent=False)
            return self.client.request(verb, where, v1_body_text(ids))
        if unit.batch:
            return self.client.send_batch([batch_item(item.payload, item.kind) for item in unit.items])
        (item,) = unit.items
        try:
            method, path, body = v1_request(json.loads(item.payload), item.kind)
        except ValueError:  # no v1 equivalent (relationships, ...): a v2 batch of one
            return self.client.send_batch([batch_item(item.payload, item.kind)])
        return self.client.request(method, path, v1_body_text(body))

    def check_credentials(self) -> None:
        """``GET /api/v1/accounts/region``."""
        self.client.account_region()


class TrackV2Output(TrackOutput):
    """``CUSTOMERIO_API=v2``: one v2 batch per claim, then its anonymous events through v1.

    The outbox never claims an operation together with the anonymous events it waits on.
    """

    name = "v2"

    def units(self, items: Sequence[Claimed]) -> list[Unit]:
        """The batch first (cut where segment changes come between, to keep each person's order), then one v1
        request per anonymous event."""
        units: list[Unit] = []
        batch: list[Claimed] = []
        for run in _segment_runs([item for item in items if item.kind != "anonymous"]):
            if isinstance(run, Unit):
                if batch:
                    units.append(Unit(batch))
                    batch = []
                units.append(run)
            else:
                batch.append(run)
        if batch:
            units.append(Unit(batch))
        return units + [Unit([item], batch=False) for item in items if item.kind == "anonymous"]


class TrackV1Output(TrackOutput):
    """``CUSTOMERIO_API=v1``: one v1 request per operation (objects as a v2 batch of one)."""

    name = "v1"

    def claim_size(self, max_items: int, interval: float) -> int:
        """What a few seconds of requests can send."""
        return max(1, min(max_items, int(5 / interval)))

    def units(self, items: Sequence[Claimed]) -> list[Unit]:
        """One unit per operation, in order (consecutive segment changes share one)."""
        return [
            run if isinstance(run, Unit) else Unit([run], batch=not has_v1_equivalent(run.kind))
            for run in _segment_runs(items)
        ]


def _segment_runs(items: Sequence[Claimed]) -> list[Claimed | Unit]:
    """``items`` in order, with each run of consecutive segment changes of one segment, action and identifier
    type (at most :data:`MAX_SEGMENT_IDS`) as one unit: one request, not a batch (Customer.io ignores ids it
    cannot match rather than refusing them, so a refused one is refused whole: never halved)."""
    runs: list[Claimed | Unit] = []
    group: list[Claimed] = []
    key: tuple[str, str, str] | None = None
    for item in items:
        if item.kind != "segment":
            if group:
                runs.append(Unit(group, batch=False))
                group, key = [], None
            runs.append(item)
            continue
        try:
            item_key: tuple[str, str, str] | None = segment_key(json.loads(item.payload))
        except (ValueError, KeyError, TypeError, StopIteration):
            item_key = None  # malformed: alone, refused by send
        if group and (item_key is None or item_key != key or len(group) >= MAX_SEGMENT_IDS):
            runs.append(Unit(group, batch=False))
            group = []
        group.append(item)
        key = item_key
    if group:
        runs.append(Unit(group, batch=False))
    return runs


register(TrackV1Output)
register(TrackV2Output)


def resolve_track_url(site_id: str, api_key: str, region: str, override: str | None, *, timeout: float = 30.0) -> str:
    """The base URL to use: the override, the region's host, or (``auto``) ask Customer.io."""
    if override:
        return override.rstrip("/")
    if region in REGION_URLS:
        return REGION_URLS[region]
    with TrackClient(site_id, api_key, REGION_URLS["us"], timeout=timeout) as client:
        return str(client.account_region()["url"]).rstrip("/")


def track_url(config: OutputConfig) -> str:
    """The Track API base URL :meth:`TrackOutput.create` uses (asks Customer.io once when the region is ``auto``).

    With ``fallback_to_us`` set (the service), a failed lookup logs a warning and uses the US host:
    delivery then pauses on 401 and retries instead of the receiver refusing to start.
    """
    site_id, api_key = config.track_credentials()
    try:
        return resolve_track_url(site_id, api_key, config.region, config.track_url, timeout=config.lookup_timeout_s)
    except (AuthError, httpx.HTTPError) as exc:
        if not config.fallback_to_us:
            raise
        log.warning("region lookup failed (%s); using %s", exc, REGION_URLS["us"])
        return REGION_URLS["us"]
