"""A fake PostHog on loopback that records every request it gets (for the reverse-proxy tests)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["FakePostHog", "Recorded", "running_fake_posthog"]

FLAG_KEY = "proxy-flag"


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakePostHog:
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    capture_status: int = 200

    def recorded(self, prefix: str = "") -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    def app(self) -> Starlette:
        async def anything(request: Request) -> Response:
            body = await request.body()
            with self.lock:
                self.requests.append(
                    Recorded(
                        request.method,
                        request.url.path,
                        request.url.query,
                        {k.lower(): v for k, v in request.headers.items()},
                        body,
                    )
                )
            path = request.url.path
            headers = {"access-control-allow-origin": "https://posthog-own.example", "x-fake-posthog": "1"}
            if path.startswith(("/e", "/i/v0/e", "/batch", "/capture")):
                return Response(json.dumps({"status": "Ok"}), self.capture_status, headers, "application/json")
            if path.startswith(("/flags", "/decide")):
                answer = {
                    "flags": {
                        FLAG_KEY: {
                            "key": FLAG_KEY,
                            "enabled": True,
                            "variant": None,
                            "reason": {"code": "condition_match"},
                            "metadata": {"id": 1, "version": 1},
                        }
                    },
                    "featureFlags": {FLAG_KEY: True},
                    "featureFlagPayloads": {},
                    "errorsWhileComputingFlags": False,
                    "requestId": "fake",
                }
                return Response(json.dumps(answer), 200, headers, "application/json")
            if path.startswith("/array/") and path.endswith("/config"):
                config = {
                    "token": path.split("/")[2],
                    "supportedCompression": ["gzip", "gzip-js"],
                    "hasFeatureFlags": True,
                    "sessionRecording": False,
                    "heatmaps": False,
                    "surveys": False,
                    "siteApps": [],
                }
                return Response(json.dumps(config), 200, headers, "application/json")
            if path.startswith("/array/") and path.endswith("/config.js"):
                config = {
                    "token": path.split("/")[2],
                    "supportedCompression": ["gzip", "gzip-js"],
                    "hasFeatureFlags": True,
                    "sessionRecording": False,
                    "heatmaps": False,
                    "surveys": False,
                    "siteApps": [],
                }
                script = (
                    "window._POSTHOG_REMOTE_CONFIG = window._POSTHOG_REMOTE_CONFIG || {};"
                    f"window._POSTHOG_REMOTE_CONFIG[{json.dumps(config['token'])}]"
                    f" = {{config: {json.dumps(config)}, siteApps: []}};"
                )
                return Response(script, 200, headers, "application/javascript")
            return Response(json.dumps({"echo": path}), 200, headers, "application/json")

        return Starlette(
            routes=[Route("/{path:path}", anything, methods=["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])]
        )


@contextmanager
def running_fake_posthog() -> Iterator[tuple[FakePostHog, str]]:
    """A fake PostHog on ``127.0.0.1:<free port>``; yields it and its base URL."""
    fake = FakePostHog()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(fake.app(), host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="fake-posthog", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the fake PostHog did not start"
            time.sleep(0.01)
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
