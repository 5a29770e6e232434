"""The Capture gRPC service (``proto/fedgaze/v1/capture.proto``) over a :class:`CaptureSink`.

For native gaze trackers and other capture clients. Each message is turned into the item the
browser's JSON batches use (:mod:`fedgaze.client.capture.samples`), so both paths share one
set of rules and one rejection vocabulary; streamed samples are validated one by one and
stored in chunks, so a refused sample never costs the valid ones. Errors map to status codes:
bad metadata or labels are ``INVALID_ARGUMENT`` (the message names the field), a paused device
is ``FAILED_PRECONDITION``. Nothing captured is logged.

On loopback the service may run without TLS; on any other address it refuses to start without
a certificate and key (as the audit service does). Every call must carry the capture service's
API token (the ``token`` of the 0600 ready file) as metadata :data:`TOKEN_METADATA`
(:func:`token_metadata`, or every call of a channel wrapped by :func:`with_token`);
:class:`TokenInterceptor` refuses any other call with
``UNAUTHENTICATED`` before it reaches the store, so another local user cannot stream into it.
"""

from __future__ import annotations

import collections
import hmac
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import grpc
from pydantic import BaseModel, ValidationError

from fedgaze.client.capture.samples import (
    CaptureEvent,
    CaptureSample,
    Label,
    QueryMeta,
    Rejection,
    parse_item,
    rejection_of,
)
from fedgaze.client.capture.sink import CaptureError, CapturePaused, CaptureSink
from fedgaze.security.net import serve_local_grpc
from fedgaze.v1 import capture_pb2, capture_pb2_grpc

__all__ = [
    "MAX_REJECTIONS",
    "TOKEN_METADATA",
    "CaptureServicer",
    "TokenInterceptor",
    "label_message",
    "meta_message",
    "sample_item",
    "sample_message",
    "serve_capture",
    "token_metadata",
    "with_token",
]

TOKEN_METADATA = "x-fedgaze-token"
"""The call metadata key that carries the API token (gRPC keys are lower case)."""
MAX_REJECTIONS = 1000
"""Most rejections listed in a StreamSummary (``rejected_total`` counts them all)."""
CHUNK_SAMPLES = 512
"""Streamed samples are stored (durably) at least every this many samples..."""
CHUNK_SECONDS = 1.0
"""...or when this long has passed since the last store, whichever comes first."""

_KINDS = {
    capture_pb2.SAMPLE_KIND_GAZE: "gaze",
    capture_pb2.SAMPLE_KIND_MOUSE: "mouse",
    capture_pb2.SAMPLE_KIND_SCROLL: "scroll",
    capture_pb2.SAMPLE_KIND_CLICK: "click",
    capture_pb2.SAMPLE_KIND_SELECT: "select",
    capture_pb2.SAMPLE_KIND_COPY: "copy",
    capture_pb2.SAMPLE_KIND_VISIBILITY: "visibility",
}
_SIDES = {
    capture_pb2.SIDE_NONE: "none",
    capture_pb2.SIDE_LEFT: "left",
    capture_pb2.SIDE_RIGHT: "right",
}
_OPTIONAL = ("query_id", "t_ms", "x", "y", "char_index", "validate", "detail")
_SERVED_ID_FIELDS = ("prompt_id", "response_left_id", "response_right_id")

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def sample_item(msg: Any) -> dict[str, Any]:
    """The JSON-contract item of a ``Sample`` message (pure): only the fields it carries.

    An unspecified kind leaves out ``"type"`` (refused as ``"type"``); an unspecified side is
    left out (required for gaze and mouse, ``"none"`` for events); unknown enum numbers are
    passed on as values that fail validation, never guessed.
    """
    item: dict[str, Any] = {name: getattr(msg, name) for name in _OPTIONAL if msg.HasField(name)}
    if msg.kind != capture_pb2.SAMPLE_KIND_UNSPECIFIED:
        item["type"] = _KINDS.get(msg.kind, f"kind {msg.kind}")
    if msg.side != capture_pb2.SIDE_UNSPECIFIED:
        item["side"] = _SIDES.get(msg.side, f"side {msg.side}")
    return item


