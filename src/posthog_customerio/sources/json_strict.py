"""``json.loads`` for untrusted input: :func:`loads_strict`.

What the standard library accepts but an event must not carry is refused here (``NaN``,
numbers overflowing to infinity, unpaired surrogates, nesting over 100 levels), NUL becomes
U+FFFD, and with a bound the top-level array is counted while it is decoded
(:mod:`.json_bounded`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from .json_bounded import TooManyEvents, loads_bounded

__all__ = ["NUL_REPLACEMENT", "TooManyEvents", "loads_strict", "replace_nul"]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("a number is out of range (it overflows to infinity)")
    return value


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)

#: a JSON escape of a UTF-16 surrogate; only pairs of them are text
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(_SURROGATE_ESCAPE.pattern.encode())
_MAX_DEPTH = 100


def _check_depth(obj: Any) -> None:
    """Refuse structures nested deeper than ``_MAX_DEPTH`` (iteratively: no recursion)."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise ValueError(f"nested more than {_MAX_DEPTH} levels deep")
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values() if isinstance(child, (dict, list)))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if isinstance(child, (dict, list)))


#: a JSON escape of NUL: the only way a NUL gets into a string of strict JSON (raw control characters are refused)
_NUL_ESCAPE = "\\u0000"
_NUL_ESCAPE_BYTES = _NUL_ESCAPE.encode()
#: what a NUL becomes: PostgreSQL text cannot hold NUL, so both backends store this instead
NUL_REPLACEMENT = "\ufffd"


def _may_hold_nul(text: str | bytes) -> bool:
    """Whether decoded ``text`` can hold a NUL: it has the escape, or is UTF-16/32 bytes (NUL in its first bytes)."""
    if isinstance(text, str):
        return _NUL_ESCAPE in text
    return _NUL_ESCAPE_BYTES in text or b"\x00" in text[:4]


def _clean(value: str) -> str:
    return value.replace("\x00", NUL_REPLACEMENT) if "\x00" in value else value


def replace_nul(obj: Any) -> Any:
    """``obj`` (decoded JSON) with every NUL in its strings and keys replaced by U+FFFD, in place where it can.

    One iterative pass over the structure (linear, no recursion); returns the (new) top-level value.
    """
    if isinstance(obj, str):
        return _clean(obj)
    stack: list[Any] = [obj]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if any("\x00" in key for key in node):
                items = [(_clean(key), value) for key, value in node.items()]
                node.clear()
                node.update(items)
            for key, value in node.items():
                if isinstance(value, str):
                    node[key] = _clean(value)
                elif isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                if isinstance(value, str):
                    node[index] = _clean(value)
                elif isinstance(value, (dict, list)):
                    stack.append(value)
    return obj


def loads_strict(text: str | bytes, max_items: int | None = None) -> Any:
    """``json.loads`` for untrusted input.

    Rejects ``NaN``/``Infinity`` and numbers that overflow to infinity, strings
    holding an unpaired UTF-16 surrogate (they cannot be encoded as UTF-8), and
    structures nested more than 100 levels deep; raises ValueError naming it.
    Every NUL (``\\u0000``) in a string or key becomes U+FFFD (:func:`replace_nul`):
    PostgreSQL cannot store it, and both backends must store the same thing.
    With ``max_items``, a top-level array (or the ``batch`` array of a top-level
    object) is decoded one element at a time and :class:`TooManyEvents` is raised
    at element ``max_items + 1``, before the rest is ever materialised.
    """
    if max_items is None:
        obj = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    else:
        obj = loads_bounded(text, max_items, _DECODER)
    if _may_hold_nul(text):
        obj = replace_nul(obj)
    escape = _SURROGATE_ESCAPE if isinstance(text, str) else _SURROGATE_ESCAPE_BYTES
    if escape.search(text):  # type: ignore[arg-type]
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a string holds an unpaired UTF-16 surrogate (\\uD800-\\uDFFF)") from None
    brackets = text.count("[") + text.count("{") if isinstance(text, str) else text.count(b"[") + text.count(b"{")
    if brackets > _MAX_DEPTH:
        _check_depth(obj)
    return obj
