"""Hypothesis strategies for any protobuf message, read from its descriptor.

Every field gets a strategy from its type (integers at their edges, any float, text, bytes, open
enums with unknown numbers too, nested messages, maps, repeated fields), so a field added to the
contract is generated without touching the tests; ``overrides`` steer the fields that matter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _edgy_integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [v for v in (0, 1, -1, 2, 255, 2**31 - 1, 2**32, 2**62, 2**63 - 1, -(2**63), 2**64 - 1) if low <= v <= high]
    return st.sampled_from(edges) | st.integers(low, high) | st.integers(max(low, -20), min(high, 20))


def scalar_strategy(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _INT_RANGES:
        return _edgy_integers(*_INT_RANGES[kind])
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32)
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return st.floats()
    if kind == FieldDescriptor.TYPE_STRING:
        return st.text(max_size=24)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values]) | st.integers(-3, 40)
    raise TypeError(f"no strategy for {field.full_name}")


Overrides = dict[str, Callable[[], st.SearchStrategy[Any]]]


def message_strategy(
    descriptor: Descriptor, overrides: Overrides, depth: int = 0, required: frozenset[str] = frozenset()
) -> st.SearchStrategy[Message]:
    """Messages of ``descriptor`` with any subset of their fields set (always those named in
    ``required``); ``overrides`` (by full field name) replace the strategy of a field's value (of the
    whole list, for a repeated field)."""
    cls = message_factory.GetMessageClass(descriptor)
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.full_name in overrides:
            optional[field.name] = overrides[field.full_name]()
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            entry = field.message_type
            if entry.GetOptions().map_entry:
                key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
                values = (
                    message_strategy(value.message_type, overrides, depth + 1)
                    if value.type == FieldDescriptor.TYPE_MESSAGE
                    else scalar_strategy(value)
                )
                optional[field.name] = st.dictionaries(scalar_strategy(key), values, max_size=4)
                continue
            if depth >= 3:
                continue
            value_strategy: st.SearchStrategy[Any] = message_strategy(entry, overrides, depth + 1)
        else:
            value_strategy = scalar_strategy(field)
        repeated = field.is_repeated
        optional[field.name] = st.lists(value_strategy, max_size=4) if repeated else value_strategy
    always = {name: optional.pop(name) for name in required}
    return st.fixed_dictionaries(always, optional=optional).map(lambda kwargs: cls(**kwargs))


def oneof_strategy(descriptor: Descriptor, oneof: str) -> st.SearchStrategy[Message]:
    """Messages with exactly one member of ``oneof`` set (now and then none)."""
    cls = message_factory.GetMessageClass(descriptor)
    members = [
        scalar_strategy(field).map(lambda value, name=field.name: cls(**{name: value}))
        for field in descriptor.oneofs_by_name[oneof].fields
    ]
    return st.one_of(*members, st.just(cls()))
