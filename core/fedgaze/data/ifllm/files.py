"""Finding, reading, decompressing and decoding the data set's files.

A damaged gzip stream keeps its readable prefix and invalid UTF-8 is replaced: both are
reported as Problems, never fatal.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Set
from pathlib import Path

from fedgaze.data.ifllm.context import _GZ_CHUNK, _Sink


def _check_root(root: str | Path) -> Path:
    """The root as a Path; FileNotFoundError naming it when it is not a folder."""
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"IFLLM root folder not found: {base}")
    return base


def _resolve(folder: Path, stem: str, files: Set[str] | None = None) -> Path | None:
    """``stem.csv`` if present, else ``stem.csv.gz``, else None (``files``: the names of the
    folder's files, when already listed)."""
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        path = folder / name
        if name in files if files is not None else path.is_file():
            return path
    return None


def _file_names(folder: Path) -> set[str]:
    """Names of the (regular, or links to regular) files in a folder."""
    with os.scandir(folder) as entries:
        return {e.name for e in entries if e.is_file()}


def table_path(base: Path, stem: str) -> Path:
    """A required table's file; FileNotFoundError naming the expected path when absent."""
    path = _resolve(base, stem)
    if path is None:
        raise FileNotFoundError(
            f"required IFLLM table missing: {base / (stem + '.csv')} (or .csv.gz)"
        )
    return path


def _gunzip(data: bytes) -> tuple[bytes, str | None]:
    """Decompress (possibly multi-member) gzip data; keep what precedes a truncation/corruption."""
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
        end = pos
        try:
            while not dec.eof and end < len(data):
                chunk = data[end : end + _GZ_CHUNK]
                end += len(chunk)
                out.append(dec.decompress(chunk))
        except zlib.error as err:
            return b"".join(out), f"corrupt gzip stream ({err})"
        if not dec.eof:
            out.append(dec.flush())
            return b"".join(out), "truncated gzip stream (file cut short)"
        pos = end - len(dec.unused_data)
        while pos < len(data) and data[pos] == 0:  # zero padding between members
            pos += 1
    return b"".join(out), None


def _read_bytes(path: Path, sink: _Sink) -> tuple[bytes, bool]:
    """The bytes of a .csv or decompressed .csv.gz file and whether it was cut short.

    A damaged gzip stream keeps its readable prefix and is reported.
    """
    data = path.read_bytes()
    cut = False
    if path.name.endswith(".gz"):
        data, damage = _gunzip(data)
        if damage is not None:
            cut = True
            lines = data.count(b"\n")
            sink.add(path, 0, f"damaged file: {damage}; kept the {lines} complete lines before it")
    return data, cut


def _decode(data: bytes, path: Path, sink: _Sink) -> str:
    """UTF-8 text, a leading BOM dropped; invalid bytes are replaced and reported (with line)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        sink.add(path, line, f"bad encoding: invalid UTF-8 at byte {err.start} replaced")
        return data.decode("utf-8-sig", errors="replace")


def _read_text(path: Path, sink: _Sink) -> tuple[str, bool]:
    """The decoded text of a .csv or .csv.gz file and whether it was cut short.

    A damaged gzip stream keeps its readable prefix and is reported; invalid UTF-8 is replaced
    and reported with the line where it starts.
    """
    data, cut = _read_bytes(path, sink)
    return _decode(data, path, sink), cut
