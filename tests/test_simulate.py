"""``fedgaze simulate``: the deployed ServerApp and ClientApp code on Flower's simulation engine.

Fast: the spec's refusals and the lazy, deterministic device provisioning. Slow: a real Ray
simulation of 6 devices for 2 rounds through the command line, each device sampled with
probability 0.5 per round and client-level DP on, whose run folder holds every device's own
state and ledgers, verifies with ``fedgaze audit verify`` (the client-level DP epsilon
recomputed with the sampling rate) and whose summary says it ran on the simulation engine and
how many devices each round sampled; and Ctrl-C during a run stops it within the run, and
Ray's servers, its actors and every other child with it; a device that raises is one named
failure; the in-process loop replays a run bit for bit; and secure aggregation runs on the engine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from fedgaze.client.capture.fold import fingerprint
from fedgaze.client.device.layout import DeviceLayout
from fedgaze.client.device.store import load_device
from fedgaze.client.local_rows import behaviour_rows
from fedgaze.federation.rundir import RunLayout
from fedgaze.federation.settings import NodeSettings, ServerSettings
from fedgaze.ledger.contract import RecordKind
from fedgaze.ledger.records import verify_sqlite
from fedgaze.local.simulate import MAX_DEVICES, SimulationSpec, device_node, node_settings
from fedgaze.local.simulation import DeviceRows, SimulationPlan, simulate_federation
from fedgaze.model.store import load_model
from fedgaze.privacy.state import PrivacyState, RoundAlreadyCharged
from fedgaze.processes import descendants


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"devices": 0}, "devices"),
        ({"devices": MAX_DEVICES + 1}, "devices"),
        ({"devices": 2, "rounds": 0}, "rounds"),
        ({"devices": 2, "epsilon": 0}, "epsilon"),
        ({"devices": 2, "delta": 1.0}, "delta"),
        ({"devices": 2, "fraction": 0.0}, "fraction"),
        ({"devices": 2, "fraction": 1.5}, "fraction"),
        ({"devices": 2, "client_dp_epsilon": -1}, "client_dp_epsilon"),
    ],
)
def test_a_bad_spec_is_refused_naming_the_field(
    tmp_path: Path, fields: dict[str, object], match: str
) -> None:
    with pytest.raises(ValidationError, match=match):
        SimulationSpec(run_dir=tmp_path, **fields)  # type: ignore[arg-type]


def test_devices_are_provisioned_on_first_use_and_deterministically(tmp_path: Path) -> None:
    env = {"run_dir": str(tmp_path / "a"), "seed": 3, "epsilon": 8.0, "delta": 1e-5}
    node = device_node(7, env)
    assert node.device_id == "sim-00007" and Path(node.device_dir).is_dir()
    assert not (tmp_path / "a" / "devices" / "sim-00000").exists()  # only what was asked for

    def data(n: NodeSettings) -> str:
        return fingerprint(load_device(n.data, key_path=n.store_key))

    first = data(node)
    assert data(device_node(7, env)) == first  # reuses the store
    assert data(device_node(7, {**env, "run_dir": str(tmp_path / "b")})) == first  # (seed, id)
    assert data(device_node(8, env)) != first


def _loopback_only() -> list[str] | None:
    """A command prefix that runs in a new network namespace with only loopback up (Ray's
    servers listen on every interface: there, every interface is loopback), or None."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None
    probe = subprocess.run(
        ["unshare", "--net", "ip", "link", "set", "lo", "up"], capture_output=True, timeout=30
    )
    return (
        ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
        if (probe.returncode == 0)
        else None
    )


@pytest.fixture
def prefix() -> list[str]:
    """The loopback-only namespace prefix; the test is skipped where none can be made."""
    found = _loopback_only()
    if found is None:
        pytest.skip("needs unshare and ip (a loopback-only network namespace) for Ray's servers")
    return found


def engine_run(test: Callable[..., None]) -> Callable[..., None]:
    """Marks a test that runs ``fedgaze simulate`` on Ray (slow; needs flwr[simulation])."""
    for mark in (
        pytest.mark.slow,
        pytest.mark.integration,
        pytest.mark.timeout(300),
        pytest.mark.skipif(not importlib.util.find_spec("ray"), reason="needs flwr[simulation]"),
    ):
        test = mark(test)
    return test


