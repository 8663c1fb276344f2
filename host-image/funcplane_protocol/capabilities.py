"""Capability names exchanged in WorkerInitRequest / WorkerInitResponse.

The strings are the ones Azure's host and workers use, so an Azure worker understands ours.
Values are strings too; a capability is "on" when present with a non-empty value (usually "true").
"""

from __future__ import annotations

from typing import Final

# Worker -> host: how the worker wants HTTP data shaped.
RAW_HTTP_BODY_BYTES: Final = "RawHttpBodyBytes"
TYPED_DATA_COLLECTION: Final = "TypedDataCollection"
RPC_HTTP_BODY_ONLY: Final = "RpcHttpBodyOnly"
RPC_HTTP_TRIGGER_METADATA_REMOVED: Final = "RpcHttpTriggerMetadataRemoved"
IGNORE_EMPTY_VALUED_RPC_HTTP_HEADERS: Final = "IgnoreEmptyValuedRpcHttpHeaders"
USE_NULLABLE_VALUE_DICTIONARY_FOR_HTTP: Final = "UseNullableValueDictionaryForHttp"
INCLUDE_EMPTY_ENTRIES_IN_MESSAGE_PAYLOAD: Final = "IncludeEmptyEntriesInMessagePayload"

# Worker -> host: which lifecycle messages the worker handles.
WORKER_STATUS: Final = "WorkerStatus"
HANDLES_WORKER_TERMINATE_MESSAGE: Final = "HandlesWorkerTerminateMessage"
HANDLES_INVOCATION_CANCEL_MESSAGE: Final = "HandlesInvocationCancelMessage"
HANDLES_WORKER_WARMUP_MESSAGE: Final = "HandlesWorkerWarmupMessage"
ACCEPTS_LIST_OF_FUNCTION_LOAD_REQUESTS: Final = "AcceptsListOfFunctionLoadRequests"
SUPPORTS_LOAD_RESPONSE_COLLECTION: Final = "SupportsLoadResponseCollection"
ENABLE_USER_CODE_EXCEPTION: Final = "EnableUserCodeException"

# Data-transfer features (advertised by some workers; funcplane does not use shared memory).
SHARED_MEMORY_DATA_TRANSFER: Final = "SharedMemoryDataTransfer"
FUNCTION_DATA_CACHE: Final = "FunctionDataCache"
WORKER_APPLICATION_INSIGHTS_LOGGING_ENABLED: Final = "WorkerApplicationInsightsLoggingEnabled"

# Host -> worker.
V2_COMPATABLE: Final = "V2Compatable"  # upstream spelling, kept for wire compatibility
MULTI_STREAM: Final = "MultiStream"

# What funcplane's host announces in WorkerInitRequest.
HOST_CAPABILITIES: Final[dict[str, str]] = {
    RAW_HTTP_BODY_BYTES: "true",
    TYPED_DATA_COLLECTION: "true",
    RPC_HTTP_BODY_ONLY: "true",
    RPC_HTTP_TRIGGER_METADATA_REMOVED: "true",
    WORKER_STATUS: "true",
    HANDLES_INVOCATION_CANCEL_MESSAGE: "true",
    HANDLES_WORKER_TERMINATE_MESSAGE: "true",
    USE_NULLABLE_VALUE_DICTIONARY_FOR_HTTP: "true",
    V2_COMPATABLE: "true",
}


def is_enabled(capabilities: dict[str, str] | object, name: str) -> bool:
    """True when a capability map (a dict or a protobuf map) turns `name` on."""
    value = capabilities.get(name, "")  # type: ignore[attr-defined]
    return bool(value) and str(value).lower() != "false"
