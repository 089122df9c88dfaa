"""The always-on HTTP service: PostHog webhook and capture receivers, PostHog paths, operations endpoints.

A request is answered 200 only after its events are committed to the outbox; bad input gets
a 4xx with a JSON ``{"error": ...}`` and leaves the outbox unchanged.

* :mod:`.app` — :func:`create_app`, the lifespan (delivery workers, sampler, drain on shutdown);
* :mod:`.ingest_routes` — webhook, capture, capture v1, capture through the PostHog proxy;
* :mod:`.posthog_routes` — standalone ``/flags`` ``/decide`` ``/array`` ``/s``, or forwarded to PostHog;
* :mod:`.ops_routes` — ``/healthz`` ``/readyz`` ``/metrics`` ``/status`` ``/api/*``;
* :mod:`.auth`, :mod:`.cors`, :mod:`.paths` — credentials, CORS, which path is whose;
* :mod:`.bodies`, :mod:`.health`, :mod:`.context` — bodies and errors, readiness and probe, shared state;
* :mod:`.proxy`, :mod:`.http_timeouts`, :mod:`.apidoc` — PostHog forwarding, read deadline and head bounds, OpenAPI.
"""

from __future__ import annotations

from .app import create_app
from .bodies import HttpError

__all__ = ["HttpError", "create_app"]
