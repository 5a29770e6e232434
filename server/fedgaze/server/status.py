"""What an operator needs to know about a run, read from its directory: ``fedgaze server status``.

Everything comes from files the server writes durably (``progress.jsonl``, the signed server
ledger) and from ``/proc`` (whether the run's processes are alive), so it works while a run is
going, after it ended, and after a crash.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedgaze.server.app import PROGRESS_FILE
from fedgaze.server.ledger import SERVER_LEDGER_FILE


@dataclass(frozen=True)
class RunStatus:
    """A run's state: ``running``, ``finished``, ``failed``, ``stopped`` or ``not started``."""

    run_dir: Path
    state: str
    rounds_planned: int | None
    rounds_completed: int
    last_evaluation: dict[str, Any] | None
    failures: list[str] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)
    live_processes: list[int] = field(default_factory=list)
    ledger_records: int | None = None


def _events(path: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    if not path.exists():
        return events
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a torn last line of a crashed writer: everything before it holds
    return events


def _processes_of(run_dir: Path) -> list[int]:
    """PIDs of live processes whose command line names this run directory."""
    needle = str(run_dir.resolve()).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if needle in cmd and state != "Z":
            found.append(int(entry.name))
    return sorted(found)


def run_status(run_dir: str | Path) -> RunStatus:
    """Read the state of the run in ``run_dir``; FileNotFoundError when it is not a run."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: no such run directory")
    events = _events(run / PROGRESS_FILE)
    live = _processes_of(run)
    # A resumed run appends to the same file: the latest start plans the rounds, and a round
    # reported by both servers counts once (the later report).
    started = next((e for e in reversed(events) if e.get("event") == "started"), None)
    rounds = list({e.get("round"): e for e in events if e.get("event") == "round"}.values())
    evaluations = [e for e in events if e.get("event") == "evaluation"]
    last = events[-1]["event"] if events else None
    if last == "done":
        state = "finished"
    elif last == "failed":
        state = "failed"
    elif not events:
        state = "running" if live else "not started"
    else:
        state = "running" if live else "stopped"
    ledger = run / SERVER_LEDGER_FILE
    records = None
    if ledger.exists():
        from fedgaze.ledger.records import read_sqlite_lines

        records = len(read_sqlite_lines(ledger)[0])
    failed = next((e for e in reversed(events) if e.get("event") == "failed"), None)
    if failed is not None and last != "failed":
        failed = None  # an earlier server failed; a later one took over
    return RunStatus(
        run_dir=run,
        state=state,
        rounds_planned=started.get("rounds") if started else None,
        rounds_completed=len(rounds),
        last_evaluation=evaluations[-1] if evaluations else None,
        failures=[f for r in rounds for f in r.get("failures", [])]
        + ([str(failed.get("error", failed))] if failed else []),
        refused=[x for r in rounds for x in r.get("refused", [])],
        devices=rounds[-1].get("devices", []) if rounds else [],
        live_processes=live,
        ledger_records=records,
    )
