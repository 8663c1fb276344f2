"""Function metadata <-> protocol messages (FunctionLoadRequest, RpcFunctionMetadata)."""

from __future__ import annotations

import json
from typing import Any

from funcplane_host.app.functions import FunctionDefinition, definition_from_raw_bindings
from funcplane_protocol import FunctionRpc_pb2 as rpc

_DIRECTIONS = {"in": rpc.BindingInfo.Direction.Value("in"),
               "out": rpc.BindingInfo.Direction.Value("out"),
               "inout": rpc.BindingInfo.Direction.Value("inout")}
_DATA_TYPES = {"string": rpc.BindingInfo.string, "binary": rpc.BindingInfo.binary,
               "stream": rpc.BindingInfo.stream}


def binding_info(binding: dict[str, Any]) -> Any:
    return rpc.BindingInfo(
        type=str(binding["type"]),
        direction=_DIRECTIONS[binding["direction"]],
        data_type=_DATA_TYPES.get(str(binding.get("dataType", "")).lower(), rpc.BindingInfo.undefined),
    )


def load_request_for(definition: FunctionDefinition, function_id: str) -> Any:
    metadata = rpc.RpcFunctionMetadata(
        name=definition.name,
        directory=definition.directory,
        script_file=definition.script_file,
        entry_point=definition.entry_point,
        language=definition.language or "",
        function_id=function_id,
        raw_bindings=[json.dumps(binding) for binding in definition.bindings],
        properties=definition.properties,
    )
    for binding in definition.bindings:
        metadata.bindings[binding["name"]].CopyFrom(binding_info(binding))
    if definition.retry_options is not None:
        metadata.retry_options.CopyFrom(definition.retry_options)
    return rpc.FunctionLoadRequest(function_id=function_id, metadata=metadata)


def definition_from_metadata(metadata: Any, language: str) -> FunctionDefinition:
    """A worker-indexed function; raises FunctionDefinitionError on unusable bindings."""
    raw = list(metadata.raw_bindings)
    if not raw and metadata.bindings:
        raw = [
            json.dumps({"name": name, "type": info.type,
                        "direction": rpc.BindingInfo.Direction.Name(info.direction)})
            for name, info in metadata.bindings.items()
        ]
    return definition_from_raw_bindings(
        metadata.name,
        raw,
        directory=metadata.directory,
        script_file=metadata.script_file,
        entry_point=metadata.entry_point,
        language=metadata.language or language,
        indexed_by="worker",
        function_id=metadata.function_id,
        retry_options=metadata.retry_options if metadata.HasField("retry_options") else None,
        properties=dict(metadata.properties),
    )
