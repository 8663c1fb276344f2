"""TypedData <-> Python values, for bindings that have no dedicated conversion.

Decoding keeps the sender's shape (a JSON payload becomes the parsed object, bytes stay bytes)
unless the function's annotation asks for ``str`` or ``bytes``. Encoding picks the most specific
TypedData field for the value.
"""

from __future__ import annotations

import json
from typing import Any

from funcplane_pyworker.http_messages import request_from_rpc
from funcplane_pyworker.protocol import pb

# TypedData collection field -> (its message type, the repeated field inside it)
COLLECTIONS: dict[str, tuple[type, str]] = {
    "collection_string": (pb.CollectionString, "string"),
    "collection_bytes": (pb.CollectionBytes, "bytes"),
    "collection_double": (pb.CollectionDouble, "double"),
    "collection_sint64": (pb.CollectionSInt64, "sint64"),
}


def kind_of(data: pb.TypedData | None) -> str | None:
    """The name of the TypedData field that is set, or None for an empty value."""
    if data is None:
        return None
    return data.WhichOneof("data")


def raw_value(data: pb.TypedData) -> Any:
    """The value as carried on the wire, without parsing JSON (collections become lists)."""
    kind = kind_of(data)
    if kind is None:
        return None
    value = getattr(data, kind)
    if kind in COLLECTIONS:
        return list(getattr(value, COLLECTIONS[kind][1]))
    return value


def decode(data: pb.TypedData | None, annotation: Any = None) -> Any:
    """A Python value for `data`, shaped by the parameter's annotation where it says str or bytes."""
    kind = kind_of(data)
    if kind is None:
        return None
    assert data is not None
    if kind == "http":
        return request_from_rpc(data.http)
    value = raw_value(data)
    if annotation is str:
        if isinstance(value, (bytes, bytearray)):
            return bytes(value).decode("utf-8")
        return value if isinstance(value, str) else json.dumps(value)
    if annotation is bytes:
        if isinstance(value, str):
            return value.encode("utf-8")
        return bytes(value) if isinstance(value, (bytes, bytearray)) else json.dumps(value).encode()
    if kind == "json":
        return json.loads(value)
    return value


def encode(value: Any) -> pb.TypedData:
    """The TypedData for a Python value. Raises TypeError for values that have no wire form."""
    if value is None:
        return pb.TypedData()
    if isinstance(value, pb.TypedData):
        return value
    if isinstance(value, str):
        return pb.TypedData(string=value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return pb.TypedData(bytes=bytes(value))
    if isinstance(value, bool):
        return pb.TypedData(json=json.dumps(value))
    if isinstance(value, int):
        return pb.TypedData(int=value)
    if isinstance(value, float):
        return pb.TypedData(double=value)
    if isinstance(value, (dict, list, tuple)):
        try:
            return pb.TypedData(json=json.dumps(value))
        except (TypeError, ValueError) as error:
            raise TypeError(f"value is not JSON-serializable: {error}") from error
    raise TypeError(
        f"cannot send a value of type {type(value).__name__}: return str, bytes, int, float, "
        "a JSON-serializable dict/list, or an azure.functions type"
    )

