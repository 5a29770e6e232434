"""Reading the physical lines (or, for ``abs_*`` files, the numeric rows) of trace files.

Files are read in batches by one read_csv call over their stored bytes (gzip members
concatenated: polars decompresses them), a marker line between two files.  A batch that
read_csv rejects (damage, invalid UTF-8, a file not ending in a newline, a real line equal
to the marker, a BOM not at the start of the batch, ...) is read file by file, and a file
that read_csv rejects on its own goes the careful way (``_careful_lines``), which is the
reference: every route yields the same lines.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from fedgaze.data.ifllm.context import I64, _Sink
from fedgaze.data.ifllm.files import _decode, _gunzip
from fedgaze.data.ifllm.layouts import _ABS, _ABS_SCHEMA, _Layout, _parse_plan, _validity


@dataclass(eq=False)
class _Trace:
    """One trace file of a batch: its path, its own problems, its stored bytes until parsed
    (compressed for .gz), and the layout it was parsed with."""

    path: Path
    sink: _Sink
    raw: bytes = b""
    layout: _Layout | None = None

    @property
    def gz(self) -> bool:
        """Stored gzip-compressed."""
        return self.path.name.endswith(".gz")

    def read(self) -> None:
        """Read the stored bytes (decompression and damage checks come later)."""
        self.raw = self.path.read_bytes()


_SPLIT_CHAR = "\x1f"  # read_csv splits a file without this byte into lines, one field each
_MARKER = "\x00"
_MARK_LINE = {False: b"\x00\n", True: gzip.compress(b"\x00\n", mtime=0)}
_MARK_ROW = {
    False: b"\x00,\x00,\x00,\x00\n",
    True: gzip.compress(b"\x00,\x00,\x00,\x00\n", mtime=0),
}
_LINE_SCHEMA = {"line": pl.String}
_GZIP_MAGIC = b"\x1f\x8b"
_COMPRESSED_MAGIC = (  # what read_csv inflates by itself: gzip, zlib, zstd
    _GZIP_MAGIC,
    b"\x78\x01",
    b"\x78\x5e",
    b"\x78\x9c",
    b"\x78\xda",
    b"\x28\xb5\x2f\xfd",
)
_NUMERIC_SCHEMA = {f: pl.String for f in _ABS.fields()}


def _runs(traces: Sequence[_Trace], idx: Sequence[int]) -> list[list[int]]:
    """``idx`` cut into runs of consecutive files that read_csv may read together: all gzip or
    all plain; a file it must not read (see ``_csv_readable``) is a run of its own."""
    runs: list[list[int]] = []
    for i in idx:
        last = runs[-1][-1] if runs else None
        if (
            last is not None
            and traces[last].gz == traces[i].gz
            and _csv_readable(traces[last])
            and _csv_readable(traces[i])
        ):
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _csv_readable(trace: _Trace) -> bool:
    """Whether read_csv reads the stored bytes as the careful way does: a .gz file must be
    gzip (else it is damaged), a plain one must not look compressed (read_csv would inflate
    it)."""
    if trace.gz:
        return trace.raw.startswith(_GZIP_MAGIC)
    return not trace.raw.startswith(_COMPRESSED_MAGIC)


def _read_batch(
    traces: Sequence[_Trace], idx: Sequence[int], schema: Mapping[str, type[pl.DataType]], row: bool
) -> tuple[pl.DataFrame, I64] | None:
    """The rows of files ``idx`` (one kind) read together, and how many each has; None when
    read_csv rejects the batch or the markers do not split it into exactly those files.

    ``row``: the marker is a numeric-layout row (``_MARK_ROW``), else a line.
    """
    if not all(_csv_readable(traces[i]) for i in idx):
        return None
    mark = (_MARK_ROW if row else _MARK_LINE)[traces[idx[0]].gz]
    try:
        frame = pl.read_csv(
            mark.join(traces[i].raw for i in idx),
            has_header=False,
            separator="," if row else _SPLIT_CHAR,
            quote_char=None,
            schema=dict(schema),
        )
    except (pl.exceptions.PolarsError, OSError):
        return None
    first = frame.to_series(0)
    marks = np.flatnonzero((first == _MARKER).fill_null(False).to_numpy())
    if len(marks) != len(idx) - 1:
        return None
    bounds = np.r_[-1, marks, len(frame)]
    starts = bounds[1:-1] + 1
    if len(starts) and first.gather(starts).str.starts_with("\ufeff").fill_null(False).any():
        return None  # a BOM read_csv keeps (the careful way drops it)
    return frame, np.diff(bounds) - 1


def _owners(files: Sequence[int], counts: I64) -> tuple[I64, I64]:
    """For the rows of a batch read (files joined by a marker row): each row's file (-1 for a
    marker) and its 1-based line in that file."""
    n = int(counts.sum()) + len(files) - 1
    fid = np.full(n, -1, dtype=np.int64)
    line = np.zeros(n, dtype=np.int64)
    start = 0
    for f, count in zip(files, counts.tolist(), strict=True):
        fid[start : start + count] = f
        line[start : start + count] = np.arange(1, count + 1)
        start += count + 1
    return fid, line


def _careful_lines(trace: _Trace) -> pl.Series:
    """The physical lines of a file, decompressed and split in Python: damage and invalid
    UTF-8 are reported (a line cut off by damage is dropped)."""
    data, cut = trace.raw, False
    if trace.gz:
        data, damage = _gunzip(data)
        if damage is not None:
            cut = True
            lines = data.count(b"\n")
            trace.sink.add(
                trace.path, 0, f"damaged file: {damage}; kept the {lines} complete lines before it"
            )
    raw = _decode(data, trace.path, trace.sink).split("\n")
    if raw and raw[-1] == "":
        raw.pop()
    elif cut and raw:
        trace.sink.add(
            trace.path, len(raw), "damaged file: last line cut off by the damage; dropped"
        )
        raw.pop()
    return pl.Series("line", raw, dtype=pl.String).str.strip_suffix("\r")


def _file_lines(traces: Sequence[_Trace]) -> tuple[pl.Series, I64]:
    """Every physical line of the files, in file order, and how many lines each file has."""
    pieces: list[pl.Series] = []
    counts = np.zeros(len(traces), dtype=np.int64)
    for run in _runs(traces, range(len(traces))):
        got = _read_batch(traces, run, _LINE_SCHEMA, row=False)
        if got is None and len(run) > 1:  # file by file
            for i in run:
                one = _read_batch(traces, [i], _LINE_SCHEMA, row=False)
                lines = one[0].to_series() if one else _careful_lines(traces[i])
                pieces.append(lines.fill_null(""))  # read_csv reads a blank line as null
                counts[i] = len(lines)
        elif got is None:
            pieces.append(_careful_lines(traces[run[0]]))
            counts[run[0]] = len(pieces[-1])
        else:
            lines = got[0].to_series()
            if len(run) > 1:  # drop the markers
                lines = lines.filter(pl.Series(_owners(run, got[1])[0] >= 0))
            pieces.append(lines.fill_null(""))
            counts[run] = got[1]
    if not pieces:
        return pl.Series("line", [], dtype=pl.String), counts
    return pl.concat(pieces).alias("line"), counts


def _read_numeric(traces: Sequence[_Trace]) -> tuple[pl.DataFrame, list[int]]:
    """abs rows of the files whose every line is 4 valid fields, read by read_csv.

    Returns those rows (``fid``, ``line``, x, y, pt, e) and the indices of the other files,
    which need the per-line route.  read_csv splits the fields (a line with more fields fails
    the batch, one with fewer or a blank line gets nulls) and they are typed like
    ``_parse_lines`` does, so both routes read the same numbers.
    """
    frames: list[pl.DataFrame] = []
    done: list[int] = []
    for run in _runs(traces, range(len(traces))):
        batches = [run]
        got = _read_batch(traces, run, _NUMERIC_SCHEMA, row=True)
        if got is None and len(run) > 1:
            batches = [[i] for i in run]
        for batch in batches:
            got = got if batch is run else _read_batch(traces, batch, _NUMERIC_SCHEMA, row=True)
            if got is None:
                continue
            frame, counts = got
            fid, line = _owners(batch, counts)
            valid = pl.all_horizontal(_validity(f) for f in _ABS.fields()).alias("valid")
            frame = (
                frame.lazy()
                .select(_parse_plan(_ABS, False)[1])
                .with_columns(valid, pl.Series("fid", fid), pl.Series("line", line))
                .collect()
            )
            marker = fid < 0
            bad = ~frame["valid"].to_numpy() & ~marker
            invalid = np.bincount(fid[bad], minlength=len(traces))
            good = [i for i in batch if not invalid[i]]
            keep = ~marker if len(good) == len(batch) else ~marker & (invalid[fid] == 0)
            frame = frame.drop("valid")
            frames.append(frame if keep.all() else frame.filter(pl.Series(keep)))
            done += good
    for i in done:
        traces[i].layout = _ABS
    frame = pl.concat(frames) if frames else pl.DataFrame(schema=_ABS_SCHEMA)
    finished = set(done)
    return frame, [i for i in range(len(traces)) if i not in finished]
