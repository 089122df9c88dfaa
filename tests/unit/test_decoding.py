"""Every body encoding PostHog SDKs send, decoded all or nothing (unit, and end to end through /e/)."""

from __future__ import annotations

import base64
import gzip
import json
import os
import time
import uuid as uuidlib
from urllib.parse import quote

import lzstring
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posthog_customerio.sources.decoding import MAX_GZIP_MEMBERS, DecodeError, decode_body
from posthog_customerio.sources.lz64 import LZStringError, LZStringTooLarge, decompress_from_base64

LIMIT = 1_000_000
FORM = {"content-type": "application/x-www-form-urlencoded"}


def batch(*names: str) -> bytes:
    return json.dumps([{"event": n, "distinct_id": "dec-1", "uuid": str(uuidlib.uuid4())} for n in names]).encode()


def rejected(headers: dict[str, str], query: dict[str, str], body: bytes, limit: int = LIMIT) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        decode_body(headers, query, body, limit)
    return caught.value


def test_native_gzip_is_recognised_by_its_magic_whatever_the_content_type() -> None:
    body = batch("a")
    assert decode_body({"content-type": "text/plain"}, {}, gzip.compress(body), LIMIT) == body
    assert (
        decode_body({"content-type": "application/json"}, {"compression": "gzip-js"}, gzip.compress(body), LIMIT)
        == body
    )
    assert decode_body({"content-encoding": "gzip"}, {}, gzip.compress(body), LIMIT) == body


def test_every_gzip_member_is_decoded() -> None:
    first, second = b'[{"event": "a", "distinct_id": "x"},', b'{"event": "b", "distinct_id": "x"}]'
    assert decode_body({}, {}, gzip.compress(first) + gzip.compress(second), LIMIT) == first + second


@pytest.mark.parametrize("tail", [b"x", b"\x00\x00", b"\x1f\x8bgarbage", gzip.compress(b"ok", mtime=0)[:-4]])
def test_trailing_bytes_after_gzip_are_a_400(tail: bytes) -> None:
    error = rejected({"content-type": "text/plain"}, {}, gzip.compress(b"[]") + tail)
    assert error.status == 400 and error.reason == "bad_gzip"


def test_truncated_or_fake_gzip_is_a_400() -> None:
    assert rejected({}, {}, gzip.compress(batch("a"))[:-6]).status == 400
    error = rejected({}, {"compression": "gzip-js"}, b'{"event": "a"}')
    assert error.status == 400 and "not gzip" in error.message
    assert rejected({"content-encoding": "br"}, {}, b"{}").status == 415


def test_decompressed_size_is_bounded_across_members() -> None:
    half = gzip.compress(b" " * 600_000)
    assert rejected({}, {}, half + half).status == 413
    assert rejected({}, {}, gzip.compress(b"a" * 50_000_000)).status == 413


EMPTY_MEMBER = gzip.compress(b"", mtime=0)
#: issue 16.6: 4.9 MB of 245,000 empty gzip members took 17-21 s of CPU to decode
MANY_EMPTY_MEMBERS = EMPTY_MEMBER * 245_000


def test_a_body_of_245000_empty_gzip_members_is_refused_at_once() -> None:
    assert len(MANY_EMPTY_MEMBERS) == 4_900_000
    started = time.thread_time()
    error = rejected({"content-type": "text/plain"}, {}, MANY_EMPTY_MEMBERS, limit=5_000_000)
    assert time.thread_time() - started < 0.5
    assert error.status == 400 and error.reason == "bad_gzip" and "MAX_GZIP_MEMBERS" in error.message


