"""Run the HTTP service in-process for tests.

- :func:`in_process_service` -- the app behind Starlette's ``TestClient``: no socket, no server (unit tier);
- :func:`running_service` -- uvicorn in a thread on a free loopback port (integration and e2e tiers).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
import uvicorn
from fastapi.testclient import TestClient

from posthog_customerio.runtime import Runtime
from posthog_customerio.service import create_app
from posthog_customerio.service.http_timeouts import uvicorn_config

from .helpers import free_port, wait_serving

__all__ = ["in_process_service", "running_service"]


@contextmanager
def running_service(
    runtime: Runtime,
    *,
    deliver: bool = True,
    ingest: bool = True,
    close_runtime: bool = True,
    start_timeout_s: float = 15.0,
    clock: Callable[[], datetime] | None = None,
) -> Iterator[str]:
    """Serve ``create_app(runtime)`` on ``127.0.0.1:<free port>``; yields the base URL.

    The app's lifespan runs (delivery workers and the throughput sampler start).
    On exit the server shuts down (its lifespan drains the outbox for up to
    ``SHUTDOWN_GRACE_S``) and, unless ``close_runtime`` is false, the runtime is closed.
    ``clock``: the receive time the capture receivers correct SDK clocks against (default: wall time).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn_config(
        create_app(runtime, deliver=deliver, ingest=ingest, clock=clock),
        "127.0.0.1",
        port,
        read_timeout_s=runtime.settings.http_read_timeout_s,
        keep_alive_s=runtime.settings.http_keep_alive_s,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout_s
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the service thread exited before it started serving (see the log)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start within {start_timeout_s:.0f} s")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        if close_runtime:
            runtime.close()


@contextmanager
def in_process_service(
    runtime: Runtime,
    *,
    deliver: bool = False,
    ingest: bool = True,
    close_runtime: bool = True,
    clock: Callable[[], datetime] | None = None,
    raise_server_exceptions: bool = True,
) -> Iterator[TestClient]:
    """``create_app(runtime)`` behind a ``TestClient`` (its lifespan runs); requests take paths (``client.get("/")``).

    No delivery by default, and the service's probe of Customer.io (``/healthz``, ``/api/status``) is
    answered in-process as "credentials ok": a unit test sends nothing out (``running_service`` does).
    """
    runtime.check_credentials = lambda: None  # type: ignore[method-assign]
    app = create_app(runtime, deliver=deliver, ingest=ingest, clock=clock)
    with TestClient(app, raise_server_exceptions=raise_server_exceptions) as client:
        yield client
    if close_runtime:
        runtime.close()


#: the installed ``posthog-customerio`` entry point (beside this interpreter)
SERVE_SCRIPT = Path(sys.executable).with_name("posthog-customerio")


@contextmanager
def serve_process(env: dict[str, str], log: Path, *command: str) -> Iterator[str]:
    """``command`` (default ``serve``) as a subprocess with ``env`` as its whole environment, logging to ``log``,
    on a free port; yields its URL; SIGTERM at the end (it must exit 0)."""
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(SERVE_SCRIPT), *(command or ("serve",)), "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_serving(url, process)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                assert process.wait(30) == 0, log.read_text()
            except subprocess.TimeoutExpired:
                process.kill()
                raise


def metric(url: str, sample: str) -> float:
    """The value of one sample (``name`` or ``name{label="value"}``) of a service's ``/metrics``."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    values = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(f"{sample} ")]
    assert len(values) == 1, f"{sample} in /metrics: {values}"
    return float(values[0])
