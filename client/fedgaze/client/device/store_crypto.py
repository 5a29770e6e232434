"""Encryption at rest of the device store: AES-256-GCM with a key file of the device's own.

Every stored file is ``MAGIC || nonce (12 bytes) || AES-GCM ciphertext and tag`` under one
256-bit key, with a fresh random nonce per write and associated data that binds the file's role
and name (so a file renamed, swapped with another, or moved into another role fails to decrypt).
Only ``cryptography``'s :class:`AESGCM` is used; nothing here is hand-written crypto.

The key lives in a key file (32 random bytes, mode 0600, created atomically and never
overwritten) that is kept next to, but outside, the store folder by default (``store.key`` in
the store's parent directory), so copying the store folder alone copies no readable data. A key
file that group or others may read or write is refused.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "KEY_BYTES",
    "KEY_FILE",
    "StoreCryptoError",
    "create_store_key",
    "decrypt_file",
    "default_key_path",
    "encrypt_file",
    "load_store_key",
]

KEY_FILE = "store.key"
KEY_BYTES = 32
NONCE_BYTES = 12
MAGIC = b"FGZENC1\n"
_AAD_PREFIX = b"fedgaze-device-store/v2|"


class StoreCryptoError(ValueError):
    """A key file is unsafe or invalid, or a stored file does not decrypt; names the file."""


def default_key_path(store_dir: str | Path) -> Path:
    """The default key file of the store at ``store_dir``: ``store.key`` beside the folder."""
    return Path(store_dir).absolute().parent / KEY_FILE


def _check_key_file(path: Path) -> bytes:
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise StoreCryptoError(f"{path}: store key is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise StoreCryptoError(
            f"{path}: store key file mode is {mode:04o}; it must be 0600 (owner only), because "
            f"anyone who can read it can read the device's data (fix: chmod 600 {path})"
        )
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise StoreCryptoError(f"{path}: a store key has {KEY_BYTES} bytes, this file {len(key)}")
    return key


def load_store_key(path: str | Path) -> bytes:
    """The 256-bit key in the key file at ``path``; :class:`StoreCryptoError` naming the file
    when it is missing, readable or writable by group or others, or not a key."""
    file = Path(path)
    try:
        return _check_key_file(file)
    except FileNotFoundError:
        raise StoreCryptoError(f"{file}: store key file missing") from None


def create_store_key(path: str | Path) -> bytes:
    """The key at ``path``, created first (32 random bytes, mode 0600) when the file is missing.

    The new key is written to a synced temporary file (created 0600) and linked into place, so
    a crash never leaves a partial key and a concurrent creator never overwrites one.
    """
    file = Path(path)
    if file.exists():
        return load_store_key(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".tmp", dir=file.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(secrets.token_bytes(KEY_BYTES))
            fh.flush()
            os.fsync(fh.fileno())
        # FileExistsError: another process created it first; use that one.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, file)
    finally:
        Path(tmp).unlink(missing_ok=True)
    dir_fd = os.open(file.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return load_store_key(file)


def _aad(role: str, name: str) -> bytes:
    return _AAD_PREFIX + role.encode() + b"|" + name.encode()


def encrypt_file(key: bytes, plaintext: bytes, *, role: str, name: str) -> bytes:
    """The stored form of ``plaintext`` as file ``name`` in role ``role`` (fresh nonce)."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, plaintext, _aad(role, name))


def decrypt_file(key: bytes, data: bytes, *, role: str, path: Path) -> bytes:
    """The plaintext of the stored file at ``path`` (read as ``data``) in role ``role``.

    Raises :class:`StoreCryptoError` naming ``path`` when it is not an encrypted store file, or
    does not decrypt: a wrong key, an altered byte, or a file swapped in from another name or
    role.
    """
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + NONCE_BYTES + 16:
        raise StoreCryptoError(f"{path}: not an encrypted device store file")
    nonce = data[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
    try:
        return AESGCM(key).decrypt(nonce, data[len(MAGIC) + NONCE_BYTES :], _aad(role, path.name))
    except InvalidTag:
        raise StoreCryptoError(
            f"{path}: does not decrypt (wrong store key, or the file was altered or swapped)"
        ) from None
