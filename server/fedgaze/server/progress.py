"""The ServerApp's progress file: one fsynced JSON line per event, appended as the run goes."""

from __future__ import annotations

import json
from pathlib import Path

from fedgaze.atomic import append_line_durable
from fedgaze.federation.events import ProgressEvent, event_json
from fedgaze.federation.rundir import RunLayout


def emit(run_dir: Path, event: ProgressEvent) -> None:
    """Append ``event`` to the run's progress file (the launcher and ``server status`` read it)."""
    append_line_durable(RunLayout(run_dir).progress, json.dumps(event_json(event)))
