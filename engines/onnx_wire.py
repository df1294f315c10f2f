"""The protobuf wire format, as far as reading an ONNX file's structure needs it, without the ``onnx`` package.

Both ONNX readers use it: :mod:`engines.onnx_external` (which external data files a model names, checked
before onnxruntime opens them) and :mod:`engines.onnx_signature` (a derived config's inputs and outputs).
Neither loads weights: fields are walked as views of a memory-mapped file.
"""

from __future__ import annotations

from collections.abc import Iterator


class MalformedModel(Exception):
    """The file is not a well-formed ONNX protobuf (onnxruntime will say more)."""


def varint(data: memoryview, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise MalformedModel("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(data: memoryview) -> Iterator[tuple[int, int | memoryview | None]]:
    """(field number, value) for every field of a message: an int for a varint, a view of the payload for a
    length-delimited field, None for a fixed-width one (ONNX keeps nothing there that these readers need)."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(data, pos)
            yield number, value
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > end:
                raise MalformedModel("a field runs past the end of the file")
            yield number, None
        elif wire == 2:
            length, pos = varint(data, pos)
            if pos + length > end:
                raise MalformedModel("a field runs past the end of the file")
            yield number, data[pos : pos + length]
            pos += length
        else:
            raise MalformedModel(f"wire type {wire} is not used by ONNX")
