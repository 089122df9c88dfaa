"""Output APIs, the declared plug-in point for where operations go: one module per Customer.io API.

:mod:`.base` declares the interface (:class:`~.base.Output`, the :class:`~.base.OutputConfig` an output is
built from, the classified :class:`~.base.SendResult`) and the registry :data:`~.base.OUTPUTS`, keyed by
``CUSTOMERIO_API``. The implementations register themselves: :mod:`.track` (``v1`` and ``v2``; encoders
:mod:`.track_v1`, :mod:`.track_v2`) and :mod:`.pipelines` (``pipelines``). A new output is one module,
imported here.
"""

from __future__ import annotations

from .base import OUTPUTS, Output, OutputConfig, create_output, register

# isort: split
# the implementations register themselves on import, in this order: v1, v2, pipelines
from . import track

# isort: split
from . import pipelines

__all__ = ["OUTPUTS", "Output", "OutputConfig", "create_output", "pipelines", "register", "track"]
