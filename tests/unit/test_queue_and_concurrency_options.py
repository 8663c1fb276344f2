"""host.json queue and concurrency options, queue message codecs and snapshot documents (pure parts)."""

from __future__ import annotations

import json

import pytest

from funcplane_host.app.host_json import HostJsonError, parse_host_config
from funcplane_host.concurrency import snapshot
from funcplane_protocol import FunctionRpc_pb2 as rpc
from funcplane_host.queues.storage import (
    QueueBindingError,
    connection_string_of,
    decode_message,
    encode_message,
    messages_from_output,
    queue_name_of,
)


def test_defaults_are_azures() -> None:
    scaling = parse_host_config({"version": "2.0"}).scaling
    queues, concurrency = scaling.queues, scaling.concurrency
    assert (queues.batch_size, queues.new_batch_threshold, queues.max_dequeue_count) == (16, None, 5)
    assert (queues.visibility_timeout, queues.max_polling_interval, queues.message_encoding) == (0.0, 60.0, "base64")
    assert concurrency.dynamic_concurrency_enabled is False and concurrency.maximum_function_concurrency == 500
    assert concurrency.snapshot_persistence_enabled is True and concurrency.cpu_threshold == 0.8
    assert scaling.message_lease == 60.0


def test_time_spans_overrides_and_per_function_settings_with_keys_in_any_case() -> None:
    scaling = parse_host_config({
        "extensions": {"queues": {"MaxPollingInterval": "00:00:02", "visibilityTimeout": "00:00:30",
                                  "messageEncoding": "None"}},
        "concurrency": {"dynamicConcurrencyEnabled": True, "maximumFunctionConcurrency": -1},
        "funcplane": {"queues": {"messageLease": "00:00:10"},
                      "functions": {"Orders": {"batchSize": 4, "maximumConcurrency": 8}}},
    }).scaling
    assert scaling.queues.max_polling_interval == 2.0 and scaling.queues.visibility_timeout == 30.0
    assert scaling.queues.message_encoding == "none" and scaling.message_lease == 10.0
    assert scaling.concurrency.maximum_function_concurrency == -1
    assert scaling.for_function("orders").batch_size == 4 and scaling.for_function("other").batch_size is None


@pytest.mark.parametrize(("raw", "named"), [
    ({"extensions": {"queues": {"batchSize": 33}}}, "extensions.queues.batchSize"),
    ({"extensions": {"queues": {"maxDequeueCount": 0}}}, "extensions.queues.maxDequeueCount"),
    ({"extensions": {"queues": {"messageEncoding": "utf16"}}}, "extensions.queues.messageEncoding"),
    ({"extensions": {"queues": {"batchCount": 4}}}, "extensions.queues.batchCount"),
    ({"concurrency": {"maximumFunctionConcurrency": 0}}, "concurrency.maximumFunctionConcurrency"),
    ({"concurrency": {"cpuThreshold": 1.5}}, "concurrency.cpuThreshold"),
    ({"funcplane": {"functions": {"f": {"maximumConcurrency": 0}}}}, "funcplane.functions.f.maximumConcurrency"),
    ({"funcplane": {"queues": {"messageLease": "00:00:00"}}}, "funcplane.queues.messageLease"),
])
def test_bad_values_name_the_field(raw: dict, named: str) -> None:
    with pytest.raises(HostJsonError, match=named.replace(".", r"\.")):
        parse_host_config(raw)


def test_messages_are_base64_by_default_and_bytes_stay_bytes() -> None:
    assert encode_message("héllo", "base64") == "aMOpbGxv"
    assert decode_message("aMOpbGxv", "base64") == "héllo"
    assert decode_message(encode_message(b"\xff\x00", "base64"), "base64") == b"\xff\x00"
    assert decode_message("not base64!", "base64") == "not base64!"
    assert encode_message("plain", "none") == "plain"


def test_output_values_become_messages() -> None:
    assert messages_from_output(rpc.TypedData(string="one")) == ["one"]
    assert messages_from_output(rpc.TypedData(json=json.dumps(["a", {"b": 1}]))) == ["a", '{"b": 1}']
    assert messages_from_output(rpc.TypedData(json='{"k": 1}')) == ['{"k": 1}']
    assert messages_from_output(rpc.TypedData()) == []


def test_binding_settings_resolve_or_say_what_to_set() -> None:
    settings = {"QUEUE": "Orders", "MyStorage": "UseDevelopmentStorage=true"}
    assert queue_name_of({"name": "m", "queueName": "%QUEUE%"}, settings, "f") == "orders"
    assert connection_string_of({"connection": "MyStorage"}, settings, "f") == "UseDevelopmentStorage=true"
    assert connection_string_of({}, {"AzureWebJobsStorage": "x"}, "f") == "x"
    with pytest.raises(QueueBindingError, match="AzureWebJobsStorage"):
        connection_string_of({}, {}, "f")
    with pytest.raises(QueueBindingError, match="%MISSING%"):
        queue_name_of({"name": "m", "queueName": "%MISSING%"}, settings, "f")
    with pytest.raises(QueueBindingError, match="not a valid queue name"):
        queue_name_of({"name": "m", "queueName": "a--b"}, settings, "f")


def test_snapshot_document_round_trips_in_azures_shape() -> None:
    payload = snapshot.encode({"orders": 9, "api": 3}, cores=2)
    document = json.loads(payload)
    assert document["numberOfCores"] == 2 and document["functionSnapshots"]["orders"] == {"concurrency": 9}
    assert snapshot.decode(payload) == ({"orders": 9, "api": 3}, 2)
    assert snapshot.decode(b"{}") == ({}, 0)
    assert snapshot.blob_name("Demo-Prod") == "concurrency/demo-prod/concurrencyStatus.json"
