"""What an operator needs to know about a run, read from its directory: ``fedgaze server status``.

Everything comes from files the server writes durably (``progress.jsonl``, the signed server
ledger, the label store) and from ``/proc`` (whether the run's processes are alive), so it works
while a run is going, after it ended, and after a crash.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedgaze.federation.events import (
    DeviceEpsilon,
    Done,
    Evaluated,
    Failed,
    Labelled,
    ProgressEvent,
    RoundDone,
    Started,
    event_json,
    parse_event,
)
from fedgaze.federation.results import RefusedUpdate
from fedgaze.federation.rundir import RunLayout


@dataclass(frozen=True)
class RunStatus:
    """A run's state: ``running``, ``finished``, ``failed``, ``stopped`` or ``not started``."""

    run_dir: Path
    state: str
    rounds_planned: int | None
    rounds_completed: int
    last_evaluation: Evaluated | None
    failures: list[str] = field(default_factory=list)
    refused: list[RefusedUpdate] = field(default_factory=list)
    devices: list[DeviceEpsilon] = field(default_factory=list)
    live_processes: list[int] = field(default_factory=list)
    ledger_records: int | None = None
    labels_stored: int = 0
    """Preference labels in the run's label store (accepted releases, each once)."""
    labels_devices: int = 0

    def to_json(self) -> dict[str, Any]:
        """``fedgaze server status --json``."""
        return {
            "run_dir": str(self.run_dir),
            "state": self.state,
            "rounds_planned": self.rounds_planned,
            "rounds_completed": self.rounds_completed,
            "last_evaluation": (
                event_json(self.last_evaluation) if self.last_evaluation is not None else None
            ),
            "failures": list(self.failures),
            "refused": [r.to_json() for r in self.refused],
            "devices": [
                {"device_id": d.device_id, "epsilon": d.epsilon, "status": d.status}
                for d in self.devices
            ],
            "live_processes": list(self.live_processes),
            "ledger_records": self.ledger_records,
            "labels": {"stored": self.labels_stored, "devices": self.labels_devices},
        }


def _events(path: Path) -> list[ProgressEvent]:
    events: list[ProgressEvent] = []
    if not path.exists():
        return events
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            events.append(parse_event(json.loads(line)))
        except ValueError:
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


def _latest_devices(events: list[ProgressEvent]) -> list[DeviceEpsilon]:
    """Every device's epsilon as of the last round or labels round."""
    for event in reversed(events):
        if isinstance(event, RoundDone | Labelled):
            return list(event.devices)
    return []


def run_status(run_dir: str | Path) -> RunStatus:
    """Read the state of the run in ``run_dir``; FileNotFoundError when it is not a run."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: no such run directory")
    layout = RunLayout(run)
    events = _events(layout.progress)
    live = _processes_of(run)
    # A resumed run appends to the same file: the latest start plans the rounds, and a round
    # reported by both servers counts once (the later report).
    started = next((e for e in reversed(events) if isinstance(e, Started)), None)
    rounds = list({e.log.round: e for e in events if isinstance(e, RoundDone)}.values())
    evaluations = [e for e in events if isinstance(e, Evaluated)]
    last = events[-1] if events else None
    if isinstance(last, Done):
        state = "finished"
    elif isinstance(last, Failed):
        state = "failed"
    elif not events:
        state = "running" if live else "not started"
    else:
        state = "running" if live else "stopped"
    records = None
    if layout.server_ledger.exists():
        from fedgaze.ledger.records import read_sqlite_lines

        records = len(read_sqlite_lines(layout.server_ledger)[0])
    from fedgaze.labels.store import count_labels

    labels, label_devices = count_labels(layout.labels)
    # An earlier server's failure does not count when a later one took over.
    failed = last.error if isinstance(last, Failed) else None
    return RunStatus(
        run_dir=run,
        state=state,
        rounds_planned=started.rounds if started else None,
        rounds_completed=len(rounds),
        last_evaluation=evaluations[-1] if evaluations else None,
        failures=[f for r in rounds for f in r.log.failures] + ([failed] if failed else []),
        refused=[x for r in rounds for x in r.log.refused],
        devices=_latest_devices(events),
        live_processes=live,
        ledger_records=records,
        labels_stored=labels,
        labels_devices=label_devices,
    )
