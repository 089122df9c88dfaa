"""The Pipelines output (``CUSTOMERIO_API=pipelines``): claims encoded, packed and sent as ``/v1/batch`` requests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

from ...operations import Claimed
from ..base import Outcome, OutputConfig, SendResult, Unit, Workspace, register
from .client import PipelinesClient, resolve_pipelines_url
from .encoder import UnsupportedOperation, claimed_calls
from .packing import MAX_CALL_BYTES, MAX_REQUEST_BYTES, encoded_size, pack

__all__ = ["CLAIM_BYTES", "PipelinesOutput", "PipelinesUnit"]

#: what one claim may carry (bytes of stored neutral operations): Segment calls come out about the same size
#: (measured: 802 vs 810 body bytes per event), so a claim fills one request; :func:`pack` splits if not
CLAIM_BYTES = 460_000


@dataclass(frozen=True, slots=True)
class PipelinesUnit(Unit):
    """A unit with its calls already encoded (``texts``, one per item), or why an item cannot be sent."""

    texts: tuple[str, ...] = ()
    refused: str | None = None


@register
class PipelinesOutput:
    """``CUSTOMERIO_API=pipelines``: every operation, anonymous ones included, in ``/v1/batch`` requests.

    A claim is encoded to calls, packed by bytes (:func:`pack`: under 475,000 bytes a request, 32,000 a
    call); an operation whose call is over the limit, or that the API cannot express, is dead-lettered with
    the reason without being sent. A refused request (400 in strict mode) is halved by the settlement policy
    until the bad call is alone; 401/403, 429, 5xx and ``Retry-After`` settle as for Track.
    """

    name = "pipelines"
    max_batch_bytes = CLAIM_BYTES
    #: the outbox lets any stored operation through; the exact call size is checked here
    max_op_bytes = MAX_REQUEST_BYTES

    #: every event rides in the batches, so a longer wait for a fuller one saves requests (at most that latency)
    linger_s = 1.0
    #: anonymous events go in the same ``/v1/batch`` requests as everything else
    batches_anonymous = True

    def __init__(self, client: PipelinesClient) -> None:
        self.client = client

    @classmethod
    def create(cls, config: OutputConfig) -> Self:
        """The output with a client for the key: the region's host or the override.

        The Pipelines API has no region lookup: ``CUSTOMERIO_REGION=auto`` means US (set ``eu`` for EU).
        """
        key = config.pipelines_key()
        client = PipelinesClient(
            key,
            resolve_pipelines_url(config.region, config.pipelines_url),
            timeout=config.timeout_s,
            transport=config.transport,
            retry_after_max_s=config.retry_after_max_s,
        )
        return cls(client)

    @property
    def workspace(self) -> Workspace:
        """The source key and the Pipelines API address."""
        return Workspace(self.client.api_key, self.client.base_url)

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()

    def claim_size(self, max_items: int, interval: float) -> int:
        """A full batch."""
        return max_items

    def units(self, items: Sequence[Claimed]) -> list[Unit]:
        """Refused operations first (settled without a request), then the batches, in claim order."""
        refused: list[Unit] = []
        kept: list[Claimed] = []
        texts: list[str] = []
        for item in items:
            try:
                calls = claimed_calls(item)
            except UnsupportedOperation as exc:
                refused.append(PipelinesUnit([item], refused=str(exc)))
                continue
            too_large = max((encoded_size(call) for call in calls), default=0)
            if too_large > MAX_CALL_BYTES:
                reason = f"call is {too_large} bytes, over the Pipelines API's {MAX_CALL_BYTES}-byte limit per call"
                refused.append(PipelinesUnit([item], refused=reason))
                continue
            kept.append(item)
            texts.append(",".join(calls))
        packing = pack(texts, max_call_bytes=MAX_REQUEST_BYTES, overhead=self.client.batch_overhead)
        for index in packing.too_large:  # one operation's calls over a whole request: not sendable either
            refused.append(PipelinesUnit([kept[index]], refused="the operation's calls exceed one request"))
        batches: list[Unit] = [
            PipelinesUnit([kept[i] for i in group_], texts=tuple(texts[i] for i in group_))
            for group_ in packing.batches
        ]
        return [*refused, *batches]

    def send(self, unit: Unit) -> SendResult:
        """Send a batch unit (re-encoding halves); a refused one is answered without any request."""
        if isinstance(unit, PipelinesUnit) and unit.refused is not None:
            return SendResult(Outcome.PERMANENT, error=unit.refused, sent=False)
        texts = list(unit.texts) if isinstance(unit, PipelinesUnit) and unit.texts else None
        if texts is None:
            try:
                texts = [",".join(claimed_calls(item)) for item in unit.items]
            except UnsupportedOperation as exc:
                return SendResult(Outcome.PERMANENT, error=str(exc), sent=False)
        return self.client.send_batch(texts)

    def check_credentials(self) -> None:
        """An empty strict-mode batch (:meth:`PipelinesClient.check`)."""
        self.client.check()
