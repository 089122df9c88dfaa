"""Undo every body encoding PostHog SDKs use, all or nothing, within a size limit.

A pure function of the request's headers, query and raw body (no I/O, no event loop),
so a caller may run it in a worker thread:

- native gzip, recognised by its magic bytes ``1f 8b`` whatever the content type and
  query (posthog-js sends it as ``text/plain`` with no ``compression`` parameter),
  ``Content-Encoding: gzip`` and ``?compression=gzip-js`` / ``gzip``. A gzip stream is
  the concatenation of *all* its members: every member is decoded (at most
  :data:`MAX_GZIP_MEMBERS`, in time linear in the body); anything after the last member
  that is not another member is an error.
- the base64 form ``data=<base64 JSON>`` (``application/x-www-form-urlencoded`` or
  ``?compression=base64``), as posthog-js's ``sendBeacon`` sends it.
- ``?compression=lz64``: ``data=<LZString base64>``, sent by older posthog-js versions
  (decoded by :mod:`.lz64`, which stops at the size limit).

Invalid input raises :class:`DecodeError` (400, or 415 for an unknown
``Content-Encoding``); a decoded body over ``limit`` bytes raises it with 413. Its message
names the problem, never a byte of the body or a header's value.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping
from urllib.parse import parse_qs

from .lz64 import LZStringError, LZStringTooLarge, decompress_from_base64

__all__ = ["GZIP_MAGIC", "MAX_GZIP_MEMBERS", "DecodeError", "decode_body", "gunzip_all"]

GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 64 * 1024
#: input handed to zlib at a time: what a gzip member leaves unread (and zlib copies) is at most this
_IN_CHUNK = 16 * 1024
#: most gzip members in one body (400 above): SDKs send one; a few are allowed for concatenated streams
MAX_GZIP_MEMBERS = 1_000


class DecodeError(ValueError):
    """A body that cannot be decoded: ``status`` is the HTTP answer, ``reason`` a metrics label."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def _too_large(limit: int) -> DecodeError:
    return DecodeError(413, "decompressed_too_large", f"decompressed body is over MAX_BODY_BYTES ({limit})")


def gunzip_all(data: bytes, limit: int) -> bytes:
    """Every member of a gzip stream, concatenated; at most ``limit`` bytes of output.

    Linear in ``len(data)``: the input is fed to zlib in slices of at most
    :data:`_IN_CHUNK` bytes of a memoryview (zlib copies what a member leaves unread:
    feeding it the whole rest of the body for every member made many small members
    quadratic), and at most :data:`MAX_GZIP_MEMBERS` members are decoded.

    Raises :class:`DecodeError`: 400 for a corrupt or truncated member, trailing bytes
    that are not a gzip member, or more than :data:`MAX_GZIP_MEMBERS` members; 413 when
    the output would exceed ``limit``.
    """
    view = memoryview(data)
    size = len(view)
    out = bytearray()
    position = 0  # where the next member starts
    members = 0
    while True:
        if view[position : position + 2] != GZIP_MAGIC:
            what = f"{size - position} bytes of trailing garbage after gzip member {members}"
            if not members:
                what = "body is not gzip"
            raise DecodeError(400, "bad_gzip", f"{what} (no 1f 8b magic)")
        if members >= MAX_GZIP_MEMBERS:
            raise DecodeError(400, "bad_gzip", f"more than {MAX_GZIP_MEMBERS} gzip members (MAX_GZIP_MEMBERS)")
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        fed = position  # the input up to here was handed to this member's inflater
        pending: bytes | memoryview = b""
        try:
            while not inflater.eof:
                if not pending:
                    if fed >= size:
                        break  # the member needs more input than there is
                    pending = view[fed : fed + _IN_CHUNK]
                    fed += len(pending)
                # bounded steps: never more than limit + 1 bytes of output in memory
                out += inflater.decompress(pending, max(1, min(_CHUNK, limit + 1 - len(out))))
                if len(out) > limit:
                    raise _too_large(limit)
                pending = inflater.unconsumed_tail  # at most one slice
        except zlib.error as exc:
            raise DecodeError(400, "bad_gzip", f"body is not valid gzip (member {members + 1}): {exc}") from None
        if not inflater.eof:
            raise DecodeError(400, "bad_gzip", f"gzip member {members + 1} is truncated")
        members += 1
        position = fed - len(inflater.unused_data)  # unused_data: the rest of the last slice
        if position >= size:
            return bytes(out)


