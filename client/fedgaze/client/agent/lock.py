"""One agent per device: an exclusive ``flock`` on ``agent.lock`` in the device folder.

The running agent holds the lock for its whole life; the kernel releases it when the process
dies, however it dies, so a crashed agent never leaves a stale "running" behind. Commands that
must not run beside the agent (``forget``, ``enroll --force``) take or test the same lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from fedgaze.client.device.layout import DeviceLayout


class AgentRunning(RuntimeError):
    """The device's agent is running (its lock is held); the message says how to stop it."""


@contextlib.contextmanager
def agent_lock(layout: DeviceLayout) -> Iterator[None]:
    """Hold the device's agent lock for the ``with`` block; :class:`AgentRunning` if held."""
    layout.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AgentRunning(
                f"the fedgaze client agent of {layout.root} is running; stop it first "
                "(systemctl --user stop fedgaze-client, or Ctrl-C where it runs)"
            ) from None
        yield
    finally:
        os.close(fd)


def agent_running(layout: DeviceLayout) -> bool:
    """True while an agent holds the lock of ``layout`` (creates no file)."""
    try:
        fd = os.open(layout.lock, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing also releases a lock this call took
    return False
