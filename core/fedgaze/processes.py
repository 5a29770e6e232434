"""Child-process supervision: every process in its own group, all of them gone on any exit.

Flower's SuperLink and SuperNodes spawn their own children (ServerApp, ClientApp processes).
Each child we start gets a new session, so killing its process group takes its descendants
too. Cleanup runs on normal exit, exceptions, Ctrl-C, SIGTERM and interpreter exit (atexit).
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from contextlib import closing, suppress
from pathlib import Path
from types import FrameType, TracebackType


class ProcessFailed(RuntimeError):
    """A supervised process exited or never became ready; the message quotes its log."""


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports on ``host`` that are free right now (the OS picks them).

    All sockets stay bound until every port is picked, so no port is handed out twice.
    """
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on ``host:port``."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def log_tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log file (empty if it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class Supervisor:
    """Starts named child processes with logs under ``log_dir`` and stops them all on exit."""

    def __init__(self, log_dir: Path, grace_seconds: float = 5.0) -> None:
        self.log_dir = log_dir
        self.grace_seconds = grace_seconds
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self._previous_sigterm: signal.Handlers | None = None
        log_dir.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Supervisor:
        atexit.register(self.stop_all)
        try:
            previous = signal.signal(signal.SIGTERM, _raise_system_exit)
            self._previous_sigterm = previous  # type: ignore[assignment]
        except ValueError:  # not the main thread: atexit and __exit__ still clean up
            self._previous_sigterm = None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
        atexit.unregister(self.stop_all)
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)

    def log_path(self, name: str) -> Path:
        """Where the child ``name`` writes its stdout and stderr."""
        return self.log_dir / f"{name}.log"

    def start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` as child ``name`` in a new process group, output to its log file."""
        if name in self.children:
            raise ValueError(f"a child named {name!r} is already running")
        with open(self.log_path(name), "ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        self.children[name] = proc
        return proc

    def check_alive(self, name: str) -> None:
        """Raise :class:`ProcessFailed` with the child's log tail if it has exited."""
        proc = self.children[name]
        code = proc.poll()
        if code is not None:
            raise ProcessFailed(
                f"{name} exited with code {code}; last log lines "
                f"({self.log_path(name)}):\n{log_tail(self.log_path(name))}"
            )

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to child ``name``'s whole process group (used by fault tests)."""
        _signal_group(self.children[name], sig)

    def stop(self, name: str) -> None:
        """Stop one child: SIGTERM to its group, then SIGKILL after the grace period."""
        proc = self.children.pop(name, None)
        if proc is not None:
            _terminate([proc], self.grace_seconds)

    def stop_all(self) -> None:
        """Stop every child still running (newest first); safe to call repeatedly."""
        procs = list(reversed(self.children.values()))
        self.children.clear()
        _terminate(procs, self.grace_seconds)


def _raise_system_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (read from /proc; empty where there is no /proc).

    Flower's SuperLink starts its ServerApp through ``flower-superexec`` in a session of its
    own, so killing the SuperLink's process group alone would orphan a running ServerApp.
    """
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _terminate(procs: Sequence[subprocess.Popen[bytes]], grace: float) -> None:
    strays = [d for proc in procs for d in descendants(proc.pid)]
    for proc in procs:
        _signal_group(proc, signal.SIGTERM)
    for pid in strays:
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        # The group may hold grandchildren even when the leader is gone.
        _signal_group(proc, signal.SIGKILL)
    for pid in strays:
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    for proc in procs:
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
