"""Unit tests of the federation plumbing: settings, aggregation, splits, stores, processes."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fedgaze.data.split import chronological_split
from fedgaze.federation.settings import NodeSettings, ServerSettings, SettingsError
from fedgaze.model.store import ModelDirError, SavedModel, load_model, save_model
from fedgaze.processes import Supervisor, free_ports, port_in_use
from fedgaze.server.aggregate import fedavg, weighted_mean
from settings_factory import server_settings


def _server_settings(**kw: object) -> ServerSettings:
    return server_settings(**kw)


def test_server_settings_roundtrip_and_plan() -> None:
    s = _server_settings()
    assert ServerSettings.from_run_config(s.to_run_config()) == s
    plan = s.plan(2)
    assert plan.server_round == 2 and plan.noise_multiplier == 1.0 and plan.run_key == "k"


def test_settings_errors_name_the_key() -> None:
    flat = _server_settings().to_run_config()
    flat["round-timeout"] = -1
    with pytest.raises(SettingsError, match="round-timeout"):
        ServerSettings.from_run_config(flat)
    flat = _server_settings().to_run_config()
    flat["bogus-key"] = 1
    with pytest.raises(SettingsError, match="bogus-key"):
        ServerSettings.from_run_config(flat)


def test_node_config_arg_parses_like_flower() -> None:
    from flwr.common.config import parse_config_args

    node = NodeSettings(
        device_id="w1",
        device_dir="/d/w 1",
        data="/data",
        data_format="ifllm",
        worker="w1",
        epsilon_budget=8.0,
        delta=1e-5,
    )
    parsed = parse_config_args([node.to_node_config_arg()])
    assert NodeSettings.from_node_config(parsed) == node
    with pytest.raises(SettingsError):
        NodeSettings(
            device_id='a"b', device_dir="d", data="x", epsilon_budget=1, delta=1e-5
        ).to_node_config_arg()


def test_fedavg_weights_by_examples_and_skips_empty() -> None:
    a = {"w": np.array([0.0, 0.0], np.float32), "b": np.array([1.0], np.float32)}
    b = {"w": np.array([4.0, 8.0], np.float32), "b": np.array([3.0], np.float32)}
    out = fedavg([(a, 1), (b, 3), (a, 0)])
    np.testing.assert_allclose(out["w"], [3.0, 6.0])
    np.testing.assert_allclose(out["b"], [2.5])
    assert out["w"].dtype == np.float32
    with pytest.raises(ValueError):
        fedavg([(a, 0)])
    with pytest.raises(ValueError, match="names"):
        fedavg([(a, 1), ({"x": a["w"], "b": a["b"]}, 1)])
    assert weighted_mean([(1.0, 1), (3.0, 3)]) == 2.5
    assert weighted_mean([]) is None


@pytest.mark.parametrize(
    ("n", "holdout", "n_test"),
    [(0, 0.25, 0), (1, 0.25, 0), (2, 0.25, 1), (8, 0.25, 2), (9, 0.25, 3), (5, 0.0, 0)],
)
def test_chronological_split(n: int, holdout: float, n_test: int) -> None:
    train, test = chronological_split(list(range(n)), holdout)
    assert train + test == list(range(n))
    assert len(test) == n_test


def test_model_store_roundtrip_and_corruption(tmp_path: Path) -> None:
    saved = SavedModel(
        state={"a": np.arange(6, dtype=np.float32).reshape(2, 3)},
        feature_set="v1",
        n_features=3,
        hidden=2,
        provenance={"x": 1},
    )
    save_model(tmp_path / "m", saved)
    back = load_model(tmp_path / "m")
    np.testing.assert_array_equal(back.state["a"], saved.state["a"])
    assert back.provenance == {"x": 1}
    (blob,) = (tmp_path / "m").glob("weights-*.npz")
    blob.write_bytes(b"garbage")
    with pytest.raises(ModelDirError, match=rf"{blob.name}.*SHA-256"):
        load_model(tmp_path / "m")
    save_model(tmp_path / "m", saved)
    assert len(list((tmp_path / "m").glob("weights-*.npz"))) == 1  # old blob replaced
    with pytest.raises(ModelDirError, match=r"model\.json"):
        load_model(tmp_path / "nothing")


def test_supervisor_kills_whole_process_group(tmp_path: Path) -> None:
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    with Supervisor(tmp_path / "logs", grace_seconds=2) as sup:
        proc = sup.start("parent", [sys.executable, "-c", script])
        log = sup.log_path("parent")
        deadline = time.monotonic() + 20
        while not log.read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.1)
        grandchild = int(log.read_text().split()[0])
    assert proc.poll() is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not _alive(grandchild):
            break
        time.sleep(0.1)
    else:
        os.kill(grandchild, signal.SIGKILL)
        pytest.fail("grandchild survived the supervisor")


def _alive(pid: int) -> bool:
    """True when ``pid`` runs (a zombie waiting to be reaped counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_free_ports_are_free_and_distinct() -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20
    assert not any(port_in_use("127.0.0.1", p) for p in ports)


def test_replace_model_dir_refuses_non_model_dirs(tmp_path: Path) -> None:
    from fedgaze.cli.federation import replace_model_dir

    saved = SavedModel(
        state={"a": np.zeros(2, np.float32)}, feature_set="v1", n_features=1, hidden=1
    )
    save_model(tmp_path / "src", saved)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a fedgaze model directory"):
        replace_model_dir(tmp_path / "src", precious)
    assert (precious / "notes.txt").read_text() == "keep me"
    replace_model_dir(tmp_path / "src", tmp_path / "out")
    replace_model_dir(tmp_path / "src", tmp_path / "out")  # an earlier model is replaced
    assert load_model(tmp_path / "out").state["a"].shape == (2,)
