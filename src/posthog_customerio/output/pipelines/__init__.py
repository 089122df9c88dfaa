"""Customer.io Pipelines API (Data Pipelines / "CDP" API), ``CUSTOMERIO_API=pipelines``, split like Track:

* :mod:`.calls` — the Segment-spec call builders (``identify``, ``track``, semantic events ...);
* :mod:`.encoder` — a neutral operation -> its calls, with stable ``messageId`` s;
* :mod:`.packing` — encoded calls grouped into ``/v1/batch`` requests under the byte limits;
* :mod:`.client` — the HTTP client (strict mode, source key, answers classified like Track's);
* :mod:`.output` — the output delivery drives (:class:`PipelinesOutput`).
"""

from __future__ import annotations

from .calls import (
    SEMANTIC_EVENTS,
    alias,
    delete_person,
    device_created_or_updated,
    device_deleted,
    encode_call,
    group,
    identify,
    iso_timestamp,
    object_deleted,
    page,
    relationship_deleted,
    screen,
    suppress_person,
    track,
    unsuppress_person,
)
from .client import PIPELINES_URLS, PipelinesClient, resolve_pipelines_url
from .encoder import UnsupportedOperation, claimed_calls, message_id, operation_calls
from .output import CLAIM_BYTES, PipelinesOutput, PipelinesUnit
from .packing import (
    DOCUMENTED_CALL_BYTES,
    DOCUMENTED_REQUEST_BYTES,
    MAX_CALL_BYTES,
    MAX_REQUEST_BYTES,
    Packing,
    pack,
)

__all__ = [
    "CLAIM_BYTES",
    "DOCUMENTED_CALL_BYTES",
    "DOCUMENTED_REQUEST_BYTES",
    "MAX_CALL_BYTES",
    "MAX_REQUEST_BYTES",
    "PIPELINES_URLS",
    "SEMANTIC_EVENTS",
    "Packing",
    "PipelinesClient",
    "PipelinesOutput",
    "PipelinesUnit",
    "UnsupportedOperation",
    "alias",
    "claimed_calls",
    "delete_person",
    "device_created_or_updated",
    "device_deleted",
    "encode_call",
    "group",
    "identify",
    "iso_timestamp",
    "message_id",
    "object_deleted",
    "operation_calls",
    "pack",
    "page",
    "relationship_deleted",
    "resolve_pipelines_url",
    "screen",
    "suppress_person",
    "track",
    "unsuppress_person",
]
