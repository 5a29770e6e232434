"""Server-side checks of device records, the server ledger, and the audit / budget commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fedgaze.audit.verify import audit_path
from fedgaze.cli.main import main
from fedgaze.federation import protocol
from fedgaze.federation.settings import ServerSettings
from fedgaze.ledger.contract import SERVER_LEDGER_FILE
from fedgaze.ledger.contract import device_ledger_path as ledger_path
from fedgaze.ledger.device import sync_ledger
from fedgaze.ledger.records import LedgerRecord
from fedgaze.privacy.params import DeviceBudget
from fedgaze.privacy.state import PrivacyEvent, PrivacyState
from fedgaze.server.ledger import (
    RecordRefused,
    RoundBook,
    ServerLedger,
    check_device_record,
)
from settings_factory import server_settings

RUN = "run-x"


def _settings(run_dir: Path, **kw: object) -> ServerSettings:
    fields: dict[str, object] = dict(
        run_dir=str(run_dir), run_key=RUN, rounds=1, noise_multiplier=1.1, batch_size=8, seed=0
    )
    return server_settings(**{**fields, **kw})


def _device(run_dir: Path, name: str, rate: float, budget: float = 50.0) -> LedgerRecord:
    """A device that charged round 1 of RUN (sample rate ``rate``); returns its record."""
    event = PrivacyEvent(
        run_id=RUN,
        round=1,
        noise_multiplier=1.1,
        sample_rate=rate,
        steps=round(1 / rate),
        max_grad_norm=1.0,
        noise_seed=7,
    )
    records = sync_ledger(
        run_dir / "devices" / name, PrivacyState((event,)), DeviceBudget(1e-5, budget)
    )
    return records[(RUN, 1)]


def _report(node: int, name: str, record: LedgerRecord | None) -> protocol.DeviceReport:
    metrics: dict[str, float] = {protocol.Metric.NUM_EXAMPLES: 10.0}
    if record is not None:
        metrics.update(
            {
                "noise-multiplier": record.body["noise_multiplier"],
                "sample-rate": record.body["sample_rate"],
                "steps": record.body["steps"],
                "epsilon": record.body["epsilon"],
            }
        )
    return protocol.DeviceReport(
        node, name, protocol.ReplyStatus.TRAINED, metrics, record.line() if record else None
    )


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory with 2 devices; the server caps epsilon so that ``big`` is refused."""
    run_dir = tmp_path / "run"
    small = _device(run_dir, "small", 1 / 13)  # epsilon ~1.2
    big = _device(run_dir, "big", 1.0)  # epsilon ~4.4
    settings = _settings(run_dir, max_device_epsilon=3.0)
    ledger = ServerLedger(run_dir)
    ledger.run_start(settings)
    book = RoundBook()
    plan = settings.plan(1)
    assert ledger.admit(_report(1, "small", small), plan, book, settings.max_device_epsilon)
    assert not ledger.admit(_report(2, "big", big), plan, book, settings.max_device_epsilon)
    ledger.round_end(1, book, [])
    ledger.close()
    return run_dir


def test_record_over_the_server_cap_is_refused_with_a_reason(tmp_path: Path) -> None:
    record = _device(tmp_path, "big", 1.0)
    plan = _settings(tmp_path).plan(1)
    kw = {"plan": plan, "metrics": {}, "pinned_key": None}
    assert check_device_record(record.line(), max_device_epsilon=None, **kw) == record
    with pytest.raises(RecordRefused, match=r"epsilon 4\.\d+ exceeds the server's cap 3"):
        check_device_record(record.line(), max_device_epsilon=3.0, **kw)
    with pytest.raises(RecordRefused, match="no signed dp-record"):
        check_device_record(None, max_device_epsilon=None, **kw)
    with pytest.raises(RecordRefused, match="run_id"):
        check_device_record(
            record.line(),
            max_device_epsilon=None,
            **{**kw, "plan": _settings(tmp_path, run_key="other").plan(1)},
        )
    with pytest.raises(RecordRefused, match="another key"):
        check_device_record(record.line(), max_device_epsilon=None, **{**kw, "pinned_key": "AAAA"})
    forged = record.line().replace('"round":1', '"round":2')
    with pytest.raises(RecordRefused, match="does not verify"):
        check_device_record(forged, max_device_epsilon=None, **kw)


def test_server_ledger_records_the_round_and_the_refusal(run_dir: Path) -> None:
    audits = audit_path(run_dir, pld=False)
    assert [a.kind for a in audits] == ["server", "device", "device"]
    assert all(a.ok for a in audits), [a.problems for a in audits]
    server = audits[0].report.records
    assert [r.kind for r in server] == ["run-start", "server-round"]
    assert server[0].body["settings"]["max_device_epsilon"] == 3.0
    body = server[1].body
    assert body["aggregation"] == "fedavg" and body["central_dp"] is None
    assert len(body["accepted"]) == 1 and body["participants"] == [
        LedgerRecord.parse(body["accepted"][0]).body["device"]
    ]
    (refusal,) = body["refused"]
    assert "exceeds the server's cap 3" in refusal["reason"] and refusal["node"] == 2
    assert body["accepted"][0] in ledger_path(run_dir / "devices" / "small").read_text()


