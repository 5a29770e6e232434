"""``fedgaze server status``: a run's state from its durable files, including after a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedgaze.cli.main import main
from fedgaze.server.status import run_status


def _progress(run: Path, events: list[dict[str, object]], torn: str = "") -> None:
    run.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(e) + "\n" for e in events) + torn
    (run / "progress.jsonl").write_text(text)


STARTED = [{"event": "waiting"}, {"event": "started", "nodes": 2, "rounds": 3}]
ROUND = {
    "event": "round",
    "round": 1,
    "failures": ["node 5: no reply within 60 s"],
    "refused": [{"device_id": "d1", "reason": "update refused: net.0.bias: 1 NaN value"}],
    "devices": [{"device_id": "d0", "epsilon": 1.5, "status": "trained"}],
}
EVAL = {"event": "evaluation", "round": 1, "accuracy": 0.625, "eval_examples": 8}


def test_states_from_the_progress_file(tmp_path: Path) -> None:
    assert run_status(tmp_path).state == "not started"
    _progress(tmp_path / "done", [*STARTED, ROUND, EVAL, {"event": "done"}])
    done = run_status(tmp_path / "done")
    assert done.state == "finished" and done.rounds_completed == 1 and done.rounds_planned == 3
    assert done.last_evaluation is not None and done.last_evaluation.evaluation.accuracy == 0.625
    assert done.failures == ["node 5: no reply within 60 s"]
    assert done.refused[0].reason.endswith("1 NaN value")
    # A crashed server: no live process, no "done", and a torn last line.
    _progress(tmp_path / "crashed", [*STARTED, ROUND], torn='{"event": "rou')
    crashed = run_status(tmp_path / "crashed")
    assert crashed.state == "stopped" and crashed.rounds_completed == 1
    _progress(tmp_path / "failed", [*STARTED, {"event": "failed", "error": "NotEnoughNodes: x"}])
    failed = run_status(tmp_path / "failed")
    assert failed.state == "failed" and failed.failures == ["NotEnoughNodes: x"]
    with pytest.raises(FileNotFoundError):
        run_status(tmp_path / "missing")


def test_status_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _progress(tmp_path / "done", [*STARTED, ROUND, EVAL, {"event": "done"}])
    assert main(["server", "status", str(tmp_path / "done")]) == 0
    out = capsys.readouterr().out
    assert "finished, 1/3 rounds" in out and "accuracy 0.625" in out and "NaN" in out
    _progress(tmp_path / "crashed", [*STARTED, ROUND])
    assert main(["server", "status", str(tmp_path / "crashed"), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["state"] == "stopped"
