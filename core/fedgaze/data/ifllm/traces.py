"""Parsing all trace files of a device at once: each file's layout chosen, bad lines repaired
or reported, neighbours kept.

All trace files of a device are parsed together: their lines are concatenated with a file id
(``fid``) and parsed by a handful of polars queries, so the cost per file is a few numpy
operations (see "Speed and memory" in the package docstring).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from fedgaze.data.ifllm.batches import _file_lines, _read_numeric, _Trace
from fedgaze.data.ifllm.context import I64, Bool, _Sink
from fedgaze.data.ifllm.layouts import _ABS, _ABS_SCHEMA, _REL_SCHEMA, _Layout, _parse_lines
from fedgaze.data.ifllm.repair import _repair


def _read_trace(
    path: Path, layouts: Sequence[_Layout], sink: _Sink
) -> tuple[pl.DataFrame, _Layout]:
    """Parse one trace file into typed rows (with 1-based ``line``), reporting bad lines.

    With several candidate layouts (6/7-column rel files) the one that fits the file wins.
    """
    trace = _Trace(path, sink)
    trace.read()
    frame = _parse_traces([trace], layouts)
    assert trace.layout is not None
    return frame.drop("fid"), trace.layout


def _parse_traces(
    traces: Sequence[_Trace], layouts: Sequence[_Layout], ordered: bool = True
) -> pl.DataFrame:
    """Typed rows of all (read) files, ``fid`` = index in ``traces``, in file and line order
    (with ``ordered=False`` maybe not: see ``_file_order``).

    Sets each trace's layout: the first of ``layouts`` that fits at least half of its lines,
    else the one that fits most.  Bad lines are reported to the file's sink (after rejoining
    records split by newlines in the snippet, see ``_repair``); their neighbours are kept.
    """
    rel = any(layout.has_snippet for layout in layouts)
    schema = _REL_SCHEMA if rel else _ABS_SCHEMA
    frames: list[pl.DataFrame] = []
    rest = list(range(len(traces)))
    if tuple(layouts) == (_ABS,):
        plain, rest = _read_numeric(traces)
        frames.append(plain)
    if rest:
        lines, counts = _file_lines([traces[i] for i in rest])
        frames += _parse_files(lines, np.asarray(rest, dtype=np.int64), counts, traces, layouts)
    for trace in traces:
        trace.raw = b""

    def conform(frame: pl.DataFrame) -> pl.DataFrame:
        """The schema's columns; a layout without ``validate`` gets -1."""
        return frame.select(
            pl.col(c).cast(t) if c in frame.columns else pl.lit(-1, t).alias(c)
            for c, t in schema.items()
        )

    out = [conform(f) for f in frames if len(f)]
    if not out:
        return pl.DataFrame(schema=schema)
    if len(out) == 1:
        return out[0]
    frame = pl.concat(out)
    order = _file_order(frame)
    return frame if order is None or not ordered else frame[order]


def _file_order(frame: pl.DataFrame) -> I64 | None:
    """The order of a parsed frame's rows by (file, line); None when they are in order."""
    key = (frame["fid"].to_numpy() << 32) | frame["line"].to_numpy()  # lines < 2**31
    if np.all(key[1:] > key[:-1]):
        return None
    return np.argsort(key, kind="stable")  # merges the sorted runs


