"""Pause and resume of a device: one marker file in the device folder that every part honours.

``fedgaze client pause`` creates ``device_dir/PAUSED``; while it exists the capture service
records nothing (it refuses samples with a reason) and the ClientApp takes part in no training.
A file, not process state, so the pause survives restarts and holds for every process at once.
"""

from __future__ import annotations

import os
from pathlib import Path

PAUSE_FILE = "PAUSED"


def pause_path(device_dir: str | Path) -> Path:
    """Where the pause marker of ``device_dir`` lives."""
    return Path(device_dir) / PAUSE_FILE


def is_paused(device_dir: str | Path) -> bool:
    """True while the person has paused capture and training on this device."""
    return pause_path(device_dir).exists()


def set_paused(device_dir: str | Path, paused: bool) -> None:
    """Pause (create the marker, durably) or resume (remove it); idempotent."""
    path = pause_path(device_dir)
    if paused:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.fchmod(fd, 0o600)  # private like the rest of the device folder
            os.fsync(fd)
        finally:
            os.close(fd)
    else:
        path.unlink(missing_ok=True)
