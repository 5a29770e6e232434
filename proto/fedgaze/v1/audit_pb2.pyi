from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LedgerRecord(_message.Message):
    __slots__ = ("seq", "line")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    line: str
    def __init__(self, seq: _Optional[int] = ..., line: _Optional[str] = ...) -> None: ...

class GetBudgetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeviceBudget(_message.Message):
    __slots__ = ("device_id", "epsilon", "delta", "accountant", "rounds")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTANT_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    epsilon: float
    delta: float
    accountant: str
    rounds: int
    def __init__(self, device_id: _Optional[str] = ..., epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., accountant: _Optional[str] = ..., rounds: _Optional[int] = ...) -> None: ...

class GetBudgetsResponse(_message.Message):
    __slots__ = ("devices", "central_epsilon", "central_delta")
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    CENTRAL_EPSILON_FIELD_NUMBER: _ClassVar[int]
    CENTRAL_DELTA_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[DeviceBudget]
    central_epsilon: float
    central_delta: float
    def __init__(self, devices: _Optional[_Iterable[_Union[DeviceBudget, _Mapping]]] = ..., central_epsilon: _Optional[float] = ..., central_delta: _Optional[float] = ...) -> None: ...

class GetRoundRequest(_message.Message):
    __slots__ = ("round",)
    ROUND_FIELD_NUMBER: _ClassVar[int]
    round: int
    def __init__(self, round: _Optional[int] = ...) -> None: ...

class GetRoundResponse(_message.Message):
    __slots__ = ("round", "server_record", "device_records")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SERVER_RECORD_FIELD_NUMBER: _ClassVar[int]
    DEVICE_RECORDS_FIELD_NUMBER: _ClassVar[int]
    round: int
    server_record: LedgerRecord
    device_records: _containers.RepeatedCompositeFieldContainer[LedgerRecord]
    def __init__(self, round: _Optional[int] = ..., server_record: _Optional[_Union[LedgerRecord, _Mapping]] = ..., device_records: _Optional[_Iterable[_Union[LedgerRecord, _Mapping]]] = ...) -> None: ...

class StreamLedgerRequest(_message.Message):
    __slots__ = ("device_id", "from_seq")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    from_seq: int
    def __init__(self, device_id: _Optional[str] = ..., from_seq: _Optional[int] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("ok", "problems", "tolerance", "records")
    OK_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    problems: _containers.RepeatedScalarFieldContainer[str]
    tolerance: float
    records: int
    def __init__(self, ok: _Optional[bool] = ..., problems: _Optional[_Iterable[str]] = ..., tolerance: _Optional[float] = ..., records: _Optional[int] = ...) -> None: ...
