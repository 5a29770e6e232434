"""Real federation: SuperLink and SuperNode processes talking gRPC over loopback.

One federation (3 devices, 2 rounds) is run once per module and inspected by several tests.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dp_accounting import dp_event, rdp
from rich.console import Console

from fedgaze.audit.verify import audit_path
from fedgaze.cli.main import main as fedgaze_main
from fedgaze.local.demo import FederationOptions, run_local_federation
from fedgaze.model.personal import load_personal_head
from fedgaze.model.store import load_model

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    run_dir = tmp_path_factory.mktemp("fed") / "run"
    out = io.StringIO()
    summary = run_local_federation(
        FederationOptions(
            nodes=3,
            rounds=2,
            run_dir=run_dir,
            seed=1,
            epsilon_budget=20.0,
            client_dp_epsilon=50.0,
            client_dp_clip_norm=1.0,
        ),
        Console(file=out, width=200),
    ).to_json()
    return run_dir, summary, out.getvalue()


def _rdp_epsilon(events: list[dict[str, float]], delta: float) -> float:
    """Epsilon from recorded DP-SGD parameters, by Google's dp_accounting (not opacus)."""
    acc = rdp.RdpAccountant()
    for ev in events:
        acc.compose(
            dp_event.PoissonSampledDpEvent(
                ev["sample_rate"], dp_event.GaussianDpEvent(ev["noise_multiplier"])
            ),
            int(ev["steps"]),
        )
    return float(acc.get_epsilon(delta))


def test_summary_shape(run: tuple[Path, dict[str, Any], str]) -> None:
    run_dir, summary, _ = run
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert summary["transport"] == "grpc"
    assert summary["nodes"] == 3
    assert summary["rounds"] == summary["rounds_completed"] == 2
    assert [m["round"] for m in summary["metrics"]] == [1, 2]
    for m in summary["metrics"]:
        assert 0.0 <= m["accuracy"] <= 1.0 and np.isfinite(m["loss"])
        assert 0.0 <= m["accuracy_personal"] <= 1.0
    assert {d["device_id"] for d in summary["devices"]} == {"synth_000", "synth_001", "synth_002"}
    # Each device keeps its personal head locally; it is never part of a reply.
    for d in summary["devices"]:
        head = load_personal_head(run_dir / "devices" / d["device_id"] / "personal_head.json")
        assert np.isfinite(head.bias)
    for d in summary["devices"]:
        assert d["rounds_participated"] == 2 and d["examples"] > 0 and d["delta"] == 1e-5


def test_separate_processes_all_stopped(run: tuple[Path, dict[str, Any], str]) -> None:
    _, summary, _ = run
    pids = [summary["processes"]["superlink_pid"], *summary["processes"]["supernode_pids"]]
    assert len(set(pids)) == 4 and os.getpid() not in pids
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_global_model_changed_every_round(run: tuple[Path, dict[str, Any], str]) -> None:
    run_dir, _, _ = run
    states = [load_model(run_dir / "checkpoints" / f"round_{r:03d}").state for r in range(3)]
    for before, after in itertools.pairwise(states):
        assert any(not np.array_equal(before[k], after[k]) for k in before)
    final = load_model(run_dir / "model").state
    assert all(np.array_equal(final[k], states[2][k]) for k in final)


def test_epsilon_matches_independent_accountant(run: tuple[Path, dict[str, Any], str]) -> None:
    _, summary, _ = run
    for d in summary["devices"]:
        history = json.loads(Path(d["privacy_state"]).read_text())["events"]
        assert len(history) == 2
        first = _rdp_epsilon(history[:1], d["delta"])
        total = _rdp_epsilon(history, d["delta"])
        assert total > first > 0
        assert d["epsilon"] == pytest.approx(total, rel=2e-2)
        assert d["epsilon_device_state"] == pytest.approx(d["epsilon"], rel=1e-9)