def test_gzip_members_up_to_the_bound_are_decoded_and_one_more_is_a_400() -> None:
    body = batch(*(f"e{i}" for i in range(MAX_GZIP_MEMBERS)))
    step = -(-len(body) // MAX_GZIP_MEMBERS)
    pieces = [body[i : i + step] for i in range(0, len(body), step)]
    packed = b"".join(gzip.compress(piece) for piece in pieces)
    assert len(pieces) <= MAX_GZIP_MEMBERS
    assert decode_body({}, {}, packed, LIMIT) == body
    padded = packed + EMPTY_MEMBER * (MAX_GZIP_MEMBERS - len(pieces))
    assert decode_body({}, {}, padded, LIMIT) == body
    assert rejected({}, {}, padded + EMPTY_MEMBER).status == 400


def test_gzip_decoding_is_linear_in_the_body() -> None:
    """Each member used to copy the rest of the body (quadratic): 999 members before a big one cost 15 times it."""
    big = gzip.compress(os.urandom(4_800_000), compresslevel=1)

    def cpu_seconds(body: bytes) -> float:
        started = time.thread_time()
        assert len(decode_body({}, {}, body, 5_000_000)) == 4_800_000
        return time.thread_time() - started

    alone = min(cpu_seconds(big) for _ in range(3))
    behind_members = min(cpu_seconds(EMPTY_MEMBER * (MAX_GZIP_MEMBERS - 1) + big) for _ in range(3))
    assert behind_members < 3 * alone + 0.1, (behind_members, alone)


def test_base64_form_bodies() -> None:
    body = batch("a", "b")
    form = b"data=" + quote(base64.b64encode(body).decode(), safe="").encode()
    assert decode_body(FORM, {}, form, LIMIT) == body
    assert decode_body({}, {"compression": "base64"}, form + b"&ver=1", LIMIT) == body
    unquoted = b"data=" + base64.b64encode(body)  # a literal "+" parses as a space: still base64
    assert decode_body(FORM, {}, unquoted, LIMIT) == body
    assert rejected(FORM, {}, b"data=not*base64!").reason == "bad_base64"
    assert decode_body(FORM, {}, b"ver=1&" + form, LIMIT) == body
    assert rejected({}, {"compression": "base64"}, b"ver=1").reason == "bad_base64"  # a raw body: not base64
    assert rejected(FORM, {"compression": "base64"}, b"ver=1&data=").reason == "bad_form"


def test_lz64_bodies() -> None:
    body = batch("a", "ü", "😀")
    packed = lzstring.LZString.compressToBase64(body.decode())
    assert decode_body(FORM, {"compression": "lz64"}, b"data=" + quote(packed, safe="").encode(), LIMIT) == body
    assert decode_body(FORM, {"compression": "lz64"}, b"data=" + packed.encode(), LIMIT) == body
    for bad in (packed[: len(packed) // 2], "!!!!" + packed, "AAAA"):
        error = rejected(FORM, {"compression": "lz64"}, b"data=" + quote(bad, safe="").encode())
        assert error.status == 400 and error.reason in ("bad_lz64", "bad_form"), error.message


def test_an_lz64_bomb_stops_at_the_limit() -> None:
    bomb = lzstring.LZString.compressToBase64("a" * 2_000_000)
    assert len(bomb) < 4_000
    error = rejected(FORM, {"compression": "lz64"}, b"data=" + bomb.encode())
    assert error.status == 413


#: what the ``lzstring`` package's compressor round-trips: UTF-16 code units (no surrogates; a
#: character beyond U+FFFF is no single unit in the JavaScript strings LZString works on)
BMP_TEXT = st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",)), min_size=1, max_size=400)


@settings(max_examples=300, deadline=None)
@given(BMP_TEXT)
def test_our_lz64_decoder_reads_what_lzstring_compresses(text: str) -> None:
    packed = lzstring.LZString.compressToBase64(text)
    assert decompress_from_base64(packed, len(text)) == text
    if len(text) > 1:
        with pytest.raises(LZStringTooLarge):
            decompress_from_base64(packed, len(text) - 1)


@settings(max_examples=300, deadline=None)
@given(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", min_size=1, max_size=40))
def test_our_lz64_decoder_agrees_with_lzstring_on_arbitrary_data(data: str) -> None:
    """Whatever lzstring's decompressor makes of base64 data, ours makes the same or refuses it as it does."""
    try:
        theirs = lzstring.LZString.decompressFromBase64(data)
    except Exception:
        theirs = None
    try:
        ours: str | None = decompress_from_base64(data, 1_000_000)
    except LZStringTooLarge:  # pragma: no cover - 40 characters decode to far less
        raise
    except LZStringError:
        ours = None
    assert (ours or None) == (theirs or None)


def test_an_lz64_bomb_is_stopped_as_it_grows() -> None:
    bomb = lzstring.LZString.compressToBase64("a" * 2_000_000)
    started = time.monotonic()
    with pytest.raises(LZStringTooLarge):
        decompress_from_base64(bomb, 10_000)
    assert time.monotonic() - started < 1  # it stopped near 10,000 characters, not after 2,000,000
    assert decompress_from_base64(bomb, 2_000_000) == "a" * 2_000_000


def test_lz64_errors_name_the_problem() -> None:
    packed = lzstring.LZString.compressToBase64("hello, hello, hello")
    with pytest.raises(LZStringError, match="truncated"):
        decompress_from_base64(packed[:3], 100)
    with pytest.raises(LZStringError, match="outside base64 at 1"):
        decompress_from_base64(packed[0] + "*" + packed[2:], 100)
    assert decompress_from_base64(lzstring.LZString.compressToBase64(""), 100) == ""