def _parse_files(
    lines: pl.Series,
    files: I64,
    counts: I64,
    traces: Sequence[_Trace],
    layouts: Sequence[_Layout],
) -> list[pl.DataFrame]:
    """Parse the lines of ``traces[files]`` (``counts`` lines each, in order) in one pass per
    layout; choose each file's layout and repair or report its bad lines.

    A file's layout is the first of ``layouts`` that fits at least half of its lines, else the
    one that fits most (the first of those).  A layout is not tried on a file whose lines
    mostly have too few fields for it (``_unfit``) unless no layout fits.
    """
    n_all = len(traces)
    fid = np.repeat(files, counts)
    starts = np.zeros(n_all, dtype=np.int64)
    starts[files] = np.cumsum(np.r_[0, counts[:-1]])
    line_no = np.arange(len(fid), dtype=np.int64) - starts[fid] + 1
    n_lines = np.zeros(n_all, dtype=np.int64)
    n_lines[files] = counts
    pending = np.zeros(n_all, dtype=bool)
    pending[files] = True
    skip = _unfit(lines, fid, starts, n_lines, files, layouts)
    valid = np.full((len(layouts), n_all), -1.0)
    choice = np.full(n_all, -1)
    parses: list[tuple[int, pl.DataFrame, I64]] = []

    def parse(li: int, chosen: Bool) -> None:
        rows = np.flatnonzero(chosen[fid])
        sub = lines if len(rows) == len(lines) else lines.gather(rows)
        parsed = _parse_lines(sub, layouts[li])
        parses.append((li, parsed, rows))
        ok = (parsed["code"] == 0).to_numpy()
        counted = np.bincount(fid[rows], weights=ok, minlength=n_all)
        valid[li, chosen] = counted[chosen]

    for li in range(len(layouts)):
        todo = pending & ~skip[li]
        if not todo.any():
            continue
        parse(li, todo)
        fits = todo & (2 * valid[li] >= n_lines)
        choice[fits] = li
        pending &= ~fits
    for li in range(len(layouts)):  # no layout fits: the best one needs every count
        if (pending & skip[li]).any():
            parse(li, pending & skip[li])
    choice[pending] = np.argmax(valid[:, pending], axis=0)
    for f in files.tolist():
        traces[f].layout = layouts[choice[f]]

    out: list[pl.DataFrame] = []
    for li, parsed, rows in parses:
        mine = choice[fid[rows]] == li
        code = parsed["code"].to_numpy()
        good = mine & (code == 0)
        kept = parsed if good.all() else parsed.filter(pl.Series(good))
        out.append(
            kept.with_columns(
                pl.Series("fid", fid[rows][good]), pl.Series("line", line_no[rows][good])
            )
        )
        bad = np.flatnonzero(mine & (code != 0))
        if not len(bad):
            continue
        blank = lines.gather(rows[bad]).str.strip_chars().str.len_chars() == 0
        bad = bad[~blank.to_numpy()]
        for f in np.unique(fid[rows[bad]]).tolist():
            first = int(np.searchsorted(rows, starts[f]))
            span = slice(first, first + int(n_lines[f]))
            local = rows[bad[fid[rows[bad]] == f]] - starts[f]
            trace = traces[f]
            file_lines = lines.slice(int(starts[f]), int(n_lines[f]))
            repaired = _repair(file_lines, code[span], local, layouts[li], trace.path, trace.sink)
            if repaired is not None:
                out.append(repaired.with_columns(pl.lit(f, pl.Int64).alias("fid")))
    return out


def _unfit(
    lines: pl.Series,
    fid: I64,
    starts: I64,
    n_lines: I64,
    files: I64,
    layouts: Sequence[_Layout],
) -> Bool:
    """skip[li, f]: fewer than half of file f's lines have enough fields for layout li, so it
    cannot fit the file.  Only the first layout is checked, on the files whose first line is
    short (6-column rel files, for the 7-column layout): counting every line would cost more
    than the parses it saves."""
    skip = np.zeros((len(layouts), len(n_lines)), dtype=bool)
    layout = layouts[0]
    nonempty = files[n_lines[files] > 0]
    if len(layouts) < 2 or not layout.has_snippet or not len(nonempty):
        return skip
    need = layout.n_fields - 1  # commas of a line with enough fields
    first = lines.gather(starts[nonempty]).str.count_matches(",", literal=True).to_numpy()
    short = np.zeros(len(n_lines), dtype=bool)
    short[nonempty[first < need]] = True
    rows = np.flatnonzero(short[fid])
    if not len(rows):
        return skip
    commas = lines.gather(rows).str.count_matches(",", literal=True).to_numpy()
    enough = np.bincount(fid[rows], weights=commas >= need, minlength=len(n_lines))
    skip[0] = short & (2 * enough < n_lines)
    return skip
