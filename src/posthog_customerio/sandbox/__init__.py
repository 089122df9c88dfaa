"""A local, in-memory, Customer.io-compatible server ("the sandbox").

Used by the tests, the demo and the ``--sandbox`` CLI flag. It speaks the Track API v1 and v2 (``/api/...``,
HTTP Basic auth ``site_id:api_key``) and the Pipelines API (``/v1/...``), enforces Customer.io's documented
limits strictly (to catch client bugs), keeps a workspace in memory and logs every request. Inspection and
control routes live under ``/_sandbox/`` (no auth); the same state is readable from Python through
:class:`SandboxState` (``SandboxServer().state``, ``.pipelines``).

One job per module, in request order:

* :mod:`.server` -- :func:`create_app`, :class:`SandboxServer` (a background thread, for tests), :func:`serve`;
* :mod:`.api` -- the ``/api`` entry route (faults, auth, dispatch, request log) and ``/unsubscribe``;
* :mod:`.faults`, :mod:`.credentials`, :mod:`.requests_log` -- injected faults, accepted keys, the request log;
* :mod:`.track_v1`, :mod:`.track_v2` -- each API's routes, parsing requests into operations;
* :mod:`.operations` -- the operation model and the field rules both versions share;
* :mod:`.workspace` -- the Customer.io workspace model applying operations (a package: one concern a module;
  the rules, with their citations);
* :mod:`.state` -- :class:`SandboxState`, the parts behind one object; :mod:`.views` -- the ``/_sandbox/`` routes;
* :mod:`.pipelines` -- the Pipelines API emulation (calls, its own state, ``/_sandbox/pipelines/`` views);
* :mod:`.wire` -- body parsing and JSON responses shared by the routes.
"""

from __future__ import annotations

from .server import SandboxServer, create_app, serve
from .state import SandboxState

__all__ = ["SandboxServer", "SandboxState", "create_app", "serve"]
