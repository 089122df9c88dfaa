"""Output APIs: one encoder and client per Customer.io API, chosen by ``CUSTOMERIO_API``.

:mod:`.base` declares the protocol delivery drives (:class:`~.base.Output`) and the
classified :class:`~.base.SendResult`; :mod:`.track` holds the Track API client and
its outputs (encoders :mod:`.track_v1`, :mod:`.track_v2`); :mod:`.pipelines` the
Pipelines API client, call encoders and output (``CUSTOMERIO_API=pipelines``). A new
output is one module and one entry in :data:`OUTPUTS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import Output
from .pipelines import PipelinesClient, PipelinesOutput
from .track import TrackClient, TrackV1Output, TrackV2Output

__all__ = ["OUTPUTS", "OutputContext", "create_output"]


@dataclass(frozen=True, slots=True)
class OutputContext:
    """What an output may be built from: the settings and the (lazily made) Track and Pipelines clients."""

    settings: Any
    track_client: Callable[[], TrackClient]
    pipelines_client: Callable[[], PipelinesClient] | None = None


def _pipelines(context: OutputContext) -> Output:
    if context.pipelines_client is None:
        raise ValueError("CUSTOMERIO_API=pipelines needs a Pipelines client")
    return PipelinesOutput(context.pipelines_client())


#: ``CUSTOMERIO_API`` value -> how to build that output
OUTPUTS: dict[str, Callable[[OutputContext], Output]] = {
    "v1": lambda context: TrackV1Output(context.track_client()),
    "v2": lambda context: TrackV2Output(context.track_client()),
    "pipelines": _pipelines,
}


def create_output(api: str, context: OutputContext) -> Output:
    """The output for ``CUSTOMERIO_API`` (ValueError for an unknown one)."""
    try:
        factory = OUTPUTS[api]
    except KeyError:
        raise ValueError(f"unknown CUSTOMERIO_API {api!r} (one of {', '.join(OUTPUTS)})") from None
    return factory(context)
