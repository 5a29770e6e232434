"""Ed25519 signing keys of devices and servers (``cryptography`` only; no hand-written crypto).

A key file is an unencrypted PEM (PKCS#8) private key, created atomically with mode 0600. A key
file that group or others may read (or write) is refused: whoever can read it can sign ledger
records in the owner's name. The public key travels as standard base64 of its 32 raw bytes; its
:func:`pseudonym` (16 hex chars of its SHA-256) names a device in server-side records.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedgaze.atomic import write_bytes_atomic

__all__ = [
    "KeyFileError",
    "load_or_create_signing_key",
    "load_public_key_b64",
    "pseudonym",
    "public_key_b64",
]


class KeyFileError(ValueError):
    """A key file is unsafe (mode wider than 0600) or not an Ed25519 private key; names it."""


def _check_mode(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"{path}: key file mode is {mode:04o}; it must be 0600 (owner only), because anyone "
            f"who can read it can sign in its owner's name (fix: chmod 600 {path})"
        )


def load_or_create_signing_key(path: str | Path) -> Ed25519PrivateKey:
    """The Ed25519 key at ``path``, created (mode 0600, atomically) when the file is missing.

    Raises :class:`KeyFileError` naming the file when it is readable or writable by group or
    others, or is not an unencrypted PEM Ed25519 private key.
    """
    file = Path(path)
    if not file.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_bytes_atomic(file, pem)  # temporary file is created 0600, then renamed
        os.chmod(file, 0o600)
        return key
    _check_mode(file)
    try:
        loaded = serialization.load_pem_private_key(file.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise KeyFileError(f"{file}: not an unencrypted PEM private key ({err})") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise KeyFileError(f"{file}: not an Ed25519 key ({type(loaded).__name__})")
    return loaded


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """Standard base64 of the 32 raw bytes of ``key``'s public key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def strict_b64decode(text: str) -> bytes:
    """Decode canonical standard base64 only: re-encoding must give ``text`` back exactly.

    Plain decoding ignores the unused low bits of the last character, so two different strings
    can decode to the same bytes; a ledger must not accept such a silent edit.
    """
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as err:
        raise ValueError(f"not base64 ({err})") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("not canonical base64")
    return raw


def load_public_key_b64(text: str) -> Ed25519PublicKey:
    """The Ed25519 public key encoded by :func:`public_key_b64`; ValueError if it is not one."""
    raw = strict_b64decode(text)
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def pseudonym(public_key: str) -> str:
    """Pseudonymous id of a key: the first 16 hex chars of SHA-256 of its raw public bytes."""
    return hashlib.sha256(strict_b64decode(public_key)).hexdigest()[:16]
