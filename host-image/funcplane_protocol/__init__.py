"""The host <-> language worker protocol: the .proto files, their generated modules, helpers.

Import generated messages as ``from funcplane_protocol import FunctionRpc_pb2``.
Regenerate with ``python -m funcplane_protocol.generate``.
"""
