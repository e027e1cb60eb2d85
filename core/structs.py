"""google.protobuf.Struct ⇄ plain JSON values.

Struct carries every number as a double; integral ones come back as int so
that an extension attribute sent as 5 is returned as 5, not 5.0.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2


def _ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
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
