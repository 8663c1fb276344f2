"""Host-side use of the worker protocol: function metadata <-> protocol messages.

The protocol itself (the .proto files, generated modules, capabilities, typed data) lives in the
``funcplane_protocol`` package, which the host and the language workers share.
"""
