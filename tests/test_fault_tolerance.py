"""A device that dies mid-run (SIGKILL of its SuperNode) does not stop the federation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_demo_interrupt import _processes_mentioning, _wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

ROUND_TIMEOUT = 60


def _supernode_of(run_dir: Path, device: str) -> int | None:
    """PID of the flower-supernode process that serves ``device`` of this run."""
    for pid in _processes_mentioning(str(run_dir)):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if any(b"flower-supernode" in part for part in cmd) and any(
            f'device-id="{device}"'.encode() in part for part in cmd
        ):
            return pid
    return None


def _events(run_dir: Path) -> list[dict[str, object]]:
    path = run_dir / "progress.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_sigkill_of_one_supernode_lets_every_round_finish(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    fedgaze = Path(sys.executable).with_name("fedgaze")
    demo = subprocess.Popen(
        [
            str(fedgaze),
            "demo",
            "--nodes",
            "3",
            "--rounds",
            "3",
            "--run-dir",
            str(run_dir),
            "--round-timeout",
            str(ROUND_TIMEOUT),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        first = _wait_for(lambda: any(e.get("event") == "round" for e in _events(run_dir)), 240)
        assert first, "round 1 never completed"
        round_one = next(e for e in _events(run_dir) if e.get("event") == "round")
        assert round_one["replies"] == 3, f"round 1 was not complete: {round_one}"
        trained = [d["device_id"] for d in round_one["devices"] if d["status"] == "trained"]
        assert trained, f"no device trained in round 1: {round_one}"
        name = trained[-1]
        victim = _supernode_of(run_dir, name)
        assert victim is not None, f"no SuperNode process for {name}"
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        assert demo.wait(timeout=300) == 0, demo.stderr.read() if demo.stderr else ""
        after_kill = time.monotonic() - killed_at
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(timeout=30)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds_completed"] == summary["rounds"] == 3
    by_id = {d["device_id"]: d for d in summary["devices"]}
    assert by_id[name]["rounds_participated"] == 1
    assert all(by_id[d]["rounds_participated"] == 3 for d in trained if d != name)
    rounds = json.loads((run_dir / "server_result.json").read_text())["rounds_log"]
    assert all(r["failures"] == [] for r in rounds[:1])
    # The dead device is given up on, either when the round's wait ends ("no reply within")
    # or when the SuperLink reports it unavailable (no heartbeat for 2 x 30 s); later rounds
    # then run with the two live devices only.
    assert rounds[1]["failures"] and rounds[1]["replies"] == 2
    assert all(r["replies"] == 2 for r in rounds[1:])
    # Rounds 2 and 3 and the final evaluation each wait at most ROUND_TIMEOUT for the dead
    # device, plus training and process start-up.
    assert after_kill < 3 * ROUND_TIMEOUT + 120
    print(f"demo finished {after_kill:.1f} s after the SIGKILL")
    assert _wait_for(lambda: not _processes_mentioning(str(run_dir)), 15)
