"""Rejoining ``rel_*`` records that newlines in the snippet split over several physical lines,
and reporting the lines that stay bad (at the line where the bad record starts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from fedgaze.data.ifllm.context import (
    _ENDS_WITH_EPOCH,
    _MAX_JOIN_LINES,
    _MAX_SNIPPET,
    _RECORD_START,
    I64,
    Bool,
    _Sink,
)
from fedgaze.data.ifllm.layouts import _explain, _Layout, _parse_lines


def _join_candidates(
    lines: pl.Series, is_bad: Bool, bad: I64
) -> tuple[list[int], list[int], list[str]]:
    """(start, n_lines, text) of every way to join a bad record start with following bad lines."""
    starts: list[int] = []
    spans: list[int] = []
    texts: list[str] = []
    for i in bad.tolist():
        if not _RECORD_START.match(lines[i]) or _ENDS_WITH_EPOCH.search(lines[i]):
            continue
        for j in range(i + 1, min(i + _MAX_JOIN_LINES, len(lines))):
            if not is_bad[j] or _RECORD_START.match(lines[j]):
                break
            starts.append(i)
            spans.append(j - i + 1)
            texts.append("\n".join(lines.slice(i, j - i + 1).to_list()))
    return starts, spans, texts


def _repair(
    lines: pl.Series,
    code: npt.NDArray[np.int8],
    bad: I64,
    layout: _Layout,
    path: Path,
    sink: _Sink,
) -> pl.DataFrame | None:
    """Rejoin records split by newlines in the snippet; report the lines that stay bad.

    ``lines`` and ``code`` cover one file; ``bad`` are the indices of its non-blank bad lines.
    A bad line that starts like a record (``x,y,"``) but does not end like one (with an epoch)
    is joined with the next 1..``_MAX_JOIN_LINES``-1 lines, each bad on its own and not itself
    starting like a record; the shortest join that parses with a snippet of at most
    ``_MAX_SNIPPET`` characters wins.
    """
    starts, spans, texts = (
        _join_candidates(lines, code != 0, bad) if layout.has_snippet else ([], [], [])
    )
    cand = _parse_lines(pl.Series("line", texts, dtype=pl.String), layout)
    fits = cand["code"] == 0
    if layout.has_snippet:
        fits &= cand["snip"].str.len_chars() <= _MAX_SNIPPET
    shortest: dict[int, int] = {}
    for c, ok in enumerate(fits.to_list()):
        if ok:
            shortest.setdefault(starts[c], c)
    keep: list[int] = []
    consumed = -1
    for i in bad.tolist():
        if i <= consumed:
            continue
        if i in shortest:
            keep.append(shortest[i])
            consumed = i + spans[shortest[i]] - 1
        else:
            sink.add(path, i + 1, _explain(lines[i], int(code[i]), layout))
    if not keep:
        return None
    return cand[keep].with_columns(pl.Series("line", [starts[c] + 1 for c in keep], dtype=pl.Int64))
