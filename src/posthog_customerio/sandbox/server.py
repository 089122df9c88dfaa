"""The sandbox as a server: the ASGI app (:func:`create_app`), a background server for tests
(:class:`SandboxServer`) and the foreground command (:func:`serve`, ``posthog-customerio sandbox``)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import api, views
from .pipelines import PipelinesState
from .pipelines import routes as pipelines_routes
from .state import SandboxState


async def _error_object(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods as ``{"error": …}`` (the Track API's own routes answer in its shape)."""
    assert isinstance(exc, HTTPException)
    text = "not found" if exc.status_code == 404 else str(exc.detail).lower()
    return JSONResponse({"error": f"{text}: {request.url.path}"}, status_code=exc.status_code, headers=exc.headers)


def create_app(
    state: SandboxState | None = None,
    site_id: str = "sandbox",
    api_key: str = "sandbox",
    region: str = "us",
    pipelines: PipelinesState | None = None,
    pipelines_key: str = "sandbox",
) -> Starlette:
    """The sandbox ASGI app; a given ``state`` keeps its own credentials (``pipelines`` its own key)."""
    app = Starlette(
        routes=[*api.routes(), *views.routes(), *pipelines_routes()],
        exception_handlers={HTTPException: _error_object},
    )
    app.state.sandbox = state if state is not None else SandboxState(site_id, api_key)
    app.state.region = region
    app.state.pipelines = pipelines if pipelines is not None else PipelinesState(pipelines_key)
    return app


class SandboxServer:
    """The sandbox under uvicorn in a daemon thread on ``host`` (127.0.0.1); port 0 = any free.

    With ``ssl_certfile``/``ssl_keyfile`` (PEM) it serves HTTPS, for clients that only speak HTTPS (PyPI
    ``customerio`` builds ``https://{host}:{port}`` URLs).
    """

    def __init__(
        self,
        port: int = 0,
        site_id: str = "sandbox",
        api_key: str = "sandbox",
        region: str = "us",
        host: str = "127.0.0.1",
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        pipelines_key: str = "sandbox",
    ) -> None:
        self.host = host
        self.port = port
        self.ssl_certfile = ssl_certfile
        self.ssl_keyfile = ssl_keyfile
        self.state = SandboxState(site_id, api_key)
        self.pipelines = PipelinesState(pipelines_key)
        self.app = create_app(self.state, region=region, pipelines=self.pipelines)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        scheme = "https" if self.ssl_certfile else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> SandboxServer:
        """Start serving; returns once the server accepts connections."""
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            log_config=None,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=1,
            ssl_certfile=self.ssl_certfile,
            ssl_keyfile=self.ssl_keyfile,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"sandbox-{self.port}", daemon=True
        )
        self._server, self._thread, self._socket = server, thread, sock
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the Customer.io sandbox failed to start")
            time.sleep(0.002)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread (a few hundred ms at most)."""
        server, thread, sock = self._server, self._thread, self._socket
        self._server = self._thread = self._socket = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=5)
        if sock is not None:
            sock.close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    host: str = "127.0.0.1",
    port: int = 8765,
    site_id: str = "sandbox",
    api_key: str = "sandbox",
    region: str = "us",
) -> None:
    """Run the sandbox in the foreground until interrupted."""
    app = create_app(site_id=site_id, api_key=api_key, region=region)
    print(
        f"Customer.io sandbox on http://{host}:{port} (site_id={site_id!r}, api_key={api_key!r}); "
        f"inspect http://{host}:{port}/_sandbox/stats",
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off", ws="none")
