"""Azure Queue Storage access for queue triggers and queue output bindings.

Connections are named as on Azure: a binding's `connection` (default `AzureWebJobsStorage`) names
an app setting holding a connection string; `AzureWebJobs<name>` is tried too. Messages are
base64-encoded by default (`extensions.queues.messageEncoding`), as Azure Functions writes and
expects them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue.aio import QueueClient

from funcplane_protocol import FunctionRpc_pb2 as rpc

DEFAULT_CONNECTION = "AzureWebJobsStorage"
_QUEUE_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")


class QueueBindingError(ValueError):
    """A queue binding cannot be used as written; the message names the field and the fix."""


def resolve_app_settings(text: str, settings: Mapping[str, str], where: str) -> str:
    """%Name% -> the app setting Name (binding expressions)."""

    def value_of(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in settings:
            raise QueueBindingError(f"{where} refers to app setting %{name}%, which is not set; add the setting")
        return settings[name]

    return re.sub(r"%([^%]+)%", value_of, text)


def queue_name_of(binding: Mapping[str, Any], settings: Mapping[str, str], function: str) -> str:
    raw = binding.get("queueName")
    if not isinstance(raw, str) or not raw:
        raise QueueBindingError(f"function {function!r}: binding {binding.get('name')!r} needs a queueName")
    name = resolve_app_settings(raw, settings, f"function {function!r} queueName").lower()
    if not _QUEUE_NAME.match(name):
        raise QueueBindingError(
            f"function {function!r}: queueName {name!r} is not a valid queue name (3-63 lower-case letters, "
            "digits and single hyphens, starting and ending with a letter or digit)")
    return name


def connection_string_of(binding: Mapping[str, Any], settings: Mapping[str, str], function: str) -> str:
    name = binding.get("connection") or DEFAULT_CONNECTION
    if not isinstance(name, str):
        raise QueueBindingError(f"function {function!r}: connection must be the name of an app setting")
    for candidate in (name, f"AzureWebJobs{name}"):
        value = settings.get(candidate)
        if value:
            return value
    raise QueueBindingError(
        f"function {function!r}: connection {name!r} names no app setting; set {name} to a storage "
        "connection string (DefaultEndpointsProtocol=...;AccountName=...;AccountKey=...;QueueEndpoint=...)")


class QueueClients:
    """One client per (connection string, queue), shared by listeners and output bindings."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, str], QueueClient] = {}
        self._created: set[tuple[str, str]] = set()

    def get(self, connection: str, queue: str) -> QueueClient:
        key = (connection, queue)
        client = self._clients.get(key)
        if client is None:
            # Its own client (not one from a service client) so that close() ends its session.
            client = self._clients[key] = QueueClient.from_connection_string(connection, queue)
        return client

    async def ensure_exists(self, connection: str, queue: str) -> QueueClient:
        """Output and poison queues are created on first use, as Azure's bindings do."""
        client = self.get(connection, queue)
        if (connection, queue) not in self._created:
            try:
                await client.create_queue()
            except ResourceExistsError:
                pass
            self._created.add((connection, queue))
        return client

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


def encode_message(text: str | bytes, encoding: str) -> str:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    if encoding == "base64":
        return base64.b64encode(raw).decode("ascii")
    return raw.decode("utf-8")


def decode_message(content: str, encoding: str) -> str | bytes:
    """The message body a function receives: text when it is UTF-8, else bytes."""
    if encoding != "base64":
        return content
    try:
        raw = base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        return content  # not base64: hand over the text as stored
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def messages_from_output(data: Any) -> list[str | bytes]:
    """The messages one output value stands for: one per list item for a JSON array."""
    kind = data.WhichOneof("data")
    if kind is None:
        return []
    if kind == "string":
        return [data.string]
    if kind in ("bytes", "stream"):
        return [getattr(data, kind)]
    if kind in ("int", "double"):
        return [str(getattr(data, kind))]
    if kind == "collection_string":
        return list(data.collection_string.string)
    if kind == "collection_bytes":
        return list(data.collection_bytes.bytes)
    if kind == "json":
        value = json.loads(data.json)
        if isinstance(value, list):
            return [item if isinstance(item, str) else json.dumps(item) for item in value]
        return [data.json]
    raise QueueBindingError(f"a queue output cannot carry a value of kind {kind!r}")


def queue_outputs(response: Any, bindings: list[dict[str, Any]]) -> list[tuple[dict[str, Any], Any]]:
    """(binding, TypedData) for each queue output binding the invocation set."""
    outputs = []
    by_name = {binding.name: binding.data for binding in response.output_data}
    for binding in bindings:
        if str(binding.get("type", "")).lower() != "queue" or binding.get("direction") != "out":
            continue
        if binding["name"] == "$return":
            if response.HasField("return_value"):
                outputs.append((binding, response.return_value))
        elif binding["name"] in by_name:
            outputs.append((binding, by_name[binding["name"]]))
    return outputs


def trigger_metadata(message: Any) -> dict[str, Any]:
    """What Azure passes beside a queue message (names as QueueMessage reads them)."""

    def iso(moment: Any) -> Any:
        return rpc.TypedData(string=moment.isoformat()) if moment is not None else rpc.TypedData()

    return {
        "Id": rpc.TypedData(string=message.id),
        # JSON, not TypedData.int: workers of the 1.x line (Azure's 1.1.9) know no int kind, and
        # the azure.functions library parses a JSON number into the int it expects either way.
        "DequeueCount": rpc.TypedData(json=str(message.dequeue_count or 0)),
        "InsertionTime": iso(message.inserted_on),
        "ExpirationTime": iso(message.expires_on),
        "NextVisibleTime": iso(message.next_visible_on),
        "PopReceipt": rpc.TypedData(string=message.pop_receipt or ""),
    }
