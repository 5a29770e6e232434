"""``fedgaze client forget``: the right to erasure, on the device.

Erases every local trace of the person: the encrypted store and the capture journal, the store
key, the SuperNode authentication keys, the ledger signing key, the privacy state and the
signed ledger, the personal head, the last model, the logs, the agent's state and the Flower
apps the SuperNode received: the whole device folder, then the client config.

Order (crypto-erasure): the store key goes first, so from that moment the store and the
journal are ciphertext nobody can read, even where overwriting fails; then the other keys;
then every other file is overwritten with zeros, synced, and unlinked; then the folders. On an
SSD or a copy-on-write or journaling file system an overwrite need not reach the blocks that
held the old data, which is why the keys go first: what may survive of the store is encrypted
under a key that no longer exists. A crash part-way leaves less than before and ``forget`` can
simply be run again (the config, which names the folder, is erased last).

The privacy ledger holds no personal data (rounds, DP parameters, epsilon, a pseudonym), but it
is erased too, because it links this device to the server's records; afterwards the server's
ledger holds the only copy of the device's signed spending records.

Refused while the agent runs (it would write again); the agent's lock is held throughout, so
no agent can start part-way.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fedgaze.client.agent.config import ClientConfig
from fedgaze.client.agent.lock import agent_lock

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ForgetReport:
    """What was erased: file and byte counts, the keys (erased first), and the config."""

    device_dir: Path
    files: int
    bytes: int
    keys: tuple[Path, ...]
    config: Path | None


def erasure_order(keys: Iterable[Path], files: Iterable[Path]) -> list[Path]:
    """``keys`` in their order, then every other file of ``files`` (sorted) (pure)."""
    first = list(dict.fromkeys(keys))
    seen = set(first)
    return first + sorted(f for f in set(files) if f not in seen)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def shred(path: Path) -> int:
    """Overwrite the regular file ``path`` with zeros, sync it, and unlink it; a link or any
    other non-regular file is only unlinked (never followed). Returns the bytes overwritten;
    a missing file is 0."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return 0
    size = 0
    if stat.S_ISREG(info.st_mode):
        if not os.access(path, os.W_OK, follow_symlinks=False):
            os.chmod(path, stat.S_IMODE(info.st_mode) | stat.S_IWUSR)
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
        try:
            size = info.st_size
            zeros = bytes(min(size, _CHUNK))
            written = 0
            while written < size:
                written += os.write(fd, zeros[: size - written])
            os.fsync(fd)
        finally:
            os.close(fd)
    path.unlink()
    return size


def _files(root: Path) -> list[Path]:
    """Every non-directory entry under ``root`` (links not followed)."""
    out = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        out += [Path(folder) / n for n in names]
        # os.walk lists links to folders as folders: erase the link, do not descend.
        out += [Path(folder) / d for d in dirs if (Path(folder) / d).is_symlink()]
    return out


def _remove_folders(root: Path) -> None:
    for folder, _dirs, _names in sorted(os.walk(root), key=lambda w: -len(Path(w[0]).parts)):
        Path(folder).rmdir()
    _fsync_dir(root.parent)


def forget_device(config: ClientConfig, config_path: Path) -> ForgetReport:
    """Erase the device of ``config`` and then ``config_path``; see the module docstring."""
    layout = config.layout
    keys = list(dict.fromkeys([*layout.secrets(), config.auth_key]))
    erased = 0
    count = 0
    if layout.root.exists():
        with agent_lock(layout):
            for path in erasure_order(keys, _files(layout.root)):
                if not os.path.lexists(path):
                    continue
                erased += shred(path)
                count += 1
                if path in keys:
                    _fsync_dir(path.parent)  # the key is gone before anything else is touched
            _remove_folders(layout.root)
    else:
        for key in keys:  # a key configured outside the (already erased) folder
            erased += shred(key)
    config_erased = None
    if config_path.exists():
        erased += shred(config_path)
        _fsync_dir(config_path.parent)
        config_erased = config_path
    return ForgetReport(layout.root, count, erased, tuple(keys), config_erased)
