"""Compatibility: the HTTP service moved to :mod:`posthog_customerio.service`."""

from __future__ import annotations

from .service import HttpError, create_app

__all__ = ["HttpError", "create_app"]
