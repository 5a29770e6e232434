from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SampleKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAMPLE_KIND_UNSPECIFIED: _ClassVar[SampleKind]
    SAMPLE_KIND_GAZE: _ClassVar[SampleKind]
    SAMPLE_KIND_MOUSE: _ClassVar[SampleKind]
    SAMPLE_KIND_SCROLL: _ClassVar[SampleKind]
    SAMPLE_KIND_CLICK: _ClassVar[SampleKind]
    SAMPLE_KIND_SELECT: _ClassVar[SampleKind]
    SAMPLE_KIND_COPY: _ClassVar[SampleKind]
    SAMPLE_KIND_VISIBILITY: _ClassVar[SampleKind]

class Side(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIDE_UNSPECIFIED: _ClassVar[Side]
    SIDE_NONE: _ClassVar[Side]
    SIDE_LEFT: _ClassVar[Side]
    SIDE_RIGHT: _ClassVar[Side]
SAMPLE_KIND_UNSPECIFIED: SampleKind
SAMPLE_KIND_GAZE: SampleKind
SAMPLE_KIND_MOUSE: SampleKind
SAMPLE_KIND_SCROLL: SampleKind
SAMPLE_KIND_CLICK: SampleKind
SAMPLE_KIND_SELECT: SampleKind
SAMPLE_KIND_COPY: SampleKind
SAMPLE_KIND_VISIBILITY: SampleKind
SIDE_UNSPECIFIED: Side
SIDE_NONE: Side
SIDE_LEFT: Side
SIDE_RIGHT: Side

class QueryMeta(_message.Message):
    __slots__ = ("query_id", "task_id", "pairwise", "prompt", "response_left", "response_right", "shown_at_ms", "prompt_id", "response_left_id", "response_right_id")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PAIRWISE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_LEFT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_RIGHT_FIELD_NUMBER: _ClassVar[int]
    SHOWN_AT_MS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_LEFT_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_RIGHT_ID_FIELD_NUMBER: _ClassVar[int]
    query_id: int
    task_id: int
    pairwise: bool
    prompt: str
    response_left: str
    response_right: str
    shown_at_ms: float
    prompt_id: str
    response_left_id: str
    response_right_id: str
    def __init__(self, query_id: _Optional[int] = ..., task_id: _Optional[int] = ..., pairwise: _Optional[bool] = ..., prompt: _Optional[str] = ..., response_left: _Optional[str] = ..., response_right: _Optional[str] = ..., shown_at_ms: _Optional[float] = ..., prompt_id: _Optional[str] = ..., response_left_id: _Optional[str] = ..., response_right_id: _Optional[str] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("query_id", "kind", "t_ms", "x", "y", "side", "char_index", "validate", "detail")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    T_MS_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    CHAR_INDEX_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    query_id: int
    kind: SampleKind
    t_ms: float
    x: float
    y: float
    side: Side
    char_index: int
    validate: int
    detail: str
    def __init__(self, query_id: _Optional[int] = ..., kind: _Optional[_Union[SampleKind, str]] = ..., t_ms: _Optional[float] = ..., x: _Optional[float] = ..., y: _Optional[float] = ..., side: _Optional[_Union[Side, str]] = ..., char_index: _Optional[int] = ..., validate: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("index", "field", "reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    field: str
    reason: str
    def __init__(self, index: _Optional[int] = ..., field: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class StreamSummary(_message.Message):
    __slots__ = ("accepted", "rejected", "rejected_total")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    rejected: _containers.RepeatedCompositeFieldContainer[Rejection]
    rejected_total: int
    def __init__(self, accepted: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ..., rejected_total: _Optional[int] = ...) -> None: ...

class Label(_message.Message):
    __slots__ = ("query_id", "preference", "likert_left", "likert_right")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    LIKERT_LEFT_FIELD_NUMBER: _ClassVar[int]
    LIKERT_RIGHT_FIELD_NUMBER: _ClassVar[int]
    query_id: int
    preference: int
    likert_left: float
    likert_right: float
    def __init__(self, query_id: _Optional[int] = ..., preference: _Optional[int] = ..., likert_left: _Optional[float] = ..., likert_right: _Optional[float] = ...) -> None: ...

class Calibration(_message.Message):
    __slots__ = ("task_id", "precision")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    precision: float
    def __init__(self, task_id: _Optional[int] = ..., precision: _Optional[float] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
