"""What the route handlers share: one :class:`Service` per app, kept in ``app.state.service``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from fastapi import Request

from ..ingestion import GroupCommitter, IngestReport
from ..metrics import Metrics
from ..runtime import Runtime
from ..sources import PostHogEvent
from ..status import RequestLog, ThroughputSampler
from .auth import Authenticator
from .config import ServiceConfig
from .health import CustomerioProbe, DeliveryWatch, Readiness
from .proxy import PostHogProxy
from .room import RoomGauge

__all__ = ["Service", "service_of"]


@dataclass(slots=True)
class Service:
    """The runtime and the collaborators the handlers use (built once by ``create_app``)."""

    runtime: Runtime
    #: what the service reads of the settings
    config: ServiceConfig
    requests_log: RequestLog
    metrics: Metrics
    sampler: ThroughputSampler
    auth: Authenticator
    #: set with ``POSTHOG_HOST``: capture goes to PostHog first, other PostHog paths are forwarded
    proxy: PostHogProxy | None
    #: stores parsed events in one transaction (SQLite: a shared group commit)
    commit_events: Callable[[Sequence[PostHogEvent], str], IngestReport]
    #: SQLite: the group commit, which the receivers await on the event loop (``None``: PostgreSQL)
    group: GroupCommitter | None
    #: ``MAX_QUEUE`` / ``OUTBOX_MAX_QUEUED`` for the receivers, from recent counts
    room: RoomGauge
    readiness: Readiness
    probe: CustomerioProbe
    #: whether delivery settles anything (``/healthz`` says ``retrying`` / ``stalled`` when not)
    watch: DeliveryWatch
    deliver: bool
    #: the receive time of a capture request (UTC; injectable so tests do not depend on wall time)
    clock: Callable[[], datetime]


def service_of(request: Request) -> Service:
    """The :class:`Service` of the app serving ``request``."""
    service: Service = request.app.state.service
    return service
