"""JSON decoding that counts the elements of the top-level array while it decodes them.

A request body of a million events should be refused at event ``max_items + 1``, not after
all of them are built. This decoder walks the top-level array (or the ``batch`` array of a
top-level object) element by element, each element decoded by the given
:class:`json.JSONDecoder` (its public ``raw_decode``), and raises :class:`TooManyEvents`
before the element over the bound is decoded. Everything else (errors, their positions,
what values become) is what ``decoder`` does.

No maintained library does this with the standard library's semantics: streaming parsers
(ijson, json-stream) decode with their own scanners (other numbers, other errors and
messages), where here every value and error is the standard library's.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["TooManyEvents", "loads_bounded"]

#: JSON's insignificant whitespace (RFC 8259 ``ws``), as the standard library's decoder skips it
_WHITESPACE = re.compile(r"[ \t\n\r]*")


class TooManyEvents(ValueError):
    """A payload holds more events than one request may carry (``MAX_EVENTS_PER_REQUEST``)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} events in one request")
        self.limit = limit


def _skip(text: str, index: int) -> int:
    match = _WHITESPACE.match(text, index)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def loads_bounded(text: str | bytes, max_items: int, decoder: json.JSONDecoder) -> Any:
    """``decoder.decode(text)`` that raises :class:`TooManyEvents` at top-level element ``max_items + 1``."""
    if isinstance(text, bytes):
        text = text.decode(json.detect_encoding(text), "surrogatepass")  # what json.loads does with bytes
    index = _skip(text, 0)
    obj: Any
    if text.startswith("[", index):
        obj, index = _decode_array(text, index, max_items, decoder)
    elif text.startswith("{", index):
        obj, index = _decode_object(text, index, max_items, decoder)
    else:
        obj, index = decoder.raw_decode(text, index)
    index = _skip(text, index)
    if index != len(text):
        raise json.JSONDecodeError("Extra data", text, index)
    return obj


def _decode_array(text: str, index: int, max_items: int, decoder: json.JSONDecoder) -> tuple[list[Any], int]:
    items: list[Any] = []
    index = _skip(text, index + 1)
    if text.startswith("]", index):
        return items, index + 1
    while True:
        if len(items) >= max_items:
            raise TooManyEvents(max_items)
        value, index = decoder.raw_decode(text, index)
        items.append(value)
        index = _skip(text, index)
        if text.startswith(",", index):
            index = _skip(text, index + 1)
        elif text.startswith("]", index):
            return items, index + 1
        else:
            raise json.JSONDecodeError("Expecting ',' delimiter", text, index)


def _decode_object(text: str, index: int, max_items: int, decoder: json.JSONDecoder) -> tuple[dict[str, Any], int]:
    """A top-level object; its ``batch`` array is decoded with :func:`_decode_array`."""
    obj: dict[str, Any] = {}
    index = _skip(text, index + 1)
    if text.startswith("}", index):
        return obj, index + 1
    while True:
        if not text.startswith('"', index):
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, index)
        key, index = decoder.raw_decode(text, index)  # a JSON string: the key
        index = _skip(text, index)
        if not text.startswith(":", index):
            raise json.JSONDecodeError("Expecting ':' delimiter", text, index)
        index = _skip(text, index + 1)
        if key == "batch" and text.startswith("[", index):
            obj[key], index = _decode_array(text, index, max_items, decoder)
        else:
            obj[key], index = decoder.raw_decode(text, index)
        index = _skip(text, index)
        if text.startswith(",", index):
            index = _skip(text, index + 1)
        elif text.startswith("}", index):
            return obj, index + 1
        else:
            raise json.JSONDecodeError("Expecting ',' delimiter", text, index)
