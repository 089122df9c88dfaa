"""What the HTTP service reads of the settings: one small typed object, built by the runtime."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import SecretStr

__all__ = ["ServiceConfig"]


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """The service's bounds, credentials and collaborators' addresses (:meth:`Runtime.service_config`)."""

    #: ``MAX_BODY_BYTES``: a body (before or after decompression) above it gets 413
    max_body_bytes: int
    #: ``MAX_EVENTS_PER_REQUEST``: more events in one body get 413
    max_events_per_request: int
    #: ``MAX_QUEUE``: at this outbox depth receivers answer 503 and ``/readyz`` says so
    max_queue: int
    #: ``SHUTDOWN_GRACE_S``: how long a stop may flush delivery
    shutdown_grace_s: float
    #: ``CORS_ORIGINS`` as a list (``["*"]`` for any)
    cors_origins: list[str]
    #: ``POSTHOG_HOST``: be PostHog's reverse proxy (None: standalone)
    posthog_host: str | None
    posthog_timeout_s: float
    #: queued work may wait this long with nothing settled before ``/healthz`` calls delivery degraded
    stall_after_s: float
    #: ``WEBHOOK_TOKEN``, ``WEBHOOK_SIGNING_SECRET`` and the operations token (``OPS_TOKEN``, else the webhook token)
    webhook_token: SecretStr = field(default_factory=lambda: SecretStr(""), repr=False)
    webhook_signing_secret: SecretStr = field(default_factory=lambda: SecretStr(""), repr=False)
    ops_token: SecretStr = field(default_factory=lambda: SecretStr(""), repr=False)
