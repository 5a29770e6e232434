"""The committed generated code is exactly what the .proto contracts produce today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*.py*"))
    assert generated, "protoc produced nothing"
    committed = sorted(p.relative_to(ROOT / "proto") for p in (ROOT / "proto").rglob("*_pb2*.py*"))
    assert committed == generated, "generated files differ from the committed set"
    stale = [
        str(rel)
        for rel in generated
        if (tmp_path / rel).read_bytes() != (ROOT / "proto" / rel).read_bytes()
    ]
    assert not stale, f"stale generated code (run python scripts/gen_proto.py): {stale}"


def test_generated_audit_contract_imports_and_round_trips() -> None:
    from fedgaze.v1 import audit_pb2, audit_pb2_grpc

    msg = audit_pb2.GetBudgetsResponse(
        devices=[audit_pb2.DeviceBudget(device_id="ab", epsilon=1.5, delta=1e-5, rounds=3)]
    )
    back = audit_pb2.GetBudgetsResponse.FromString(msg.SerializeToString())
    assert back.devices[0].epsilon == 1.5 and not back.HasField("central_epsilon")
    assert hasattr(audit_pb2_grpc, "PrivacyAuditServicer")


def test_generated_capture_contract_imports_and_tracks_presence() -> None:
    from fedgaze.v1 import capture_pb2, capture_pb2_grpc

    msg = capture_pb2.Sample(query_id=0, kind=capture_pb2.SAMPLE_KIND_GAZE, t_ms=1.0)
    back = capture_pb2.Sample.FromString(msg.SerializeToString())
    # The service tells "sent as 0" from "not sent": optional fields keep their presence.
    assert back.HasField("query_id") and back.query_id == 0 and not back.HasField("x")
    assert back.side == capture_pb2.SIDE_UNSPECIFIED
    assert hasattr(capture_pb2_grpc, "CaptureServicer") and hasattr(capture_pb2_grpc, "CaptureStub")
