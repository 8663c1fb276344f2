"""The single import point of the host's generated protocol modules."""

from __future__ import annotations

from funcplane_protocol import FunctionRpc_pb2 as pb
from funcplane_protocol import capabilities

__all__ = ["pb", "capabilities"]
