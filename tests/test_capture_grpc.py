"""The Capture gRPC service: a real server on 127.0.0.1 and a real client."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from capture_replay import T0, replay_over_grpc
from fedgaze.client.capture.fold import fingerprint, meta_of
from fedgaze.client.capture.grpc_service import (
    MAX_REJECTIONS,
    meta_message,
    sample_item,
    sample_message,
    serve_capture,
    token_metadata,
    with_token,
)
from fedgaze.client.capture.samples import SERVED_ID_MAX_CHARS
from fedgaze.client.capture.sink import CaptureSink
from fedgaze.client.device.pause import set_paused
from fedgaze.client.device.store import load_device
from fedgaze.data.schema import ServedIds
from fedgaze.data.synthetic import generate_cohort
from fedgaze.security.certs import make_ca, make_server_cert
from fedgaze.v1 import capture_pb2, capture_pb2_grpc

TIMEOUT = 30
TOKEN = "capture-api-token-for-tests"


def _meta(query_id: int = 1, **over: Any) -> Any:
    fields = dict(
        query_id=query_id,
        task_id=3,
        pairwise=True,
        prompt="p",
        response_left="left answer",
        response_right="right",
        shown_at_ms=T0,
    )
    return capture_pb2.QueryMeta(**{**fields, **over})


def _gaze(query_id: int = 1, t: float = T0, **over: Any) -> Any:
    fields = dict(
        query_id=query_id,
        kind=capture_pb2.SAMPLE_KIND_GAZE,
        t_ms=t,
        x=12.5,
        y=-3.0,
        side=capture_pb2.SIDE_LEFT,
        char_index=2,
        validate=1,
    )
    return capture_pb2.Sample(**{**fields, **over})


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[CaptureSink]:
    s = CaptureSink(tmp_path / "device")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def stub(sink: CaptureSink) -> Iterator[Any]:
    server, port = serve_capture(sink, "127.0.0.1:0", token=TOKEN)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield capture_pb2_grpc.CaptureStub(with_token(channel, TOKEN))
    finally:
        server.stop(grace=None).wait(10)


def test_valid_samples_are_stored_and_invalid_ones_rejected_with_reasons(
    stub: Any, sink: CaptureSink
) -> None:
    stub.BeginQuery(_meta(1), timeout=TIMEOUT)
    stub.BeginQuery(_meta(1), timeout=TIMEOUT)  # idempotent
    stub.BeginQuery(_meta(2, pairwise=False, response_right=None), timeout=TIMEOUT)
    no_t = _gaze(t=T0 + 9)
    no_t.ClearField("t_ms")
    stream = [
        _gaze(t=T0 + 2),
        _gaze(x=float("nan")),
        _gaze(kind=capture_pb2.SAMPLE_KIND_UNSPECIFIED),
        _gaze(query_id=9),
        no_t,
        _gaze(side=capture_pb2.SIDE_UNSPECIFIED),
        _gaze(side=7),  # an enum number this service does not know
        _gaze(2, side=capture_pb2.SIDE_RIGHT),
        capture_pb2.Sample(
            query_id=1, kind=capture_pb2.SAMPLE_KIND_SCROLL, t_ms=T0 + 1, detail="down"
        ),
        capture_pb2.Sample(query_id=1, kind=capture_pb2.SAMPLE_KIND_CLICK, t_ms=T0, x=1.0),
        _gaze(t=T0 + 1, kind=capture_pb2.SAMPLE_KIND_MOUSE, validate=-1),
        _gaze(t=T0 + 1),
    ]
    summary = stub.StreamSamples(iter(stream), timeout=TIMEOUT)
    assert summary.accepted == 4 and summary.rejected_total == 8
    assert [(r.index, r.field) for r in summary.rejected] == [
        (1, "x"),
        (2, "type"),
        (3, "query_id"),
        (4, "t_ms"),
        (5, "side"),
        (6, "side"),
        (7, "side"),
        (9, "x"),
    ]
    assert all(r.reason for r in summary.rejected)
    stub.SetLabel(capture_pb2.Label(query_id=1, preference=2, likert_left=4.0), timeout=TIMEOUT)
    stub.SetCalibration(capture_pb2.Calibration(task_id=3, precision=81.0), timeout=TIMEOUT)
    device = sink.commit()
    q1 = device.queries[0]
    assert q1.gaze.t_ms.tolist() == [T0 + 1, T0 + 2] and q1.mouse.validate.tolist() == [-1]
    assert (q1.preference, q1.likert_left, q1.likert_right) == (2, 4.0, None)
    assert device.calibration == {3: 81.0}
    assert [e.kind for e in sink.events()] == ["scroll"]
    assert fingerprint(load_device(sink.store_dir)) == fingerprint(device)


def test_bad_calls_are_invalid_argument_naming_the_field(stub: Any) -> None:
    def code_and_text(call: Any, request: Any) -> tuple[Any, str]:
        with pytest.raises(grpc.RpcError) as err:
            call(request, timeout=TIMEOUT)
        return err.value.code(), err.value.details()

    invalid = grpc.StatusCode.INVALID_ARGUMENT
    code, text = code_and_text(stub.BeginQuery, _meta(response_right=None))
    assert code == invalid and text.startswith("response_right:")
    code, text = code_and_text(stub.BeginQuery, _meta(shown_at_ms=float("inf")))
    assert code == invalid and text.startswith("shown_at_ms:")
    stub.BeginQuery(_meta(1), timeout=TIMEOUT)
    code, text = code_and_text(stub.BeginQuery, _meta(1, prompt="changed"))
    assert code == invalid and text.startswith("query_id:")
    code, text = code_and_text(stub.SetLabel, capture_pb2.Label(query_id=1, preference=5))
    assert code == invalid and text.startswith("preference:")
    code, text = code_and_text(stub.SetLabel, capture_pb2.Label(query_id=8, preference=1))
    assert code == invalid and text.startswith("query_id:")
    code, text = code_and_text(
        stub.SetCalibration, capture_pb2.Calibration(task_id=0, precision=150.0)
    )
    assert code == invalid and text.startswith("precision:")


IDS = {"prompt_id": "chatcmpl-7", "response_left_id": "chatcmpl-7/0", "response_right_id": "c/1"}


def test_service_ids_reach_the_stored_query(stub: Any, sink: CaptureSink) -> None:
    stub.BeginQuery(_meta(1, **IDS), timeout=TIMEOUT)
    stub.BeginQuery(_meta(1, **IDS), timeout=TIMEOUT)  # idempotent, ids included
    longest = "x" * SERVED_ID_MAX_CHARS
    pointwise = {"prompt_id": longest, "response_left_id": "p2/a"}
    stub.BeginQuery(_meta(2, pairwise=False, response_right=None, **pointwise), timeout=TIMEOUT)
    stub.BeginQuery(_meta(3), timeout=TIMEOUT)  # the service gave no ids
    assert stub.StreamSamples(iter([_gaze(1), _gaze(2), _gaze(3)]), timeout=TIMEOUT).accepted == 3
    sink.commit()
    stored = load_device(sink.store_dir)
    assert [q.served for q in stored.queries] == [
        ServedIds("chatcmpl-7", "chatcmpl-7/0", "c/1"),
        ServedIds(longest, "p2/a", None),
        None,
    ]
    assert meta_message(meta_of(stored.queries[0])) == _meta(1, **IDS)


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({**IDS, "prompt_id": ""}, "prompt_id"),
        ({**IDS, "response_left_id": ""}, "response_left_id"),
        ({**IDS, "response_right_id": " "}, "response_right_id"),
        ({**IDS, "prompt_id": "x" * (SERVED_ID_MAX_CHARS + 1)}, "prompt_id"),
        ({**IDS, "response_left_id": "tab\there"}, "response_left_id"),
        ({"prompt_id": "p"}, "response_left_id"),
        ({"prompt_id": "p", "response_left_id": "p/1"}, "response_right_id"),
        ({"response_left_id": "p/1", "response_right_id": "p/2"}, "prompt_id"),
        ({**IDS, "response_right_id": IDS["response_left_id"]}, "response_right_id"),
        ({**IDS, "pairwise": False, "response_right": None}, "response_right_id"),
        ({**IDS, "query_id": 1, "prompt_id": "another"}, "query_id"),  # differs from the known
    ],
)
def test_bad_service_ids_are_invalid_argument_and_cost_nothing_valid(
    stub: Any, sink: CaptureSink, over: dict[str, Any], field: str
) -> None:
    stub.BeginQuery(_meta(1, **IDS), timeout=TIMEOUT)
    assert stub.StreamSamples(iter([_gaze(1)]), timeout=TIMEOUT).accepted == 1
    with pytest.raises(grpc.RpcError) as err:
        stub.BeginQuery(_meta(**{"query_id": 2, **over}), timeout=TIMEOUT)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}:"), err.value.details()
    assert stub.StreamSamples(iter([_gaze(1, t=T0 + 1)]), timeout=TIMEOUT).accepted == 1
    (q,) = sink.commit().queries
    assert q.served == ServedIds(**IDS) and len(q.gaze) == 2


def test_paused_device_refuses_with_failed_precondition(stub: Any, sink: CaptureSink) -> None:
    stub.BeginQuery(_meta(1), timeout=TIMEOUT)
    set_paused(sink.device_dir, True)
    for call, request in (
        (stub.BeginQuery, _meta(2)),
        (stub.StreamSamples, iter([_gaze()])),
        (stub.SetLabel, capture_pb2.Label(query_id=1, preference=1)),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call(request, timeout=TIMEOUT)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "paused" in err.value.details()
    set_paused(sink.device_dir, False)
    assert stub.StreamSamples(iter([_gaze()]), timeout=TIMEOUT).accepted == 1
    assert sink.stats()["gaze_samples"] == 1


def test_the_summary_lists_at_most_the_cap_but_counts_all(stub: Any) -> None:
    n = MAX_REJECTIONS + 5
    summary = stub.StreamSamples((_gaze(query_id=99) for _ in range(n)), timeout=TIMEOUT)
    assert summary.accepted == 0 and summary.rejected_total == n
    assert len(summary.rejected) == MAX_REJECTIONS and summary.rejected[-1].index == n - 6


@pytest.mark.slow
def test_a_device_replayed_over_grpc_is_stored_exactly(stub: Any, sink: CaptureSink) -> None:
    (original,) = generate_cohort(1, seed=2, comparisons_per_device=4)
    summary = replay_over_grpc(stub, original)
    assert summary.rejected_total == 0
    assert summary.accepted == sum(len(q.gaze) + len(q.mouse) for q in original.queries)
    committed = sink.commit()
    assert fingerprint(committed) == fingerprint(replace(original, device_id=sink.device_id))


def test_sample_message_and_item_are_inverse() -> None:
    item = {
        "type": "mouse",
        "query_id": 4,
        "t_ms": T0,
        "x": -1.5,
        "y": 2.0,
        "side": "right",
        "char_index": -1,
        "validate": 0,
    }
    assert sample_item(sample_message(item)) == item
    event = {"type": "visibility", "query_id": 4, "t_ms": T0, "detail": "hidden"}
    assert sample_item(sample_message(event)) == event


def test_tls_service_and_plaintext_refusals(sink: CaptureSink, tmp_path: Path) -> None:
    ca = make_ca()
    served = make_server_cert(ca, ["127.0.0.1"])
    cert, key = tmp_path / "capture.pem", tmp_path / "capture.key"
    cert.write_bytes(served.cert)
    key.write_bytes(served.key)
    server, port = serve_capture(
        sink, "127.0.0.1:0", token=TOKEN, certificate=cert, private_key=key
    )
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=ca.cert)
        with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
            capture_pb2_grpc.CaptureStub(channel).BeginQuery(
                _meta(1), timeout=TIMEOUT, metadata=token_metadata(TOKEN)
            )
        assert sink.stats()["queries"] == 1
        # A plaintext client cannot talk to the TLS service.
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError):
            capture_pb2_grpc.CaptureStub(channel).BeginQuery(
                _meta(2), timeout=5, metadata=token_metadata(TOKEN)
            )
    finally:
        server.stop(grace=None).wait(10)
    assert sink.stats()["queries"] == 1
    for address in ("0.0.0.0:0", "10.1.2.3:0", "[::]:0", "example.org:0"):
        with pytest.raises(ValueError, match="without TLS"):
            serve_capture(sink, address, token=TOKEN)
    with pytest.raises(ValueError, match="both a certificate and a private key"):
        serve_capture(sink, "127.0.0.1:0", token=TOKEN, certificate=cert)
