"""Submitting the fedgaze app to a running SuperLink and following the run to its end.

The fedgaze ServerApp and ClientApp are packaged as a minimal Flower app (``pyproject.toml``
only) whose components point into the installed ``fedgaze`` package, so nothing is installed at
run time. ``flwr run --stream`` submits it; the ServerApp's progress file tells how it goes.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedgaze.federation.events import Done, Failed, ProgressEvent, parse_event
from fedgaze.federation.flower import flower_executable
from fedgaze.federation.results import ServerResult
from fedgaze.federation.rundir import RunLayout
from fedgaze.federation.settings import ServerSettings
from fedgaze.processes import Supervisor, log_tail
from fedgaze.server.superlink import CONNECTION, FederationFailed

EventHandler = Callable[[ProgressEvent], None]


class ServerAppNotStarted(FederationFailed):
    """Flower ended the run before the fedgaze ServerApp wrote anything (it never ran)."""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def write_flower_app(app_dir: Path, settings: ServerSettings) -> None:
    """Write the Flower app (pyproject.toml only) whose run config carries ``settings``."""
    config = "\n".join(f"{k} = {_toml_value(v)}" for k, v in settings.to_run_config().items())
    app_dir.mkdir(parents=True, exist_ok=True)
    (app_dir / "pyproject.toml").write_text(
        f"""[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "fedgaze-run"
version = "1.0.0"
description = "fedgaze federation run (components come from the installed fedgaze package)"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "fedgaze"

[tool.flwr.app.components]
serverapp = "fedgaze.server.app:app"
clientapp = "fedgaze.client.app:app"

[tool.flwr.app.config]
{config}
""",
        encoding="utf-8",
    )


class ProgressTail:
    """Reads new complete lines of the ServerApp's progress file as they are appended (a
    resumed run's file already holds the earlier server's events: those are skipped)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.offset = path.stat().st_size
        except FileNotFoundError:
            self.offset = 0

    def poll(self) -> list[ProgressEvent]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        return [parse_event(json.loads(line)) for line in complete.splitlines() if line.strip()]


def run_app(
    sup: Supervisor,
    run_dir: Path,
    settings: ServerSettings,
    env: dict[str, str],
    on_event: EventHandler | None,
    deadline: float,
    drain: float,
    on_started: Callable[[Supervisor], None] | None = None,
) -> ServerResult:
    """Submit the fedgaze app with ``settings`` to the running SuperLink (``flwr run``),
    follow its progress until it is done (or ``deadline``, a ``time.monotonic()`` value), and
    return the ServerApp's result record."""
    layout = RunLayout(run_dir)
    write_flower_app(layout.flower_app, settings)
    for attempt in (1, 2):
        tail = ProgressTail(layout.progress)
        sup.start(
            "flwr-run",
            [flower_executable("flwr"), "run", str(layout.flower_app), CONNECTION, "--stream"],
            env,
        )
        if on_started is not None and attempt == 1:
            on_started(sup)
        try:
            _follow(sup, tail, on_event, deadline, env)
            break
        except ServerAppNotStarted:
            # Seen rarely with flwr 1.39: the SuperExec reports the ServerApp task failed
            # before it pulled its input. Nothing ran, so submitting again is safe.
            if attempt == 2:
                raise
            sup.stop("flwr-run")
    _drain(sup, drain)
    result_path = layout.result
    try:
        return ServerResult.from_json(json.loads(result_path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise FederationFailed(
            f"the ServerApp wrote no {result_path}; see {run_dir / 'logs'}"
        ) from None


def _run_status(sup: Supervisor, env: dict[str, str]) -> str | None:
    """The SuperLink's status of our run ("running", "finished:failed", ...), or None if unknown.

    Used only when ``flwr run --stream`` has ended early: its HTTP log stream can close while
    the run goes on, so its exit is no evidence that the run is over.
    """
    # The log is appended to when a run is submitted again: the last run started is ours.
    started = re.findall(r"started run (\d+)", sup.log_path("flwr-run").read_text(errors="replace"))
    if not started:
        return None
    try:
        proc = subprocess.run(
            [
                flower_executable("flwr"),
                "ls",
                CONNECTION,
                "--run-id",
                started[-1],
                "--format",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        runs = json.loads(proc.stdout)["runs"]
    except (subprocess.TimeoutExpired, json.JSONDecodeError, KeyError, TypeError):
        return None
    return str(runs[0]["status"]) if runs else None


def _follow(
    sup: Supervisor,
    tail: ProgressTail,
    on_event: EventHandler | None,
    deadline: float,
    env: dict[str, str],
    status_every: float = 5.0,
) -> None:
    seen = False

    def finished() -> bool:
        nonlocal seen
        for event in tail.poll():
            seen = True
            if on_event is not None:
                on_event(event)
            if isinstance(event, Failed):
                raise FederationFailed(f"the ServerApp failed: {event.error}")
            if isinstance(event, Done):
                return True
        return False

    next_status = 0.0
    while not finished():
        sup.check_alive("superlink")
        if sup.children["flwr-run"].poll() is not None and time.monotonic() >= next_status:
            next_status = time.monotonic() + status_every
            status = _run_status(sup, env)
            if status is not None and status.startswith("finished") and not finished():
                failure = FederationFailed if seen else ServerAppNotStarted
                raise failure(
                    f"the run ended ({status}) before the ServerApp finished; flwr run said:\n"
                    f"{log_tail(sup.log_path('flwr-run'))}"
                )
            if status is not None and status.startswith("finished"):
                return
        if time.monotonic() > deadline:
            raise FederationFailed("the run exceeded its time limit and was stopped")
        time.sleep(0.2)


def _drain(sup: Supervisor, limit: float) -> None:
    """Give ``flwr run`` a bounded moment to see the run finish before children are stopped."""
    with contextlib.suppress(Exception):
        sup.children["flwr-run"].wait(timeout=limit)
