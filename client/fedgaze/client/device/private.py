"""Keep a device folder private to the person who owns it: nobody else may read or enter it.

The folder holds biometric traces, keys, logs and Flower's state. :func:`restrict_tree` takes
group and other permissions off the folder and everything in it (what older versions or a
careless copy left readable); :data:`PRIVATE_UMASK` is the umask the agent runs under, so what
it and its children (the capture service, the SuperNode and each ``flwr-clientapp``) create
later is private from the start, whatever mode their code asks for.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["PRIVATE_UMASK", "public_entries", "restrict_tree"]

PRIVATE_UMASK = 0o077
"""Creation mask: no permission for group or others."""
_OTHERS = stat.S_IRWXG | stat.S_IRWXO


def _walk(root: Path) -> list[Path]:
    if not root.exists():
        return []
    found = [root]
    for folder, dirs, files in os.walk(root):  # does not follow links to folders
        found += [Path(folder, name) for name in (*dirs, *files)]
    return found


def restrict_tree(root: Path) -> list[Path]:
    """Remove group and other permissions from ``root`` and everything under it; returns the
    paths it changed. Symbolic links are neither followed nor changed."""
    changed = []
    for path in _walk(root):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode) or not info.st_mode & _OTHERS:
            continue
        os.chmod(path, stat.S_IMODE(info.st_mode) & ~_OTHERS)
        changed.append(path)
    return changed


def public_entries(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (itself included) that group or others may use, as its
    path relative to ``root`` and its ``ls -l`` mode; links are skipped."""
    out = {}
    for path in _walk(root):
        info = path.lstat()
        if not stat.S_ISLNK(info.st_mode) and info.st_mode & _OTHERS:
            out[str(path.relative_to(root))] = stat.filemode(info.st_mode)
    return out
