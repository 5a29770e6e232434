"""A device whose data was captured through the Capture gRPC API trains in a real federation.

Device ``synth_000``'s data reaches it only as captured samples: its synthetic queries are
streamed through a real Capture server on 127.0.0.1 into a capture sink, committed to its
encrypted store, and the provisioned copy is deleted. A real SuperLink and three SuperNodes
then run one round, and that device must have trained and charged its own privacy ledger.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import grpc
import pytest

from capture_replay import replay_over_grpc
from fedgaze.audit.budget import device_budget
from fedgaze.client.capture.fold import fingerprint
from fedgaze.client.capture.grpc_service import serve_capture, with_token
from fedgaze.client.capture.sink import CaptureSink
from fedgaze.client.device.store import load_device
from fedgaze.federation.settings import NodeSettings
from fedgaze.local.cohort import provision_synthetic
from fedgaze.local.launcher import launch_federation
from fedgaze.v1 import capture_pb2_grpc
from settings_factory import server_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _capture(node: NodeSettings, device_dir: Path) -> NodeSettings:
    """Stream ``node``'s stored data through the Capture API into a fresh device folder."""
    original = load_device(node.data, key_path=node.store_key)
    with CaptureSink(device_dir, device_id=node.device_id) as sink:
        server, port = serve_capture(sink, "127.0.0.1:0", token="round-token")
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = capture_pb2_grpc.CaptureStub(with_token(channel, "round-token"))
                summary = replay_over_grpc(stub, original)
        finally:
            server.stop(grace=None).wait(10)
        assert summary.rejected_total == 0 and summary.accepted > 0
        captured = sink.commit()
    assert fingerprint(captured) == fingerprint(original)
    shutil.rmtree(node.device_dir)  # from now on the captured store is the only copy
    return node.model_copy(
        update={
            "device_dir": str(device_dir),
            "data": str(device_dir / "store"),
            "store_key": str(device_dir / "store.key"),
        }
    )


def test_a_captured_device_trains_in_a_real_round(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    nodes = provision_synthetic(run_dir / "devices", 3, seed=1, epsilon_budget=20.0, delta=1e-5)
    captured = _capture(nodes[0], tmp_path / "captured-device")
    nodes = [captured, *nodes[1:]]
    settings = server_settings(
        run_dir=str(run_dir),
        run_key=f"captured-{uuid.uuid4().hex[:8]}",
        rounds=1,
        min_nodes=3,
        node_wait_timeout=60,
        round_timeout=60,
        batch_size=8,
    )
    outcome = launch_federation(run_dir, settings, nodes, secure=False)
    result = outcome.server_result
    assert result.rounds_completed == 1
    (round_log,) = result.rounds_log
    assert round_log.train_devices == 3 and not round_log.refused, round_log
    view = result.device(captured.device_id)
    assert view is not None and view.rounds_participated == 1 and view.examples > 0
    assert view.epsilon > 0 and view.status != "unknown"
    budget = device_budget(captured.device_dir)
    assert not budget.problems and budget.rounds == 1
    assert budget.epsilon == pytest.approx(view.epsilon, rel=1e-6) and budget.epsilon > 0
