"""Track API v2 encoder: neutral operations -> one ``/api/v2/batch`` body.

A person or object operation's stored neutral text already is its v2 batch item
(:mod:`..operations`), so encoding is joining texts: the operation was encoded once,
at mapping time. Anonymous events have no v2 equivalent (the Track outputs send them
through v1).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..operations import Kind

__all__ = ["BATCH_ENVELOPE", "BATCH_PATH", "batch_body", "batch_item", "has_v2_equivalent"]

BATCH_PATH = "/api/v2/batch"
#: bytes of the body around the items (``{"batch":[`` ... ``]}``)
BATCH_ENVELOPE = len('{"batch":[]}')


def has_v2_equivalent(kind: Kind) -> bool:
    """Whether operations of this kind can go in a v2 batch (anonymous events and segment changes cannot)."""
    return kind not in ("anonymous", "segment")


def batch_item(text: str, kind: Kind) -> str:
    """The v2 batch item for a stored neutral operation (its text, unchanged)."""
    if not has_v2_equivalent(kind):
        raise ValueError(f"no v2 equivalent for {kind} operations")
    return text


def batch_body(items: Sequence[str]) -> str:
    """The ``/api/v2/batch`` body for encoded items (in order)."""
    return '{"batch":[' + ",".join(items) + "]}"
