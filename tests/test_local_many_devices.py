"""Many devices on one machine: 16 IFLLM devices each train in every round of a local federated
run (real SuperLink, 16 SuperNodes, TLS), none lost to the machine's own load, because one warm
trainer answers every device's messages one at a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedgaze.cli.main import main
from shared_data import IFLLM_ROOT

DEVICES = 16
ROUNDS = 2

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.integration,
    pytest.mark.skipif(not IFLLM_ROOT.is_dir(), reason="IFLLM data not available"),
]


@pytest.mark.timeout(900)
def test_sixteen_ifllm_devices_all_train_in_every_round(tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = ["train", "--data", str(IFLLM_ROOT), "--out", str(tmp_path / "model")]
    argv += ["--mode", "federated", "--epsilon", "8", "--max-workers", str(DEVICES)]
    assert main([*argv, "--rounds", str(ROUNDS), "--run-dir", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["nodes"] == DEVICES and summary["rounds_completed"] == ROUNDS
    for entry in summary["rounds_log"]:
        assert entry["failures"] == [] and entry["refused"] == [], entry
        assert entry["train_devices"] == DEVICES, entry
    assert [d["status"] for d in summary["devices"]] == ["trained"] * DEVICES
    trainer_log = (run / "logs" / "trainer.log").read_text()
    assert trainer_log.count("trainer: train for ") == DEVICES * ROUNDS