def test_signed_ledgers_verify_and_a_tampered_copy_fails(
    run: tuple[Path, dict[str, Any], str], tmp_path: Path
) -> None:
    run_dir, summary, _ = run
    assert (run_dir / "server_ledger.db").is_file() and (run_dir / "server_key.pem").is_file()
    names = [d["device_id"] for d in summary["devices"]]
    for name in names:
        assert (run_dir / "devices" / name / "ledger.jsonl").is_file()
    assert fedgaze_main(["audit", "verify", str(run_dir)]) == 0
    server, *devices = audit_path(run_dir, pld=False)
    rounds = [r for r in server.report.records if r.kind == "server-round"]
    assert [r.body["round"] for r in rounds] == [1, 2]
    assert all(len(r.body["accepted"]) == 3 and not r.body["refused"] for r in rounds)
    for audit, d in zip(devices, summary["devices"], strict=True):
        assert audit.ok and audit.summary["charges"] == 2
        assert audit.summary["epsilon_stated"] == pytest.approx(d["epsilon"], rel=1e-9)

    copy = tmp_path / "copy"
    for name in names:
        (copy / "devices" / name).mkdir(parents=True)
        shutil.copy(run_dir / "devices" / name / "ledger.jsonl", copy / "devices" / name)
    for db in run_dir.glob("server_ledger.db*"):
        shutil.copy(db, copy / db.name)
    assert fedgaze_main(["audit", "verify", str(copy), "--no-pld"]) == 0
    ledger = copy / "devices" / names[1] / "ledger.jsonl"
    lines = ledger.read_text().splitlines(keepends=True)
    body = json.loads(lines[1])["body"]
    lines[1] = lines[1].replace(f'"steps":{body["steps"]}', f'"steps":{body["steps"] + 1}')
    ledger.write_text("".join(lines))
    assert fedgaze_main(["audit", "verify", str(copy), "--no-pld"]) == 1
    problems = [p for a in audit_path(copy, pld=False) for p in a.problems]
    assert "record 1 (line 2): hash does not match the record's content" in problems


def test_audit_service_answers_over_loopback_grpc(run: tuple[Path, dict[str, Any], str]) -> None:
    import grpc

    from fedgaze.ledger.records import LedgerRecord, verify_lines
    from fedgaze.server.audit_service import serve_audit
    from fedgaze.v1 import audit_pb2, audit_pb2_grpc

    run_dir, summary, _ = run
    server, port = serve_audit(run_dir, "127.0.0.1:0")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = audit_pb2_grpc.PrivacyAuditStub(channel)
            budgets = stub.GetBudgets(audit_pb2.GetBudgetsRequest(), timeout=30)
            assert sorted(d.epsilon for d in budgets.devices) == pytest.approx(
                sorted(d["epsilon"] for d in summary["devices"]), rel=1e-9
            )
            assert all(d.rounds == 2 for d in budgets.devices)
            assert budgets.central_epsilon == pytest.approx(summary["client_dp"]["epsilon"])
            one = stub.GetRound(audit_pb2.GetRoundRequest(round=1), timeout=30)
            assert len(one.device_records) == 3
            for rec in one.device_records:
                assert LedgerRecord.parse_checked(rec.line).body["round"] == 1
            lines = [
                r.line.encode()
                for r in stub.StreamLedger(audit_pb2.StreamLedgerRequest(), timeout=30)
            ]
            assert verify_lines(lines).ok and len(lines) == 3  # run-start + 2 rounds
            device = budgets.devices[0].device_id
            mine = list(
                stub.StreamLedger(audit_pb2.StreamLedgerRequest(device_id=device), timeout=30)
            )
            assert len(mine) == 2
            verdict = stub.Verify(audit_pb2.VerifyRequest(), timeout=60)
            assert verdict.ok and not verdict.problems and verdict.records > 3
            with pytest.raises(grpc.RpcError) as err:
                stub.GetRound(audit_pb2.GetRoundRequest(round=99), timeout=30)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        server.stop(grace=None)
    with pytest.raises(ValueError, match="without TLS"):
        serve_audit(run_dir, "0.0.0.0:0")


def test_audit_report_is_written_with_plots(
    run: tuple[Path, dict[str, Any], str], tmp_path: Path
) -> None:
    run_dir, _, _ = run
    out = tmp_path / "report.html"
    assert fedgaze_main(["audit", "report", str(run_dir), "--out", str(out)]) == 0
    page = out.read_text()
    # epsilon curves, histogram, central epsilon, accuracy
    assert page.count("data:image/png;base64,") == 4
    assert "Every hash, signature and epsilon verified" in page and "delta = 1e-05" in page


