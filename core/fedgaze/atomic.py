"""Crash-safe file writes: a reader sees the old content or the new one, never a torn file."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Any


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _replacing(path: str | Path, text: bool) -> Iterator[IO[Any]]:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        fh = os.fdopen(fd, "w", encoding="utf-8", newline="\n") if text else os.fdopen(fd, "wb")
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def remove_leftovers(path: str | Path) -> None:
    """Remove the temporary files a writer of ``path`` left when it was killed mid-write.

    Call only where no other writer of ``path`` can be running (its own private folder)."""
    target = Path(path)
    for leftover in target.parent.glob(f".{target.name}.*.tmp"):
        leftover.unlink(missing_ok=True)


def text_replacing(path: str | Path) -> AbstractContextManager[IO[str]]:
    """A UTF-8 text file that replaces ``path`` only when the block completes without error
    (written to a synced temporary file beside it and renamed, as :func:`write_bytes_atomic`)."""
    return _replacing(path, text=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a synced temporary file and an atomic rename."""
    with _replacing(path, text=False) as fh:
        fh.write(data)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically (see :func:`write_bytes_atomic`)."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def append_line_durable(path: str | Path, line: str) -> None:
    """Append one line to a log file and fsync it, so a committed line survives a crash."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(line.rstrip("\n") + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def commit_blob_with_manifest(
    directory: str | Path, prefix: str, blob: bytes, manifest_name: str, manifest: dict[str, Any]
) -> str:
    """Store ``blob`` under a content-addressed name, then point ``manifest_name`` at it.

    The blob is written first under ``<prefix>-<sha256 prefix>.npz`` and the manifest (with
    the blob's name and full SHA-256 added) replaces the old one atomically afterwards; only
    then are older blobs removed. A crash at any point leaves the old manifest with its old
    blob, or the new manifest with its new blob: never a mix. Returns the blob's file name.
    """
    root = Path(directory)
    digest = hashlib.sha256(blob).hexdigest()
    name = f"{prefix}-{digest[:16]}.npz"
    write_bytes_atomic(root / name, blob)
    write_json_atomic(root / manifest_name, {**manifest, "blob": name, "blob_sha256": digest})
    for old in root.glob(f"{prefix}-*.npz"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return name


def read_blob(directory: str | Path, manifest: dict[str, Any], manifest_name: str) -> bytes:
    """The blob a manifest points at, checked against its SHA-256.

    Raises ValueError naming the file when the blob is missing, or altered since it was
    committed.
    """
    root = Path(directory)
    try:
        name, digest = str(manifest["blob"]), str(manifest["blob_sha256"])
    except KeyError as err:
        raise ValueError(f"{root / manifest_name}: missing field {err}") from None
    path = root / Path(name).name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{path}: missing (named by {root / manifest_name})") from None
    if hashlib.sha256(data).hexdigest() != digest:
        raise ValueError(f"{path}: content does not match the SHA-256 in {manifest_name}")
    return data


def commit_arrays(
    directory: str | Path,
    prefix: str,
    arrays: dict[str, Any],
    manifest_name: str,
    manifest: dict[str, Any],
    compress: bool = False,
) -> None:
    """Commit numpy ``arrays`` as an ``.npz`` blob plus its manifest (see
    :func:`commit_blob_with_manifest`)."""
    import numpy as np

    buf = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buf, **arrays)
    commit_blob_with_manifest(directory, prefix, buf.getvalue(), manifest_name, manifest)


def load_arrays(directory: str | Path, manifest_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(manifest, arrays)`` committed by :func:`commit_arrays`.

    Raises FileNotFoundError when there is no manifest, ValueError naming the file when the
    manifest or its blob is corrupt.
    """
    import numpy as np

    path = Path(directory) / manifest_name
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: corrupt JSON ({err})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: expected a JSON object")
    blob = read_blob(directory, manifest, manifest_name)
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as err:  # zip, format and value errors all mean "corrupt"
        raise ValueError(f"{Path(directory) / manifest['blob']}: corrupt ({err})") from None
    return manifest, arrays
