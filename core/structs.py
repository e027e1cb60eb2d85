"""google.protobuf.Struct ⇄ plain JSON values, for the core and the gateway alike.

Struct carries every number as a double; integral ones come back as int so
that an extension attribute sent as 5 is returned as 5, not 5.0.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2

MAX_SAFE_INTEGER = 2**53  # doubles hold every integer below this exactly


def _ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < MAX_SAFE_INTEGER:
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value


def to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    result: dict[str, Any] = _ints(json_format.MessageToDict(struct))
    return result


def to_value(value: struct_pb2.Value) -> Any:
    return _ints(json_format.MessageToDict(value))


def to_struct(data: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(data)
    return struct


def to_value_message(value: Any) -> struct_pb2.Value:
    holder = struct_pb2.Struct()
    holder.update({"v": value})
    return holder.fields["v"]
