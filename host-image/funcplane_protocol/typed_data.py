"""TypedData <-> Python values, and the HTTP shapes a worker asked for through capabilities."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from collections.abc import Mapping

from funcplane_protocol import FunctionRpc_pb2 as rpc
from funcplane_protocol import capabilities as caps


@dataclass(frozen=True)
class HttpShape:
    """How to fill RpcHttp for one worker, decided once from its capabilities."""

    body_only: bool = False
    raw_body_bytes: bool = False
    nullable_maps: bool = False
    trigger_metadata_removed: bool = False
    ignore_empty_headers: bool = False

    @classmethod
    def from_capabilities(cls, capabilities: Mapping[str, str]) -> HttpShape:
        return cls(
            body_only=caps.is_enabled(capabilities, caps.RPC_HTTP_BODY_ONLY),
            raw_body_bytes=caps.is_enabled(capabilities, caps.RAW_HTTP_BODY_BYTES),
            nullable_maps=caps.is_enabled(capabilities, caps.USE_NULLABLE_VALUE_DICTIONARY_FOR_HTTP),
            trigger_metadata_removed=caps.is_enabled(capabilities, caps.RPC_HTTP_TRIGGER_METADATA_REMOVED),
            ignore_empty_headers=caps.is_enabled(capabilities, caps.IGNORE_EMPTY_VALUED_RPC_HTTP_HEADERS),
        )


def to_typed_data(value: Any) -> Any:
    """A Python value as TypedData (str, bytes, int, float, JSON-able objects)."""
    if isinstance(value, bytes):
        return rpc.TypedData(bytes=value)
    if isinstance(value, str):
        return rpc.TypedData(string=value)
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        return rpc.TypedData(json=json.dumps(value))
    if isinstance(value, int):
        return rpc.TypedData(int=value)
    if isinstance(value, float):
        return rpc.TypedData(double=value)
    return rpc.TypedData(json=json.dumps(value, default=str))


def body_bytes(typed: Any) -> tuple[bytes, str | None]:
    """The bytes of a TypedData body and the content type it implies (None: no opinion)."""
    kind = typed.WhichOneof("data")
    if kind is None:
        return b"", None
    if kind == "string":
        return typed.string.encode(), "text/plain; charset=utf-8"
    if kind == "json":
        return typed.json.encode(), "application/json"
    if kind in ("bytes", "stream"):
        return getattr(typed, kind), "application/octet-stream"
    if kind in ("int", "double"):
        return str(getattr(typed, kind)).encode(), "text/plain; charset=utf-8"
    if kind == "collection_string":
        return json.dumps(list(typed.collection_string.string)).encode(), "application/json"
    raise ValueError(f"cannot use TypedData of kind {kind!r} as an HTTP body")
