"""Predict(Stream)Request bytes → the message without its tensors' raw payloads, plus zero-copy views of them.

Parsing a protobuf copies every bytes field, and each read of ``raw_contents`` copies it again: for a
60 MB request that is several 60 MB copies on the event loop (each holds the GIL throughout) before
anything knows whether the model can take the tensor. This reads the wire format just far enough to
lift every input's ``raw_contents`` out as a memoryview of the request, and leaves the rest (small)
to the protobuf parser. Whatever it does not expect, it leaves to the parser too.
"""

from __future__ import annotations

from collections.abc import Iterator

#: Fields read by hand before this path gives up (a tensor sent as millions of unpacked elements is
#: left to the protobuf parser, which walks them in C).
MAX_FIELDS = 256
#: Requests smaller than this are parsed the ordinary way: their copies cost less than reading by hand.
MIN_BYTES = 64 * 1024

_VARINT, _I64, LEN, _I32 = 0, 1, 2, 5
#: the field number of ``inputs`` in PredictRequest and PredictStreamRequest, and of Tensor.raw_contents
INPUTS_FIELD = 4
RAW_FIELD = 4


class Unusual(Exception):
    """The data is not plain enough for this path (malformed, groups, too many fields)."""


def split_payloads(data: bytes) -> tuple[bytes, list[memoryview]] | None:
    """``(the request without raw_contents, each input's raw_contents as a view of data, in order)``,
    or None when the request should be parsed the ordinary way (which also reports malformed data)."""
    view = memoryview(data)
    kept: list[bytes | memoryview] = []
    payloads: list[memoryview] = []
    budget = [MAX_FIELDS]
    try:
        for field, wire, start, value, end in fields(data, 0, len(data), budget):
            if field == INPUTS_FIELD and wire == LEN:
                tensor, payload = _strip_raw(data, view, value, end, budget)
                kept.append(_key(INPUTS_FIELD, LEN) + _varint_bytes(len(tensor)) + tensor)
                payloads.append(payload)
            else:
                kept.append(view[start:end])
    except Unusual:
        return None
    return b"".join(kept), payloads


def _strip_raw(data: bytes, view: memoryview, pos: int, end: int, budget: list[int]) -> tuple[bytes, memoryview]:
    """One Tensor's bytes without raw_contents, and the last raw_contents (as the parser keeps the last)."""
    kept: list[memoryview] = []
    payload = view[0:0]
    for field, wire, start, value, stop in fields(data, pos, end, budget):
        if field == RAW_FIELD and wire == LEN:
            payload = view[value:stop]
        else:
            kept.append(view[start:stop])
    return b"".join(kept), payload


def fields(data: bytes, pos: int, end: int, budget: list[int]) -> Iterator[tuple[int, int, int, int, int]]:
    """Yield ``(field, wire type, start, value start, end)`` for each field in ``data[pos:end]``."""
    while pos < end:
        budget[0] -= 1
        if budget[0] < 0:
            raise Unusual
        start = pos
        key, pos = _varint(data, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise Unusual
        value = pos
        if wire == _VARINT:
            _, pos = _varint(data, pos, end)
        elif wire == LEN:
            size, value = _varint(data, pos, end)
            pos = value + size
        elif wire == _I64:
            pos += 8
        elif wire == _I32:
            pos += 4
        else:  # groups (deprecated) or invalid
            raise Unusual
        if pos > end:
            raise Unusual
        yield field, wire, start, value, pos


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise Unusual
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint_bytes(field << 3 | wire)
