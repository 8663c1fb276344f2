"""The generated protocol modules match the .proto, and the .proto keeps Azure's wire numbers."""

from __future__ import annotations

import pytest

from funcplane_protocol import FunctionRpc_pb2 as rpc
from funcplane_protocol import capabilities, generate


def test_generated_modules_match_proto() -> None:
    stale = generate.drifted(generate.render())
    assert not stale, (
        f"generated modules drifted from the .proto: {stale}; "
        "run `python -m funcplane_protocol.generate`"
    )


def test_service_full_name_is_azure_compatible() -> None:
    service = rpc.DESCRIPTOR.services_by_name["FunctionRpc"]
    assert service.full_name == "AzureFunctionsRpcMessages.FunctionRpc"
    method = service.methods_by_name["EventStream"]
    assert method.client_streaming and method.server_streaming


# Field numbers of the StreamingMessage.content oneof in Azure's contract.
STREAMING_CONTENT_NUMBERS = {
    "rpc_log": 2,
    "invocation_request": 4,
    "invocation_response": 5,
    "file_change_event_request": 6,
    "worker_action_response": 7,
    "function_load_request": 8,
    "function_load_response": 9,
    "worker_status_request": 12,
    "worker_status_response": 13,
    "worker_terminate": 14,
    "worker_heartbeat": 15,
    "worker_init_response": 16,
    "worker_init_request": 17,
    "start_stream": 20,
    "invocation_cancel": 21,
    "function_environment_reload_request": 25,
    "function_environment_reload_response": 26,
    "close_shared_memory_resources_request": 27,
    "close_shared_memory_resources_response": 28,
    "functions_metadata_request": 29,
    "function_metadata_response": 30,
    "function_load_request_collection": 31,
    "function_load_response_collection": 32,
    "worker_warmup_request": 33,
    "worker_warmup_response": 34,
}


def test_streaming_message_oneof_numbers() -> None:
    descriptor = rpc.StreamingMessage.DESCRIPTOR
    content = descriptor.oneofs_by_name["content"]
    actual = {field.name: field.number for field in content.fields}
    assert actual == STREAMING_CONTENT_NUMBERS
    assert descriptor.fields_by_name["request_id"].number == 1


@pytest.mark.parametrize(
    ("message", "numbers"),
    [
        (rpc.StartStream, {"worker_id": 2}),
        (rpc.InvocationRequest, {"invocation_id": 1, "function_id": 2, "input_data": 3,
                                 "trigger_metadata": 4, "trace_context": 5, "retry_context": 6}),
        (rpc.InvocationResponse, {"invocation_id": 1, "output_data": 2, "result": 3,
                                  "return_value": 4}),
        (rpc.InvocationCancel, {"grace_period": 1, "invocation_id": 2}),
        (rpc.StatusResult, {"result": 1, "exception": 2, "logs": 3, "status": 4}),
        (rpc.RpcHttp, {"method": 1, "url": 2, "headers": 3, "body": 4, "params": 10,
                       "status_code": 12, "query": 15, "enable_content_negotiation": 16,
                       "rawBody": 17, "identities": 18, "cookies": 19, "nullable_headers": 20,
                       "nullable_params": 21, "nullable_query": 22}),
        (rpc.TypedData, {"string": 1, "json": 2, "bytes": 3, "stream": 4, "http": 5, "int": 6,
                         "double": 7, "collection_bytes": 8, "collection_string": 9,
                         "collection_double": 10, "collection_sint64": 11,
                         "model_binding_data": 12, "collection_model_binding_data": 13}),
        (rpc.RpcFunctionMetadata, {"directory": 1, "script_file": 2, "entry_point": 3, "name": 4,
                                   "bindings": 6, "is_proxy": 7, "status": 8, "language": 9,
                                   "raw_bindings": 10, "function_id": 13,
                                   "managed_dependency_enabled": 14, "retry_options": 15,
                                   "properties": 16}),
        (rpc.RpcLog, {"invocation_id": 1, "category": 2, "level": 3, "message": 4, "event_id": 5,
                      "exception": 6, "properties": 7, "log_category": 8, "propertiesMap": 9}),
        (rpc.ParameterBinding, {"name": 1, "data": 2, "rpc_shared_memory": 3}),
        (rpc.BindingInfo, {"type": 2, "direction": 3, "data_type": 4, "properties": 5}),
        (rpc.WorkerInitRequest, {"host_version": 1, "capabilities": 2, "log_categories": 3,
                                 "worker_directory": 4, "function_app_directory": 5}),
    ],
)
def test_message_field_numbers(message: type, numbers: dict[str, int]) -> None:
    actual = {field.name: field.number for field in message.DESCRIPTOR.fields}
    assert actual == numbers


def test_enums_keep_azure_values() -> None:
    assert rpc.StatusResult.Success == 1 and rpc.StatusResult.Cancelled == 2
    assert rpc.RpcLog.Information == 2 and rpc.RpcLog.Critical == 5
    assert rpc.RpcLog.Level.Value("None") == 6
    assert rpc.BindingInfo.inout == 2
    assert rpc.FileChangeEventRequest.Renamed == 8


def test_round_trip_through_bytes() -> None:
    message = rpc.StreamingMessage(request_id="r1")
    http = message.invocation_request.input_data.add(name="req").data.http
    http.method = "GET"
    http.nullable_query["q"].value = "1"
    decoded = rpc.StreamingMessage.FromString(message.SerializeToString())
    assert decoded.WhichOneof("content") == "invocation_request"
    assert decoded.invocation_request.input_data[0].data.http.nullable_query["q"].value == "1"


def test_capability_flags() -> None:
    assert capabilities.RPC_HTTP_BODY_ONLY == "RpcHttpBodyOnly"
    assert capabilities.is_enabled({"RawHttpBodyBytes": "true"}, capabilities.RAW_HTTP_BODY_BYTES)
    assert not capabilities.is_enabled({"WorkerStatus": "false"}, capabilities.WORKER_STATUS)
    assert not capabilities.is_enabled({}, capabilities.WORKER_STATUS)