def test_cross_check_catches_a_rolled_back_device_ledger(run_dir: Path) -> None:
    """Dropping a device's last record is invisible in its own ledger, not against the server's."""
    path = ledger_path(run_dir / "devices" / "small")
    line = path.read_text()
    path.write_text("")
    server = audit_path(run_dir, pld=False)[0]
    assert any(p.startswith("record 1:") and "in no device ledger" in p for p in server.problems)
    path.write_text(line.replace('"time":"', '"time":"1'))  # an edited copy: not the same bytes
    server, *devices = audit_path(run_dir, pld=False)
    assert any(p.startswith("record 1:") and "device ledger" in p for p in server.problems)
    assert any(p.startswith("record 0 (line 1): hash") for d in devices for p in d.problems)


@pytest.mark.slow  # several CLI commands over a whole run: seconds
def test_audit_verify_export_and_budget_commands(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "verified" in out and "0.01" in out

    out_file = tmp_path / "events.json"
    assert main(["audit", "export", str(run_dir), "--json", "--out", str(out_file)]) == 0
    exported = json.loads(out_file.read_text())
    assert exported["central"] is None and len(exported["devices"]) == 2
    assert all(d["events"][0]["run_id"] == RUN for d in exported["devices"])
    capsys.readouterr()

    assert main(["client", "budget", "--device-dir", str(run_dir / "devices" / "big")]) == 0
    out = capsys.readouterr().out
    assert RUN in out and "total: 1 rounds in 1 runs, epsilon 4." in out and "budget 50" in out

    tampered = tmp_path / "tampered"
    shutil.copytree(run_dir, tampered)
    led = ledger_path(tampered / "devices" / "big")
    led.write_text(led.read_text().replace('"round":1', '"round":9'))
    assert main(["audit", "verify", str(tampered)]) == 1
    out = capsys.readouterr().out
    assert "record 0 (line 1): hash does not match" in out and "FAILED" in out
    assert main(["audit", "verify", str(tampered / "devices" / "small" / "ledger.jsonl")]) == 0
    assert main(["audit", "verify", str(tampered / SERVER_LEDGER_FILE)]) == 0
    assert main(["client", "budget", "--device-dir", str(tampered / "devices" / "big")]) == 1


def test_audit_service_over_tls_and_refusals(run_dir: Path, tmp_path: Path) -> None:
    import grpc

    from fedgaze.security.certs import make_ca, make_server_cert
    from fedgaze.security.net import is_loopback
    from fedgaze.server.audit_service import serve_audit
    from fedgaze.v1 import audit_pb2, audit_pb2_grpc

    assert is_loopback("127.0.0.1:1") and is_loopback("[::1]:1") and is_loopback("localhost:1")
    assert not is_loopback("0.0.0.0:1") and not is_loopback("10.0.0.1:1")
    ca = make_ca()
    served = make_server_cert(ca, ["127.0.0.1"])
    cert, key = served.cert, served.key
    server, port = serve_audit(run_dir, "127.0.0.1:0", tls_cert=cert, tls_key=key)
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=ca.cert)
        with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
            stub = audit_pb2_grpc.PrivacyAuditStub(channel)
            verdict = stub.Verify(audit_pb2.VerifyRequest(), timeout=30)
            assert verdict.tolerance == pytest.approx(1e-2) and verdict.records > 0
        # A plaintext client cannot talk to the TLS service.
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = audit_pb2_grpc.PrivacyAuditStub(channel)
            with pytest.raises(grpc.RpcError):
                stub.Verify(audit_pb2.VerifyRequest(), timeout=5)
    finally:
        server.stop(grace=None)
    with pytest.raises(ValueError, match="both a certificate and a key"):
        serve_audit(run_dir, "127.0.0.1:0", tls_cert=cert)
    with pytest.raises(FileNotFoundError, match=r"server_ledger\.db"):
        serve_audit(tmp_path / "nothing", "127.0.0.1:0")


@pytest.mark.slow  # several CLI commands over a whole run: seconds
def test_a_recorded_canary_audit_shows_in_the_report(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    audit = ["audit", "canary", "--kind", "labels", "--canaries", "2000", "--json"]
    assert main([*audit, "--run-dir", str(run_dir)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["kind"] == "labels" and not result["violated"]
    recorded = json.loads((run_dir / "canary_audit.json").read_text())
    assert recorded["epsilon_lower_bound"] == result["epsilon_lower_bound"]
    page_file = tmp_path / "report.html"
    assert main(["audit", "report", str(run_dir), "--out", str(page_file)]) == 0
    page = page_file.read_text()
    assert "Empirical privacy audit (last recorded)" in page
    assert f"{result['epsilon_lower_bound']:.3f} at 99.9% confidence" in page
    assert "this run&#x27;s largest device epsilon" in page
    capsys.readouterr()
    assert main([*audit, "--run-dir", str(tmp_path / "nowhere")]) == 2
    assert "--run-dir" in (err := capsys.readouterr().err) and "is not a run folder" in err
    (run_dir / "canary_audit.json").write_text("{")
    assert main(["audit", "report", str(run_dir), "--out", str(page_file)]) == 2
    assert "canary_audit.json: not an audit record" in capsys.readouterr().err
