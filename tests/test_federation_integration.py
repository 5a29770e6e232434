"""Real federation: SuperLink and SuperNode processes talking gRPC over loopback.

One federation (3 devices, 2 rounds) is run once per module and inspected by several tests.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dp_accounting import dp_event, rdp
from rich.console import Console

from fedgaze.demo import FederationOptions, run_local_federation
from fedgaze.model.personal import load_personal_head
from fedgaze.model.store import load_model

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    run_dir = tmp_path_factory.mktemp("fed") / "run"
    out = io.StringIO()
    summary = run_local_federation(
        FederationOptions(nodes=3, rounds=2, run_dir=run_dir, seed=1, epsilon_budget=20.0),
        Console(file=out, width=200),
    )
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
    )
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

    from fedgaze.federation.cohort import provision_synthetic
    from fedgaze.federation.settings import ServerSettings
    from fedgaze.server.launcher import launch_federation

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
    assert outcome.server_result["rounds_completed"] == 1