def _form_field(body: bytes, name: str = "data") -> str:
    """The ``data`` field of a urlencoded form body (``+`` kept as PostHog does: it is base64)."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise DecodeError(400, "bad_form", "form body is not ASCII (expected data=<base64>)") from None
    try:
        fields = parse_qs(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise DecodeError(400, "bad_form", "form body is not urlencoded (expected data=<base64>)") from None
    values = fields.get(name)
    if not values or not values[0].strip():
        raise DecodeError(400, "bad_form", f"form body has no {name}= field")
    # parse_qs turns a literal "+" into a space; base64 has no spaces, so undo it
    return values[0].strip().replace(" ", "+")


def _base64(text: str) -> bytes:
    compact = "".join(text.split())
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError(400, "bad_base64", "data= is not valid base64") from None


def _lz64(text: str, limit: int) -> bytes:
    """LZString ``decompressFromBase64`` with the output bounded by ``limit`` (:mod:`.lz64`)."""
    compact = text.strip()
    if not compact:
        raise DecodeError(400, "bad_lz64", "data= is empty")
    try:
        decoded = decompress_from_base64(compact, limit)
    except LZStringTooLarge:
        raise _too_large(limit) from None
    except LZStringError as exc:
        raise DecodeError(400, "bad_lz64", str(exc)) from None
    if not decoded:
        raise DecodeError(400, "bad_lz64", "lz64 data is corrupt or truncated")
    try:
        out: bytes = decoded.encode("utf-8")
    except UnicodeEncodeError:
        raise DecodeError(400, "bad_lz64", "lz64 data decodes to invalid text (lone surrogates)") from None
    if len(out) > limit:
        raise _too_large(limit)
    return out


def _get(mapping: Mapping[str, str] | None, name: str) -> str:
    if not mapping:
        return ""
    value = mapping.get(name)
    if value is None:  # plain dicts with other casing
        value = next((v for k, v in mapping.items() if k.lower() == name), "")
    return str(value).strip().lower()


def decode_body(headers: Mapping[str, str] | None, query: Mapping[str, str] | None, body: bytes, limit: int) -> bytes:
    """The JSON bytes inside a capture request body (see the module docstring).

    ``headers``: the request headers (``Content-Encoding``, ``Content-Type``);
    ``query``: the query parameters (``compression``); ``limit``: the largest decoded size.
    """
    encoding = _get(headers, "content-encoding")
    compression = _get(query, "compression")
    content_type = _get(headers, "content-type")
    if encoding not in ("", "identity", "gzip", "x-gzip"):
        raise DecodeError(415, "unsupported_encoding", "unsupported Content-Encoding (use gzip, or none)")
    if encoding in ("gzip", "x-gzip") or body.startswith(GZIP_MAGIC):
        body = gunzip_all(body, limit)
    elif compression in ("gzip", "gzip-js"):
        raise DecodeError(400, "bad_gzip", f"compression={compression} but the body is not gzip (no 1f 8b magic)")
    has_data = body.lstrip().startswith(b"data=") or b"&data=" in body
    is_form = content_type.startswith("application/x-www-form-urlencoded") and has_data
    if compression == "lz64":
        body = _lz64(_form_field(body) if has_data else body.decode("ascii", "replace"), limit)
    elif compression == "base64" or is_form:
        body = _base64(_form_field(body) if has_data else body.decode("ascii", "replace"))
        if len(body) > limit:
            raise _too_large(limit)
    return body