def sample_message(item: Mapping[str, Any]) -> Any:
    """The ``Sample`` message of a JSON-contract item (pure; for Python capture clients).

    The inverse of :func:`sample_item` for valid items; nothing is validated here (the service
    does that), so an unknown ``"type"`` or ``"side"`` becomes UNSPECIFIED and is refused.
    """
    kinds = {v: k for k, v in _KINDS.items()}
    sides = {v: k for k, v in _SIDES.items()}
    fields = {k: v for k, v in item.items() if k in _OPTIONAL}
    return capture_pb2.Sample(
        kind=kinds.get(str(item.get("type")), capture_pb2.SAMPLE_KIND_UNSPECIFIED),
        side=sides.get(str(item.get("side")), capture_pb2.SIDE_UNSPECIFIED),
        **fields,
    )


def meta_message(meta: QueryMeta) -> Any:
    """The ``QueryMeta`` message of a validated :class:`QueryMeta` (for Python clients)."""
    return capture_pb2.QueryMeta(**meta.model_dump(exclude_none=True))


def label_message(label: Label) -> Any:
    """The ``Label`` message of a validated :class:`Label` (for Python clients)."""
    return capture_pb2.Label(**label.model_dump(exclude_none=True))


def _abort(context: grpc.ServicerContext, err: Exception) -> NoReturn:
    if isinstance(err, CapturePaused):
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
    raise AssertionError("unreachable")  # abort raises


def _model(cls: type[M], fields: dict[str, Any], context: grpc.ServicerContext) -> M:
    try:
        return cls.model_validate(fields)
    except ValidationError as err:
        problem = rejection_of(0, err)
        _abort(context, CaptureError(f"{problem.field}: {problem.reason}"))


def _call(context: grpc.ServicerContext, action: Callable[[], T]) -> T:
    try:
        return action()
    except (CaptureError, CapturePaused) as err:
        _abort(context, err)


def _present(msg: Any, name: str) -> Any:
    return getattr(msg, name) if msg.HasField(name) else None


