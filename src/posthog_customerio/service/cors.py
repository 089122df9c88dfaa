"""CORS for browsers on PostHog's paths only: the operations API never answers cross-origin requests."""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from .paths import is_posthog_path

__all__ = ["BrowserCors"]


class BrowserCors:
    """Starlette's CORS middleware on PostHog's browser-facing paths only (not on the operations API)."""

    def __init__(self, app: ASGIApp, origins: list[str], proxying: bool) -> None:
        self.app = app
        self.proxying = proxying
        any_origin = origins == ["*"]
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"],
            allow_credentials=not any_origin,
            max_age=86400,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path and is_posthog_path(path) and (self.proxying or not path.startswith("/api/")):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