@engine_run
def test_simulate_runs_the_real_apps_and_verifies(tmp_path: Path, prefix: list[str]) -> None:
    run_dir = tmp_path / "sim"
    args = ["simulate", "--devices", "6", "--rounds", "2", "--run-dir", str(run_dir)]
    args += ["--cpus", "2", "--fraction", "0.5", "--client-dp-epsilon", "8"]
    cli = [*prefix, sys.executable, "-m", "fedgaze.cli"]
    done = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "round 2:" in done.stdout and "2/2 rounds on 6 simulated devices" in done.stdout
    assert "client-level DP epsilon 8 per person" in done.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["engine"] == "simulation" and summary["nodes"] == 6
    assert summary["fraction"] == 0.5 and summary["rounds_completed"] == 2
    sampled = summary["sampled_per_round"]
    assert len(sampled) == 2 and all(0 <= n <= 6 for n in sampled)
    assert [r["sampled"] for r in summary["rounds_log"]] == sampled
    assert summary["client_dp"]["sample_rate"] == 0.5  # the accounting credits the sampling
    logs = summary["rounds_log"]
    assert all(r["replies"] == r["sampled"] and r["train_devices"] <= r["sampled"] for r in logs)
    participated = sum(d["rounds_participated"] for d in summary["devices"])
    assert participated == sum(r["train_devices"] for r in logs)  # only sampled devices trained
    trained = [d for d in summary["devices"] if d["status"] == "trained"]
    assert all(0 < d["epsilon"] <= 8.0 for d in trained)
    for device in trained:  # the device's own state agrees with what the server saw
        assert device["epsilon_device_state"] == pytest.approx(device["epsilon"], rel=1e-9)
    folders = run_dir / "devices"
    provisioned = {p.name for p in folders.iterdir()} if folders.exists() else set()
    assert provisioned <= {f"sim-0000{i}" for i in range(6)}  # only devices that got a message
    assert len(provisioned) >= max(sampled)
    verify = subprocess.run(
        [sys.executable, "-m", "fedgaze.cli", "audit", "verify", str(run_dir)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert verify.returncode == 0 and "every record holds" in verify.stdout
    again = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "is not empty" in again.stderr  # nothing is mixed


@engine_run
def test_ctrl_c_stops_the_simulation_and_every_process(tmp_path: Path, prefix: list[str]) -> None:
    run_dir = tmp_path / "sim"
    args = ["simulate", "--devices", "4", "--rounds", "200", "--run-dir", str(run_dir)]
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-m", "fedgaze.cli", *args, "--cpus", "2"],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: set[int] = set()
    progress = run_dir / "progress.jsonl"
    deadline = time.monotonic() + 180
    try:
        while not (progress.exists() and '"event": "round"' in progress.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, "no round started"
            seen |= {proc.pid, *descendants(proc.pid)}
            time.sleep(0.2)
        seen |= {proc.pid, *descendants(proc.pid)}
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == 130 and "interrupted" in output, output[-2000:]
    rounds = progress.read_text().count('"event": "round"')
    assert rounds < 200  # stopped within the run, not after it
    time.sleep(2)
    assert len(seen) > 3  # Ray's servers and actors were among the children
    alive = [p for p in seen if Path(f"/proc/{p}").exists()]
    assert alive == [], [Path(f"/proc/{p}/cmdline").read_bytes() for p in alive]


RAISING_DEVICE = """
import sys
from pathlib import Path
from fedgaze.cli.main import main
from fedgaze.local import simulate

real = simulate.run_and_report

def broken_first(grid, settings):
    store = Path(settings.run_dir) / "devices" / "sim-00001" / "store"
    store.mkdir(parents=True)
    (store / simulate.MANIFEST).write_bytes(b"not a store")  # device 1 raises on every message
    return real(grid, settings)

simulate.run_and_report = broken_first
sys.exit(main(sys.argv[1:]))
"""


@engine_run
def test_a_device_that_raises_is_a_named_failure_not_a_crashed_run(
    tmp_path: Path, prefix: list[str]
) -> None:
    run_dir = tmp_path / "sim"
    args = ["simulate", "--devices", "3", "--rounds", "1", "--run-dir", str(run_dir)]
    done = subprocess.run(
        [*prefix, sys.executable, "-c", RAISING_DEVICE, *args, "--cpus", "2"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds_completed"] == 1
    (round_1,) = summary["rounds_log"]
    (failure,) = round_1["failures"]
    assert "sim-00001" in failure and "StoreError" in failure, failure  # which device, and why
    assert round_1["replies"] == 2
    assert {d["device_id"] for d in summary["devices"] if d["rounds_participated"]} <= {
        "sim-00000",
        "sim-00002",
    }


@engine_run
def test_the_in_process_loop_computes_bit_for_bit_what_the_simulated_apps_did(
    tmp_path: Path, prefix: list[str]
) -> None:
    """The benchmarks' in-process loop (``fedgaze.local.simulation``) replays a ``fedgaze
    simulate`` run: every device round with the noise seed the device recorded, refused unless
    its starting global model, rows and settings are the real round's, and its output the
    weights the device sent; the loop's final model is then the run's final model."""
    run_dir = tmp_path / "sim"
    args = ["simulate", "--devices", "5", "--rounds", "3", "--epsilon", "8", "--run-dir"]
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "fedgaze.cli", *args, str(run_dir), "--cpus", "2"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ledger = verify_sqlite(RunLayout(run_dir).server_ledger)
    (start,) = [r.body for r in ledger.records if r.kind == RecordKind.RUN_START]
    settings = ServerSettings(**start["settings"])
    env = {"run_dir": str(run_dir), "seed": settings.seed, "epsilon": 8.0, "delta": 1e-5}
    rows, recorded = [], {}
    for node in (node_settings(i, env) for i in range(5)):
        local = behaviour_rows(node, settings.holdout)
        rows.append(DeviceRows(node.device_id, local.train_X, local.train_y))
        recorded[node.device_id] = PrivacyState.load(
            DeviceLayout(Path(node.device_dir)).privacy_state
        )
    plan = SimulationPlan(
        mode="device_dp",
        device_epsilon=8.0,
        delta=1e-5,
        run_key=settings.run_key,
        **settings.model_dump(
            include={
                "rounds",
                "hidden",
                "seed",
                "max_grad_norm",
                "batch_size",
                "local_epochs",
                "lr",
            }
        ),
    )
    result = simulate_federation(rows, plan, recorded)
    summary = json.loads((run_dir / "summary.json").read_text())
    device_rounds = sum(r["train_devices"] for r in summary["rounds_log"])
    assert device_rounds >= 6 and result.replayed == device_rounds
    assert result.noise_multiplier == settings.noise_multiplier
    final = load_model(RunLayout(run_dir).model).state
    assert final.keys() == result.state.keys()
    for name, weights in final.items():
        assert np.array_equal(weights, result.state[name]), name
    with pytest.raises(RoundAlreadyCharged):  # the check can fail: other settings, other rounds
        simulate_federation(rows, plan.model_copy(update={"lr": plan.lr * 2}), recorded)


@engine_run
def test_simulate_runs_secure_aggregation_on_the_engine(tmp_path: Path, prefix: list[str]) -> None:
    run_dir = tmp_path / "sim"
    args = ["simulate", "--devices", "4", "--rounds", "2", "--secagg", "--run-dir", str(run_dir)]
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "fedgaze.cli", *args, "--cpus", "2"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "secure aggregation (SecAgg+)" in done.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["secure_aggregation"] is True
    assert summary["secure_aggregation_params"]["threshold"] == 3
    assert all(r["failures"] == [] and r["replies"] == 4 for r in summary["rounds_log"])
    before = load_model(RunLayout(run_dir).checkpoint(0)).state
    after = load_model(RunLayout(run_dir).checkpoint(2)).state
    assert any(not np.array_equal(before[k], after[k]) for k in before)  # the sums were applied
    verify = subprocess.run(
        [sys.executable, "-m", "fedgaze.cli", "audit", "verify", str(run_dir)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert verify.returncode == 0 and "every record holds" in verify.stdout
