"""LZString's ``decompressFromBase64``, with a bound on the output.

Older posthog-js versions send ``?compression=lz64``: the body is LZString's base64 form.
LZString is an LZW variant: a stream of codes, each ``num_bits`` wide (3 at first, one more
each time the dictionary doubles), read low bit first from 6-bit base64 characters, high
bit of each character first. Codes 0 and 1 bring a new literal (an 8- or 16-bit UTF-16 code
unit), 2 ends the stream; any other code names a dictionary entry, or (the code just past the
dictionary) the previous entry followed by its own first unit.

LZString output can grow quadratically with its input (a "bomb": a few kilobytes decode to
megabytes), so this decoder counts what it has produced and stops at ``max_chars`` before
building more: the output, and the dictionary (each entry is a previous output piece plus one
unit), stay within a small multiple of the bound.

As the ``lzstring`` package (what PostHog's own capture used) does, each 16-bit unit is one
character: UTF-16 surrogates are not joined into one character.
"""

from __future__ import annotations

__all__ = ["LZStringError", "LZStringTooLarge", "decompress_from_base64"]

_BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_VALUES = {char: value for value, char in enumerate(_BASE64)}
#: bits per base64 character, read high bit first
_CHAR_BITS = 6


class LZStringError(ValueError):
    """The data is no LZString base64 stream (truncated, a character outside base64, a bad code)."""


class LZStringTooLarge(LZStringError):
    """The stream decodes to more than the allowed number of characters."""


class _BitReader:
    """The bits of a base64 text, low bit of each value first as LZString writes them.

    Reads the next character as soon as the current one is used up (LZString's decoder does),
    so a stream must hold the padding character its compressor always writes.
    """

    __slots__ = ("_mask", "_text", "_value", "index")

    def __init__(self, text: str) -> None:
        self._text = text
        self.index = 0
        self._value = 0
        self._mask = 0
        self._load()

    def _load(self) -> None:
        if self.index >= len(self._text):
            raise LZStringError("lz64 data is truncated")
        value = _VALUES.get(self._text[self.index])
        if value is None:
            raise LZStringError(f"lz64 data has a character outside base64 at {self.index}")
        self._value = value
        self._mask = 1 << (_CHAR_BITS - 1)
        self.index += 1

    def read(self, count: int) -> int:
        """The next ``count`` bits as a number (the first bit read is its lowest)."""
        bits = 0
        for power in range(count):
            if self._value & self._mask:
                bits |= 1 << power
            self._mask >>= 1
            if not self._mask:
                self._load()
        return bits


def _literal(reader: _BitReader, code: int) -> str:
    """The literal after code 0 (an 8-bit unit) or 1 (a 16-bit unit)."""
    return chr(reader.read(8 if code == 0 else 16))


def decompress_from_base64(text: str, max_chars: int) -> str:
    """The text LZString's ``compressToBase64`` made ``text`` of, at most ``max_chars`` characters long.

    Raises :class:`LZStringTooLarge` as soon as the output would exceed ``max_chars``, and
    :class:`LZStringError` for data that is no LZString stream. An empty stream decodes to ``""``.
    """
    reader = _BitReader(text)
    first = reader.read(2)
    if first == 2:
        return ""
    if first == 3:
        raise LZStringError("lz64 data is corrupt (its first code is no literal)")
    previous = _literal(reader, first)
    #: entries by code; codes 0, 1 and 2 are the literal and end markers, never looked up
    dictionary = ["", "", "", previous]
    output = [previous]
    size = len(previous)
    if size > max_chars:
        raise LZStringTooLarge(f"lz64 data decodes to more than {max_chars} characters")
    width = 3
    room = 4  # codes left before the dictionary outgrows ``width`` bits

    def grown(room: int, width: int) -> tuple[int, int]:
        return (1 << width, width + 1) if room == 0 else (room, width)

    while True:
        code = reader.read(width)
        if code == 2:
            return "".join(output)
        if code < 2:
            dictionary.append(_literal(reader, code))
            code = len(dictionary) - 1
            room, width = grown(room - 1, width)
        if code < len(dictionary):
            entry = dictionary[code]
        elif code == len(dictionary):
            entry = previous + previous[0]
        else:
            raise LZStringError("lz64 data is corrupt or truncated (a code past the dictionary)")
        size += len(entry)
        if size > max_chars:
            raise LZStringTooLarge(f"lz64 data decodes to more than {max_chars} characters")
        output.append(entry)
        dictionary.append(previous + entry[0])
        room, width = grown(room - 1, width)
        previous = entry
