"""Replaying a schema :class:`Device` through the capture API, as a capture client would.

Shared by the capture tests: the items a browser would post for a query's traces, the label
it would send, a full replay of a device into a sink (JSON path) or a gRPC stub, and
:class:`FakeChat`, the OpenAI-compatible answering service the capture service's answers can
come from.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fedgaze.client.capture.fold import meta_of
from fedgaze.client.capture.grpc_service import label_message, meta_message, sample_message
from fedgaze.client.capture.samples import SIDE_CODES, Label
from fedgaze.client.capture.sink import CaptureSink
from fedgaze.data.schema import MODALITIES, Device, Query
from fedgaze.v1 import capture_pb2

SIDE_NAMES = {code: name for name, code in SIDE_CODES.items()}
T0 = 1_700_000_000_000.0


def sample_items(query: Query) -> list[dict[str, Any]]:
    """The JSON items of every gaze and mouse sample of ``query``."""
    items = []
    for modality in MODALITIES:
        s = getattr(query, modality)
        for t, x, y, side, ci, v in zip(
            s.t_ms.tolist(),
            s.x.tolist(),
            s.y.tolist(),
            s.side.tolist(),
            s.char_index.tolist(),
            s.validate.tolist(),
            strict=True,
        ):
            items.append(
                {
                    "type": modality,
                    "query_id": query.query_id,
                    "t_ms": t,
                    "x": x,
                    "y": y,
                    "side": SIDE_NAMES[side],
                    "char_index": ci,
                    "validate": v,
                }
            )
    return items


def query_label(query: Query) -> Label | None:
    """The label a person gave ``query``, None when they gave none."""
    fields = (query.preference, query.likert_left, query.likert_right)
    if all(v is None for v in fields):
        return None
    return Label(
        query_id=query.query_id,
        preference=query.preference,
        likert_left=query.likert_left,
        likert_right=query.likert_right,
    )


def replay_into_sink(sink: CaptureSink, device: Device, batch: int = 1000) -> int:
    """Send all of ``device`` through the sink's JSON path; returns the samples accepted."""
    accepted = 0
    for task_id, precision in device.calibration.items():
        sink.set_calibration(task_id, precision)
    for q in device.queries:
        sink.begin_query(meta_of(q))
        items = sample_items(q)
        for start in range(0, len(items), batch):
            result = sink.add(items[start : start + batch])
            assert not result.rejected, result.rejected[:3]
            accepted += result.accepted
        label = query_label(q)
        if label is not None:
            sink.set_label(label)
    return accepted


def _stream(device: Device) -> Iterator[Any]:
    for q in device.queries:
        for item in sample_items(q):
            yield sample_message(item)


def replay_over_grpc(stub: Any, device: Device, timeout: float = 60.0) -> Any:
    """Send all of ``device`` through a Capture stub; returns the StreamSummary."""
    for task_id, precision in device.calibration.items():
        stub.SetCalibration(
            capture_pb2.Calibration(task_id=task_id, precision=precision), timeout=timeout
        )
    for q in device.queries:
        stub.BeginQuery(meta_message(meta_of(q)), timeout=timeout)
    summary = stub.StreamSamples(_stream(device), timeout=timeout)
    for q in device.queries:
        label = query_label(q)
        if label is not None:
            stub.SetLabel(label_message(label), timeout=timeout)
    return summary


@dataclass
class FakeChat:
    """A chat-completions server on 127.0.0.1: ``mode`` is "n" (honours n), "one" (always one
    choice), "slow" (answers after 2 s) or "error" (HTTP 500); call k's ``id`` is ``ids(k)``
    (None: no ``id``). Records the requests."""

    mode: str = "n"
    seen: list[tuple[str, str | None, dict[str, Any]]] = field(default_factory=list)
    ids: Callable[[int], Any] = lambda k: f"chatcmpl-{k}"

    def serve(self) -> tuple[ThreadingHTTPServer, str]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.seen.append((self.path, self.headers.get("Authorization"), body))
                if fake.mode == "slow":
                    time.sleep(2)
                if fake.mode == "error":
                    self.send_error(500)
                    return
                n = body["n"] if fake.mode == "n" else 1
                prompt = body["messages"][0]["content"]
                choices = [
                    {
                        "index": i,
                        "message": {
                            "role": "assistant",
                            "content": f"answer {i} of {len(fake.seen)}: {prompt}",
                        },
                        "finish_reason": "stop",
                    }
                    for i in range(n)
                ]
                reply: dict[str, Any] = {"object": "chat.completion", "choices": choices}
                call_id = fake.ids(len(fake.seen))
                if call_id is not None:
                    reply["id"] = call_id
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)  # a client that timed out has hung up

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True).start()
        return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