def test_client_level_dp_is_applied_recorded_and_exported(
    run: tuple[Path, dict[str, Any], str],
) -> None:
    from fedgaze.audit.verify import export_events

    run_dir, summary, _ = run
    cdp = summary["client_dp"]
    assert cdp["sample_rate"] == 1.0 and cdp["clip_norm"] == 1.0 and cdp["epsilon"] <= 50.0
    acc = rdp.RdpAccountant()
    acc.compose(dp_event.GaussianDpEvent(cdp["noise_multiplier"]), 2)
    assert cdp["epsilon"] == pytest.approx(acc.get_epsilon(cdp["delta"]), rel=1e-6)
    server, *_ = audit_path(run_dir, pld=False)
    rounds = [r for r in server.report.records if r.kind == "server-round"]
    assert [r.body["aggregation"] for r in rounds] == ["dp-fedavg", "dp-fedavg"]
    assert rounds[-1].body["central_dp"]["expected_devices"] == 3
    central = export_events([server])["central"]
    assert [e["round"] for e in central["events"]] == [1, 2]
    acc = rdp.RdpAccountant()
    for e in central["events"]:
        acc.compose(
            dp_event.PoissonSampledDpEvent(
                e["sample_rate"], dp_event.GaussianDpEvent(e["noise_multiplier"])
            ),
            e["steps"],
        )
    assert central["epsilon"] == pytest.approx(acc.get_epsilon(central["delta"]), rel=1e-2)


def test_server_status_of_the_finished_run(run: tuple[Path, dict[str, Any], str]) -> None:
    from fedgaze.server.status import run_status

    run_dir, _, _ = run
    st = run_status(run_dir)
    assert st.state == "finished" and st.rounds_completed == st.rounds_planned == 2
    assert st.ledger_records == 3 and not st.live_processes and not st.refused
    assert fedgaze_main(["server", "status", str(run_dir)]) == 0


def test_progress_was_shown(run: tuple[Path, dict[str, Any], str]) -> None:
    _, _, printed = run
    assert "round 1: held-out accuracy" in printed and "round 2" in printed


def test_devices_refuse_a_plan_that_would_overspend(tmp_path: Path) -> None:
    """The server asks for too little noise; every device stops itself at its own budget."""
    summary = run_local_federation(
        FederationOptions(
            nodes=2,
            rounds=3,
            run_dir=tmp_path / "run",
            seed=2,
            epsilon_budget=3.0,
            noise_multiplier=0.6,
        ),
        Console(file=io.StringIO()),
    ).to_json()
    assert summary["rounds_completed"] == 3
    statuses = {d["status"] for d in summary["devices"]}
    assert statuses <= {"budget-exhausted", "no-data"} and "budget-exhausted" in statuses
    for d in summary["devices"]:
        assert d["epsilon"] <= 3.0
        history = (
            json.loads(Path(d["privacy_state"]).read_text())["events"] if d["examples"] else []
        )
        assert len(history) == d["rounds_participated"] < 3
        assert d["epsilon_device_state"] == pytest.approx(d["epsilon"], rel=1e-9)


def test_run_completes_when_the_log_stream_dies(tmp_path: Path) -> None:
    """`flwr run --stream` may end early (its HTTP stream closes); the launcher then asks the
    SuperLink for the run's status instead of declaring the run dead."""
    import signal

    from fedgaze.federation.settings import ServerSettings
    from fedgaze.local.cohort import provision_synthetic
    from fedgaze.local.launcher import launch_federation

    run_dir = tmp_path / "run"
    nodes = provision_synthetic(run_dir / "devices", 2, seed=3, epsilon_budget=20.0, delta=1e-5)
    settings = ServerSettings(
        run_dir=str(run_dir),
        run_key="stream-test",
        rounds=1,
        min_nodes=2,
        node_wait_timeout=120,
        round_timeout=120,
        hidden=4,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        batch_size=8,
        local_epochs=1,
        lr=0.05,
        holdout=0.25,
        seed=0,
    )

    def kill_stream_once_started(sup: object) -> None:
        log = run_dir / "logs" / "flwr-run.log"
        deadline = time.monotonic() + 60
        while "started run" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, "flwr run never started the run"
            time.sleep(0.2)
        sup.kill("flwr-run", signal.SIGKILL)  # type: ignore[attr-defined]

    outcome = launch_federation(run_dir, settings, nodes, on_started=kill_stream_once_started)
    assert outcome.server_result.rounds_completed == 1
