"""Per-binding conversions, chosen once when a function loads.

HTTP uses the worker's own RpcHttp conversion. Other binding types use the converters that the
azure.functions library registers (timer, queue, durable triggers, ...), so functions receive the
same objects they would get on Azure; anything else falls back to plain TypedData conversion.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from azure.functions import meta

from funcplane_pyworker import typed_data
from funcplane_pyworker.http_messages import request_from_rpc, rpc_from_response
from funcplane_pyworker.protocol import pb

RETURN_BINDING = "$return"
HTTP_TRIGGER = "httptrigger"
HTTP_OUTPUT = "http"

Decoder = Callable[[pb.TypedData, Mapping[str, pb.TypedData]], Any]
Encoder = Callable[[Any], pb.TypedData]


@dataclass(frozen=True)
class BindingSpec:
    name: str
    type: str
    direction: int
    data_type: int = 0

    @property
    def is_input(self) -> bool:
        return self.direction in (pb.BindingInfo.Direction.Value("in"), pb.BindingInfo.inout)

    @property
    def is_output(self) -> bool:
        return self.direction in (pb.BindingInfo.out, pb.BindingInfo.inout)

    @classmethod
    def from_binding_info(cls, name: str, info: pb.BindingInfo) -> BindingSpec:
        return cls(name=name, type=info.type, direction=info.direction, data_type=info.data_type)

    def to_binding_info(self) -> pb.BindingInfo:
        return pb.BindingInfo(type=self.type, direction=self.direction, data_type=self.data_type)


def _library_converter(binding_type: str) -> type | None:
    return meta.get_binding_registry().get(binding_type)


def _accepts(check: Callable[[type], bool], annotation: Any) -> bool:
    if annotation in (None, inspect.Parameter.empty):
        return True
    try:
        return bool(check(annotation))
    except TypeError:
        # Annotations such as typing generics are not classes; let the library try.
        return True


def datum_from(data: pb.TypedData | None) -> meta.Datum:
    """The library's Datum for a TypedData value."""
    kind = typed_data.kind_of(data)
    if kind is None:
        return meta.Datum(None, None)
    assert data is not None
    if kind == "stream":
        return meta.Datum(data.stream, "bytes")
    return meta.Datum(getattr(data, kind), kind)


def typed_from_datum(datum: meta.Datum | None) -> pb.TypedData:
    """The TypedData for a Datum the library's encoder produced."""
    if datum is None or datum.type is None or datum.value is None:
        return pb.TypedData()
    if datum.type == "json" and not isinstance(datum.value, str):
        return pb.TypedData(json=json.dumps(datum.value))
    if datum.type == "http":
        return pb.TypedData(http=rpc_from_response(datum.value))
    if datum.type in typed_data.COLLECTIONS:
        message, field = typed_data.COLLECTIONS[datum.type]
        return pb.TypedData(**{datum.type: message(**{field: list(datum.value)})})
    return pb.TypedData(**{datum.type: datum.value})


def make_decoder(spec: BindingSpec, annotation: Any) -> Decoder:
    """How to turn this binding's incoming TypedData into the function's argument."""
    if spec.type.lower() == HTTP_TRIGGER:
        return lambda data, _metadata: (
            request_from_rpc(data.http) if data.HasField("http") else typed_data.decode(data, annotation)
        )
    converter = _library_converter(spec.type)
    if (
        converter is not None
        and issubclass(converter, meta.InConverter)
        and _accepts(converter.check_input_type_annotation, annotation)
    ):

        def decode_with_library(data: pb.TypedData, metadata: Mapping[str, pb.TypedData]) -> Any:
            try:
                return converter.decode(
                    datum_from(data),
                    trigger_metadata={key: datum_from(value) for key, value in metadata.items()},
                )
            except NotImplementedError:
                return typed_data.decode(data, annotation)

        return decode_with_library
    return lambda data, _metadata: typed_data.decode(data, annotation)


def make_encoder(spec: BindingSpec, annotation: Any) -> Encoder:
    """How to turn what the function produced for this binding into TypedData."""
    if spec.type.lower() in (HTTP_OUTPUT, HTTP_TRIGGER):
        return lambda value: pb.TypedData(http=rpc_from_response(value, binding_name=spec.name))
    converter = _library_converter(spec.type)
    if (
        converter is not None
        and issubclass(converter, meta.OutConverter)
        and _accepts(converter.check_output_type_annotation, annotation)
    ):

        def encode_with_library(value: Any) -> pb.TypedData:
            if value is None:
                return pb.TypedData()
            try:
                return typed_from_datum(converter.encode(value, expected_type=annotation))
            except NotImplementedError:
                return typed_data.encode(value)

        return encode_with_library
    return typed_data.encode


def has_implicit_output(trigger: BindingSpec | None) -> bool:
    """Triggers whose function result is returned even without a $return binding (durable ones)."""
    if trigger is None:
        return False
    converter = _library_converter(trigger.type)
    return bool(
        converter is not None
        and issubclass(converter, meta.InConverter)
        and converter.has_implicit_output()
    )

