"""Ctrl-C on a running ``fedgaze demo`` stops every process it started (real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _processes_mentioning(text: str) -> list[int]:
    """Live processes other than this one whose command line or environment contain ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            # Flower's ServerApp names the run directory only in its environment (FLWR_HOME).
            seen = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if text.encode() in seen and state != "Z":
            found.append(int(entry.name))
    return found


def _wait_for(predicate: object, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.25)
    return False


def test_ctrl_c_stops_superlink_and_supernodes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    fedgaze = Path(sys.executable).with_name("fedgaze")
    demo = subprocess.Popen(
        [str(fedgaze), "demo", "--nodes", "2", "--rounds", "20", "--run-dir", str(run_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        started = _wait_for(lambda: (run_dir / "progress.jsonl").exists(), 120)
        assert started, "the federation never started"
        assert len(_processes_mentioning(str(run_dir))) >= 3  # superlink + 2 supernodes
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 130
        assert b"interrupted" in (demo.stderr.read() if demo.stderr else b"")
        assert _wait_for(lambda: not _processes_mentioning(str(run_dir)), 15), (
            _processes_mentioning(str(run_dir))
        )
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
        for pid in _processes_mentioning(str(run_dir)):
            os.kill(pid, signal.SIGKILL)
