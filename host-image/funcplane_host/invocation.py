"""What a trigger hands to the host, and how an invocation that produced no result fails."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from funcplane_host.app.functions import FunctionDefinition
from funcplane_protocol import FunctionRpc_pb2 as rpc
from funcplane_host.workers.channel import WorkerChannel


class InvocationFailed(Exception):
    """An invocation could not produce a result; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, invocation_id: str | None = None, detail: str | None = None):
        super().__init__(message)
        self.status = status
        self.invocation_id = invocation_id
        self.detail = detail


@dataclass
class Invocation:
    """What a trigger hands to the host: how to fill an InvocationRequest's input_data and
    trigger_metadata for the chosen worker. Filled in place: a large HTTP body is copied once."""

    definition: FunctionDefinition
    build: Callable[[WorkerChannel, Any], None]

    @classmethod
    def of_trigger(cls, definition: FunctionDefinition, data: rpc.TypedData) -> Invocation:
        """An invocation whose only input is the trigger's value, the same for any worker
        (warm-up, timer and admin runs; HTTP builds per worker, after its capabilities)."""
        name = str(definition.trigger["name"])
        return cls(definition, lambda _channel, request: request.input_data.add(name=name, data=data))
