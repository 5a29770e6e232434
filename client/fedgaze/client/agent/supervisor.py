"""The client agent's process tree: start its children, restart a crashed one, stop them all.

``fedgaze client start`` runs :func:`run_agent` in the foreground (systemd runs it as a user
service). Each child (:class:`ChildSpec`: the capture service and the Flower SuperNode, see
:mod:`fedgaze.client.agent.children`) runs in its own process group with its output in
``device_dir/logs/<name>.log``. A child that exits is restarted after an exponential backoff
(:func:`restart_delay`); a child that exits ``max_crashes`` times within ``window`` seconds is
given up on: every child is stopped and :class:`AgentGaveUp` carries that child's log tail
(systemd's ``Restart=on-failure`` then decides). SIGTERM or SIGINT stops every child (SIGTERM
to each group, SIGKILL after a grace period) and the agent returns 0. The agent and its
children run under umask 077 in a device folder private to the person
(:mod:`fedgaze.client.device.private`).

The agent holds the device's lock (:mod:`fedgaze.client.agent.lock`) and rewrites a small state
file (:data:`STATE_FORMAT`, ``agent_state.json``: its pid, each child's pid, restarts and last
exit code) on every change, which ``client status`` reads. Children that a killed agent left
behind (their pids and start times are in the state file) are stopped before new ones start.
Nothing here logs data: only names, pids, exit codes and delays.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from fedgaze.atomic import append_line_durable, write_json_atomic
from fedgaze.client.agent.lock import agent_lock
from fedgaze.client.device.layout import DeviceLayout
from fedgaze.client.device.private import PRIVATE_UMASK, restrict_tree
from fedgaze.processes import Supervisor, descendants, log_tail

STATE_FORMAT = 1
AGENT_LOG = "agent.log"
LOG_ROTATE_BYTES = 10 * 1024 * 1024


class AgentGaveUp(RuntimeError):
    """A child kept crashing; the message names it and quotes its log."""


@dataclass(frozen=True)
class ChildSpec:
    """One supervised child: a name (its log file), its argv and its environment."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] | None = None


@dataclass(frozen=True)
class RestartPolicy:
    """Exponential backoff between restarts, and when to give up."""

    first_delay: float = 1.0
    factor: float = 2.0
    max_delay: float = 60.0
    max_crashes: int = 5
    window: float = 300.0
    grace: float = 10.0
    """Seconds a child has to exit after SIGTERM (the capture service commits its data)."""


def restart_delay(crashes: Sequence[float], now: float, policy: RestartPolicy) -> float | None:
    """Seconds to wait before restarting a child that crashed at the (monotonic) times
    ``crashes``, the latest included; None when it crashed ``max_crashes`` times within
    ``window`` seconds and should be given up on (pure)."""
    recent = sum(1 for t in crashes if now - t <= policy.window)
    if recent >= policy.max_crashes:
        return None
    return float(min(policy.max_delay, policy.first_delay * policy.factor ** max(0, recent - 1)))


