from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RpcClaimsIdentity(_message.Message):
    __slots__ = ("authentication_type", "name_claim_type", "role_claim_type", "claims")
    AUTHENTICATION_TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_CLAIM_TYPE_FIELD_NUMBER: _ClassVar[int]
    ROLE_CLAIM_TYPE_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    authentication_type: str
    name_claim_type: str
    role_claim_type: str
    claims: _containers.RepeatedCompositeFieldContainer[RpcClaim]
    def __init__(self, authentication_type: _Optional[str] = ..., name_claim_type: _Optional[str] = ..., role_claim_type: _Optional[str] = ..., claims: _Optional[_Iterable[_Union[RpcClaim, _Mapping]]] = ...) -> None: ...

class RpcClaim(_message.Message):
    __slots__ = ("value", "type")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    value: str
    type: str
    def __init__(self, value: _Optional[str] = ..., type: _Optional[str] = ...) -> None: ...
