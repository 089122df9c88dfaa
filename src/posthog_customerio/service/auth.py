"""Credentials: ``WEBHOOK_TOKEN`` / ``WEBHOOK_SIGNING_SECRET`` on the receivers, ``OPS_TOKEN`` on the operations API."""

from __future__ import annotations

import base64
import hmac
import json
from typing import Any

from fastapi import Request
from standardwebhooks.webhooks import Webhook
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from .bodies import HttpError
from .config import ServiceConfig
from .paths import is_ops_path
from .replay import ReplayGuard

__all__ = ["OPS_REALM", "Authenticator", "OpsGuard"]

OPS_REALM = "posthog-customerio operations"


class Authenticator:
    """``WEBHOOK_TOKEN`` (Bearer) and ``WEBHOOK_SIGNING_SECRET`` (Standard Webhooks) checks."""

    def __init__(self, config: ServiceConfig) -> None:
        token = config.webhook_token.get_secret_value()
        secret = config.webhook_signing_secret.get_secret_value()
        self.token = token.encode()
        self.verifier = Webhook(secret) if secret else None
        #: ``webhook-id``s of signed webhooks already stored (one process, for the timestamp tolerance)
        self.replays = ReplayGuard() if secret else None
        self.ops_token = config.ops_token.get_secret_value().encode()
        #: the operations endpoints need a token once any credential is configured
        self.ops_guarded = bool(self.ops_token) or self.enabled

    @property
    def enabled(self) -> bool:
        """Whether any check is configured."""
        return bool(self.token) or self.verifier is not None

    def _bearer_ok(self, request: Request) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token)

    def check_webhook(self, request: Request, body: bytes) -> None:
        """Every configured mechanism must pass."""
        self.check_webhook_header(request)
        self.check_signature(request, body)

    def check_webhook_header(self, request: Request) -> None:
        """The Bearer part of :meth:`check_webhook`: needs no body, so it runs before the body is read."""
        if self.token and not self._bearer_ok(request):
            raise HttpError(401, "missing or wrong Authorization: Bearer token", {"WWW-Authenticate": "Bearer"})

    def check_signature(self, request: Request, body: bytes) -> None:
        """The Standard Webhooks part of :meth:`check_webhook` (a no-op without a signing secret)."""
        if self.verifier is not None:
            try:
                self.verifier.verify(body, dict(request.headers), json_parse=False)
            except Exception:  # any malformed header or bad signature
                raise HttpError(401, "missing, stale or wrong webhook signature", reason="signature") from None

    def capture_header_ok(self, request: Request) -> bool:
        """Before the body: True when the headers already authorise a capture request.

        False means only the payload's ``api_key`` / ``token`` can; with no
        ``WEBHOOK_TOKEN`` at all (only a signing secret) the request is refused here.
        """
        if not self.enabled:
            return True
        if not self.token:
            raise HttpError(401, "capture endpoints need WEBHOOK_TOKEN (SDKs cannot sign requests)")
        return self._bearer_ok(request)

    def check_token_present(self, body: bytes) -> None:
        """Refuse, without parsing, a decoded body in which the token does not occur at all."""
        escaped = json.dumps(self.token.decode())[1:-1].encode()
        if self.token not in body and escaped not in body:
            raise HttpError(401, "missing or wrong token (Authorization: Bearer, or api_key = WEBHOOK_TOKEN)")

    def check_ops(self, headers: Headers, *, page: bool) -> None:
        """Operations endpoints: ``OPS_TOKEN`` (else ``WEBHOOK_TOKEN``) as Bearer, or as the Basic password.

        ``page``: the HTML status page, whose 401 makes a browser ask for the password.
        """
        if not self.ops_guarded:
            return
        scheme, _, value = headers.get("authorization", "").partition(" ")
        given = b""
        if scheme.lower() == "bearer":
            given = value.strip().encode()
        elif scheme.lower() == "basic":
            try:
                given = base64.b64decode(value.strip(), validate=True).partition(b":")[2]
            except ValueError:  # binascii.Error
                given = b""
        if self.ops_token and hmac.compare_digest(given, self.ops_token):
            return
        challenge = f'Basic realm="{OPS_REALM}", charset="UTF-8"' if page else f'Bearer realm="{OPS_REALM}"'
        if not self.ops_token:
            message = "the operations endpoints need OPS_TOKEN (or WEBHOOK_TOKEN); only a signing secret is set"
        else:
            message = "missing or wrong operations token (Bearer <OPS_TOKEN>, or Basic with it as the password)"
        raise HttpError(401, message, {"WWW-Authenticate": challenge})

    def check_capture(self, request: Request, payload: Any) -> None:
        """Capture endpoints: Bearer token, or the token as the payload's ``api_key``."""
        if not self.enabled:
            return
        if not self.token:
            raise HttpError(401, "capture endpoints need WEBHOOK_TOKEN (SDKs cannot sign requests)")
        if self._bearer_ok(request):
            return
        if isinstance(payload, dict):
            for key in ("api_key", "token"):
                value = payload.get(key)
                if isinstance(value, str) and hmac.compare_digest(value.encode(), self.token):
                    return
        raise HttpError(401, "missing or wrong token (Authorization: Bearer, or api_key = WEBHOOK_TOKEN)")


class OpsGuard:
    """ASGI middleware: every operations endpoint (also ones added later) checks the token first."""

    def __init__(self, app: ASGIApp, auth: Authenticator, proxying: bool = False) -> None:
        self.app = app
        self.auth = auth
        self.proxying = proxying

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_ops_path(scope["path"], self.proxying):
            try:
                self.auth.check_ops(Headers(scope=scope), page=scope["path"].rstrip("/") == "/status")
            except HttpError as exc:
                await exc.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)