@dataclass
class _Child:
    spec: ChildSpec
    pid: int | None = None
    started: str | None = None
    restarts: int = 0
    last_exit: int | None = None
    crashes: list[float] = field(default_factory=list)
    restart_at: float | None = None


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def process_start_ticks(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot; None when it is gone or
    a zombie (it has exited). With the pid it identifies a process even after pid reuse."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _event(layout: DeviceLayout, text: str) -> None:
    append_line_durable(layout.logs / AGENT_LOG, f"{_now_iso()} {text}")


def _rotate(path: Path, limit: int = LOG_ROTATE_BYTES) -> None:
    """Keep one older log: ``name.log`` over ``limit`` bytes becomes ``name.log.1``."""
    with suppress(FileNotFoundError):
        if path.stat().st_size > limit:
            os.replace(path, path.with_name(path.name + ".1"))


def state_record(children: Sequence[_Child], state: str) -> dict[str, Any]:
    """The state file's content (pure apart from reading the children's start times)."""
    return {
        "format": STATE_FORMAT,
        "state": state,
        "pid": os.getpid(),
        "pid_start": process_start_ticks(os.getpid()),
        "updated": _now_iso(),
        "children": {
            c.spec.name: {
                "pid": c.pid,
                "pid_start": process_start_ticks(c.pid) if c.pid is not None else None,
                "started": c.started,
                "restarts": c.restarts,
                "last_exit": c.last_exit,
            }
            for c in children
        },
    }


def read_state(layout: DeviceLayout) -> dict[str, Any] | None:
    """The agent's last state file, or None when there is none or it is unreadable."""
    try:
        data = json.loads(layout.state.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def stop_stale_children(layout: DeviceLayout, grace: float) -> list[int]:
    """Stop the children a killed agent left running (same pid *and* start time as recorded in
    the state file); returns their pids."""
    state = read_state(layout) or {}
    stale = []
    for child in (state.get("children") or {}).values():
        pid, start = child.get("pid"), child.get("pid_start")
        if isinstance(pid, int) and start is not None and process_start_ticks(pid) == start:
            stale.append(pid)
    strays = [d for pid in stale for d in descendants(pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in stale:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
        for pid in strays:
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while sig == signal.SIGTERM and time.monotonic() < deadline:
            if all(process_start_ticks(p) is None for p in stale + strays):
                break
            time.sleep(0.1)
    return stale


class _StopOnSignal:
    """SIGTERM, SIGINT and SIGHUP (a closed terminal) set ``event`` while installed: the main
    loop then stops the tree."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.event.set()

    def __enter__(self) -> _StopOnSignal:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: only ``event`` stops the agent
                break
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _start(sup: Supervisor, child: _Child, layout: DeviceLayout) -> None:
    _rotate(sup.log_path(child.spec.name))
    proc = sup.start(child.spec.name, child.spec.argv, child.spec.env)
    child.pid, child.started, child.restart_at = proc.pid, _now_iso(), None
    _event(layout, f"started {child.spec.name} pid {proc.pid}")


def _reap(sup: Supervisor, child: _Child, layout: DeviceLayout, policy: RestartPolicy) -> None:
    """Handle a child that exited: schedule its restart, or raise :class:`AgentGaveUp`."""
    name = child.spec.name
    code = sup.children[name].poll()
    sup.stop(name)  # its group may still hold grandchildren
    now = time.monotonic()
    child.last_exit, child.pid = code, None
    child.crashes.append(now)
    delay = restart_delay(child.crashes, now, policy)
    if delay is None:
        _event(layout, f"{name} exited with code {code}; giving up")
        raise AgentGaveUp(
            f"{name} exited {len(child.crashes)} times within {policy.window:g} s (last exit "
            f"code {code}); gave up. Last log lines ({sup.log_path(name)}):\n"
            f"{log_tail(sup.log_path(name))}"
        )
    child.restart_at = now + delay
    _event(layout, f"{name} exited with code {code}; restarting in {delay:g} s")


def _tick(
    sup: Supervisor, children: Sequence[_Child], layout: DeviceLayout, policy: RestartPolicy
) -> bool:
    """Reap the children that exited and restart those whose backoff is over; True when
    anything changed."""
    changed = False
    for child in children:
        if child.restart_at is None:
            if sup.children[child.spec.name].poll() is not None:
                _reap(sup, child, layout, policy)
                changed = True
        elif time.monotonic() >= child.restart_at:
            _start(sup, child, layout)
            child.restarts += 1
            changed = True
    return changed


def run_agent(
    specs: Sequence[ChildSpec],
    layout: DeviceLayout,
    policy: RestartPolicy | None = None,
    stop: threading.Event | None = None,
    poll: float = 0.2,
) -> int:
    """Run ``specs`` under supervision until SIGTERM/SIGINT/SIGHUP (or ``stop``); returns 0.

    Raises :class:`AgentGaveUp` when a child crashes too often, and
    :class:`~fedgaze.client.agent.lock.AgentRunning` when another agent runs for the device.
    Every child is stopped before this returns or raises. The process's umask becomes
    :data:`~fedgaze.client.device.private.PRIVATE_UMASK` and the device folder is made private
    first (:func:`~fedgaze.client.device.private.restrict_tree`).
    """
    policy = policy or RestartPolicy()
    stop = stop or threading.Event()
    if len({s.name for s in specs}) != len(specs):
        raise ValueError("child names must be distinct")
    children = [_Child(spec) for spec in specs]
    os.umask(PRIVATE_UMASK)
    restrict_tree(layout.root)
    with agent_lock(layout):
        stop_stale_children(layout, policy.grace)
        state = "running"
        with Supervisor(layout.logs, grace_seconds=policy.grace) as sup, _StopOnSignal(stop):
            _event(layout, f"agent pid {os.getpid()} starting {[s.name for s in specs]}")
            try:
                for child in children:
                    _start(sup, child, layout)
                write_json_atomic(layout.state, state_record(children, state))
                while not stop.is_set():
                    if _tick(sup, children, layout, policy):
                        write_json_atomic(layout.state, state_record(children, state))
                    stop.wait(poll)
                state = "stopped"
            except AgentGaveUp:
                state = "failed"
                raise
            finally:
                state = "failed" if state == "running" else state  # an unexpected error
                sup.stop_all()
                for child in children:
                    child.pid = None
                write_json_atomic(layout.state, state_record(children, state))
                _event(layout, f"agent pid {os.getpid()} {state}; every child stopped")
    return 0