class CaptureServicer(capture_pb2_grpc.CaptureServicer):
    """Answers Capture calls by writing into one :class:`CaptureSink`."""

    def __init__(self, sink: CaptureSink) -> None:
        self.sink = sink

    def BeginQuery(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Validate the query's metadata (the service's ids included) and begin it in the sink.

        An id present but empty is refused like any other bad id (``INVALID_ARGUMENT`` naming
        the field); absent ids mean the answering service gave none.
        """
        meta = _model(
            QueryMeta,
            {
                "query_id": request.query_id,
                "task_id": request.task_id,
                "pairwise": request.pairwise,
                "prompt": request.prompt,
                "response_left": request.response_left,
                "response_right": _present(request, "response_right"),
                "shown_at_ms": _present(request, "shown_at_ms"),
                **{name: _present(request, name) for name in _SERVED_ID_FIELDS},
            },
            context,
        )
        _call(context, lambda: self.sink.begin_query(meta))
        return capture_pb2.Ack()

    def StreamSamples(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        """Validate each streamed item, store the valid ones in durable chunks, summarize."""
        accepted = 0
        rejected: list[Rejection] = []
        chunk: list[tuple[int, CaptureSample | CaptureEvent]] = []
        last = time.monotonic()

        def flush() -> None:
            nonlocal accepted, last
            if chunk:
                result = _call(context, lambda: self.sink.add_samples([s for _, s in chunk]))
                accepted += result.accepted
                rejected.extend(
                    r.model_copy(update={"index": chunk[r.index][0]}) for r in result.rejected
                )
                chunk.clear()
            last = time.monotonic()

        for index, msg in enumerate(request_iterator):
            parsed = parse_item(index, sample_item(msg))
            if isinstance(parsed, Rejection):
                rejected.append(parsed)
            else:
                chunk.append((index, parsed))
            if len(chunk) >= CHUNK_SAMPLES or time.monotonic() - last >= CHUNK_SECONDS:
                flush()
        flush()
        rejected.sort(key=lambda r: r.index)
        return capture_pb2.StreamSummary(
            accepted=accepted,
            rejected=[
                capture_pb2.Rejection(index=r.index, field=r.field, reason=r.reason)
                for r in rejected[:MAX_REJECTIONS]
            ],
            rejected_total=len(rejected),
        )

    def SetLabel(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Validate the label and record it."""
        label = _model(
            Label,
            {
                "query_id": request.query_id,
                "preference": _present(request, "preference"),
                "likert_left": _present(request, "likert_left"),
                "likert_right": _present(request, "likert_right"),
            },
            context,
        )
        _call(context, lambda: self.sink.set_label(label))
        return capture_pb2.Ack()

    def SetCalibration(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Record a task's calibration precision."""
        _call(context, lambda: self.sink.set_calibration(request.task_id, request.precision))
        return capture_pb2.Ack()


def token_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The ``metadata=`` argument that authenticates a call with the API ``token``."""
    return ((TOKEN_METADATA, token),)


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready")
    ),
    grpc.ClientCallDetails,
):
    """A call's details with the token added (gRPC's documented way to change metadata)."""


class _AddToken(grpc.UnaryUnaryClientInterceptor, grpc.StreamUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self._metadata = token_metadata(token)

    def _details(self, details: grpc.ClientCallDetails) -> _CallDetails:
        metadata = [(k, v) for k, v in details.metadata or () if k != TOKEN_METADATA]
        return _CallDetails(
            details.method,
            details.timeout,
            (*metadata, *self._metadata),
            details.credentials,
            getattr(details, "wait_for_ready", None),
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def with_token(channel: grpc.Channel, token: str) -> grpc.Channel:
    """``channel`` with the API ``token`` added to every call (for Python capture clients)."""
    return grpc.intercept_channel(channel, _AddToken(token))


class TokenInterceptor(grpc.ServerInterceptor):
    """Lets through only calls whose metadata carries the API token (constant-time check)."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("token: the capture gRPC service needs a non-empty token")
        self._token = token.encode()

    def _ok(self, details: grpc.HandlerCallDetails) -> bool:
        given = [v for k, v in details.invocation_metadata or () if k == TOKEN_METADATA]
        value = given[0] if len(given) == 1 else None
        if isinstance(value, str):
            value = value.encode()
        return value is not None and hmac.compare_digest(value, self._token)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or self._ok(handler_call_details):
            return handler

        def deny(request: Any, context: grpc.ServicerContext) -> NoReturn:
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"{TOKEN_METADATA}: missing or wrong (send the token of the agent's ready file)",
            )
            raise AssertionError("unreachable")  # abort raises

        serde = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(deny, **serde)
        return grpc.unary_unary_rpc_method_handler(deny, **serde)


def serve_capture(
    sink: CaptureSink,
    address: str,
    *,
    token: str,
    certificate: Path | None = None,
    private_key: Path | None = None,
    workers: int = 8,
) -> tuple[grpc.Server, int]:
    """Start the Capture service on ``address`` (``host:port``, IPv6 in brackets; port 0
    picks one) and return the running server and its port.

    Calls must carry ``token`` (:func:`token_metadata`). ``certificate``/``private_key`` are
    PEM files for TLS; both or neither. Without them only a loopback address is accepted
    (ValueError otherwise), because samples are personal data. Each open ``StreamSamples``
    call holds one of ``workers`` threads.
    """
    return serve_local_grpc(
        "capture",
        address,
        lambda server: capture_pb2_grpc.add_CaptureServicer_to_server(
            CaptureServicer(sink), server
        ),
        certificate=Path(certificate).read_bytes() if certificate is not None else None,
        private_key=Path(private_key).read_bytes() if private_key is not None else None,
        workers=workers,
        interceptors=(TokenInterceptor(token),),
    )
