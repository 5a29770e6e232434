"""Aligning the abs and rel rows of every group of a device on (page timer, occurrence), and
turning aligned rows into samples: time, position, side, char_index, validate, snippet."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from fedgaze.data.ifllm.context import _MAX_SKEW_MS, F64, I64, Bool
from fedgaze.data.ifllm.folders import _Group
from fedgaze.data.ifllm.layouts import _ABS, _REL6, _REL7
from fedgaze.data.ifllm.traces import _file_order, _parse_traces
from fedgaze.data.schema import SIDE_LEFT, SIDE_NONE, SIDE_RIGHT


@dataclass(frozen=True)
class _Rows:
    """Numpy columns of parsed trace rows (one frame of ``_parse_traces``), ``g`` = group."""

    g: I64
    line: I64
    x: F64
    y: F64
    pt: F64
    e: F64
    occ: I64
    ci: I64 | None = None
    v: I64 | None = None


def _align(groups: Sequence[_Group]) -> tuple[dict[str, np.ndarray], pl.Series]:
    """Read, clean and align every group's files in one batch.

    Returns numpy columns (g = group index, t, pt, occ, x, y, side, ci, v) and the snippets,
    rows sorted by group, and sets each group's ``rows`` and ``dropped``.  Per group this is:
    drop exact duplicate abs rows; join abs and each rel file on (page timer, occurrence) like
    an inner join, reporting rows without a partner; pick side, char_index, validate and
    snippet (see ``_sides``).
    """
    n = len(groups)
    for group in groups:
        for trace in group.files:
            trace.read()
    absf = _parse_traces([g.files[0] for g in groups], [_ABS])
    before = np.bincount(absf["fid"].to_numpy(), minlength=n)
    absf = absf.filter(_first_distinct(absf))
    after = np.bincount(absf["fid"].to_numpy(), minlength=n)
    for group, dropped in zip(groups, (before - after).tolist(), strict=True):
        group.dropped = dropped
    a = _rows(absf, absf["fid"].to_numpy())
    every = np.arange(len(absf))

    owner = [(gi, k) for gi, g in enumerate(groups) for k in range(1, len(g.files))]
    relf = _parse_traces([groups[gi].files[k] for gi, k in owner], [_REL7, _REL6], False)
    order = _file_order(relf)  # rel rows are used through index arrays in this order
    fid = relf["fid"].to_numpy()
    rel = _rows(relf, np.asarray([gi for gi, _ in owner], dtype=np.int64)[fid], fid, order)
    role = np.asarray([k for _, k in owner], dtype=np.int64)[fid]
    ordered = np.arange(len(fid)) if order is None else order
    left, right = ordered[role[ordered] == 1], ordered[role[ordered] == 2]

    ia, il = _join_reporting(a, every, rel, left, groups, 1)
    ia, il = every[ia], left[il]
    _report_skew(a, ia, rel, il, groups, 1)
    pairwise = np.asarray([len(g.files) == 3 for g in groups])
    two = np.flatnonzero(pairwise[a.g[ia]])
    ip, ir = _join_reporting(a, ia[two], rel, right, groups, 2)
    ir = right[ir]
    _report_skew(a, ia[two[ip]], rel, ir, groups, 2)
    keep = ~pairwise[a.g[ia]]  # rows of the first join that survive the second
    keep[two[ip]] = True
    r = np.full(len(ia), -1, dtype=np.int64)
    r[two[ip]] = ir
    final = np.flatnonzero(keep)
    mouse = np.asarray([g.modality == "mouse" for g in groups])
    cols, src = _sides(a, ia[final], rel, il[final], r[final], mouse)
    snip = pl.concat([relf["snip"], pl.Series("snip", [""], dtype=pl.String)])
    ids = np.arange(n)
    lo = np.searchsorted(cols["g"], ids, side="left")
    hi = np.searchsorted(cols["g"], ids, side="right")
    for group, start, stop in zip(groups, lo.tolist(), hi.tolist(), strict=True):
        group.rows = slice(start, stop)
    return cols, snip.gather(np.where(src < 0, len(relf), src))


def _first_distinct(frame: pl.DataFrame) -> pl.Series:
    """Mask of the rows that are not exact (x, y, pt, e) duplicates of an earlier row of their
    file (pairwise ``abs_gaze`` has every batch written twice)."""
    fid, pt = frame["fid"].to_numpy(), frame["pt"].to_numpy()
    # rows whose (file, page timer) hash is shared: all duplicates and a few others
    mix = (pt + 0.0).view(np.uint64) ^ (fid.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
    candidates = pl.Series(mix).is_duplicated().to_numpy()
    keep = np.ones(len(fid), dtype=bool)
    idx = np.flatnonzero(candidates)
    if len(idx):
        first = frame[idx].select(pl.struct("fid", "x", "y", "pt", "e").is_first_distinct())
        keep[idx] = first.to_series().to_numpy()
    return pl.Series(keep)


def _group_order(fid: I64, pt: F64) -> I64:
    """A stable order of the rows (grouped by file, in file order) by (file, page timer)."""
    order = np.arange(len(pt))
    if len(pt) < 2:
        return order
    back = np.flatnonzero((fid[1:] == fid[:-1]) & (pt[1:] < pt[:-1]))
    if not len(back):  # already sorted (the usual case once duplicates are gone)
        return order
    unsorted = np.zeros(int(fid.max()) + 1, dtype=bool)
    unsorted[fid[back]] = True
    idx = np.flatnonzero(unsorted[fid])  # the rows of those files keep their place as a block
    order[idx] = idx[np.lexsort((pt[idx], fid[idx]))]
    return order


def _occurrence(fid: I64, pt: F64) -> I64:
    """How many earlier rows of its file share this page_timer_ms (the timer can freeze)."""
    order = _group_order(fid, pt)
    f, p = fid[order], pt[order]
    run_start = np.r_[True, (f[1:] != f[:-1]) | (p[1:] != p[:-1])] if len(p) else p == p
    pos = np.arange(len(pt))
    occ = np.empty(len(pt), dtype=np.int64)
    occ[order] = pos - np.maximum.accumulate(np.where(run_start, pos, 0))
    return occ


def _rows(frame: pl.DataFrame, g: I64, fid: I64 | None = None, order: I64 | None = None) -> _Rows:
    """Numpy columns of a parsed frame, with its rows' groups and page-timer occurrences
    (``order``: the rows' order by file and line when the frame is not in it)."""
    col = {c: frame[c].to_numpy() for c in frame.columns if c not in ("fid", "snip")}
    files = frame["fid"].to_numpy() if fid is None else fid
    if order is None:
        occ = _occurrence(files, col["pt"])
    else:
        occ = np.empty(len(files), dtype=np.int64)
        occ[order] = _occurrence(files[order], col["pt"][order])
    return _Rows(g=g, occ=occ, **col)


def _join_reporting(
    left: _Rows, li: I64, right: _Rows, ri: I64, groups: Sequence[_Group], k: int
) -> tuple[I64, I64]:
    """Pairs (positions in ``li``, positions in ``ri``) of an inner join of the rows
    ``left[li]`` and ``right[ri]`` (each sorted by group) on (group, page timer, occurrence),
    in left order, with the groups' rel file ``k``; rows of either side without a partner are
    reported, per file, as one summary Problem.

    Keys are unique on each side.  A group whose rows have the same keys in the same order on
    both sides (the usual case) pairs up row by row; only the other groups are joined.
    """
    n = len(groups)
    lg, lpt, locc = left.g[li], left.pt[li], left.occ[li]
    rg, rpt, rocc = right.g[ri], right.pt[ri], right.occ[ri]
    size_l, size_r = np.bincount(lg, minlength=n), np.bincount(rg, minlength=n)
    start_l = np.r_[0, np.cumsum(size_l)[:-1]]
    start_r = np.r_[0, np.cumsum(size_r)[:-1]]
    fast = size_l == size_r
    i = np.flatnonzero(fast[lg])
    j = i - start_l[lg[i]] + start_r[lg[i]]
    differ = (lpt[i].view(np.int64) != rpt[j].view(np.int64)) | (locc[i] != rocc[j])
    fast[lg[i[differ]]] = False
    same = fast[lg[i]]
    i, j = i[same], j[same]
    slow_l, slow_r = np.flatnonzero(~fast[lg]), np.flatnonzero(~fast[rg])
    if len(slow_l) and len(slow_r):
        key = ["g", "pt", "occ"]
        lf = pl.DataFrame({"g": lg[slow_l], "pt": lpt[slow_l], "occ": locc[slow_l]})
        rf = pl.DataFrame({"g": rg[slow_r], "pt": rpt[slow_r], "occ": rocc[slow_r]})
        pairs = lf.with_row_index("i").join(
            rf.with_row_index("j"), on=key, how="inner", maintain_order="left"
        )
        i = np.r_[i, slow_l[pairs["i"].to_numpy()]]
        j = np.r_[j, slow_r[pairs["j"].to_numpy()]]
        order = np.argsort(i, kind="stable")
        i, j = i[order], j[order]
    for rows, idx, g, paired, mine, theirs in (
        (left, li, lg, i, 0, k),
        (right, ri, rg, j, k, 0),
    ):
        lonely = np.ones(len(idx), dtype=bool)
        lonely[paired] = False
        where = np.flatnonzero(lonely)
        if not len(where):
            continue
        sizes = np.bincount(g, minlength=n)
        counts = np.bincount(g[where], minlength=n)
        ids, first = np.unique(g[where], return_index=True)
        for gi, pos in zip(ids.tolist(), first.tolist(), strict=True):
            group = groups[gi]
            group.joins[k - 1].add(
                group.files[mine].path,
                int(rows.line[idx[where[pos]]]),
                f"unaligned rows: {counts[gi]} of {sizes[gi]} rows have no row with the "
                f"same page_timer_ms in {group.files[theirs].path.name}; dropped",
            )
    return i, j


def _report_skew(a: _Rows, ia: I64, rel: _Rows, ir: I64, groups: Sequence[_Group], k: int) -> None:
    """Aligned rows (``a[ia]`` with ``rel[ir]``) whose rel epoch_ms is far from the abs one
    (kept: t_ms comes from abs)."""
    skew = np.abs(a.e[ia] - rel.e[ir])
    far = np.flatnonzero(skew > _MAX_SKEW_MS)
    if not len(far):
        return
    g = a.g[ia]
    largest = np.full(len(groups), -np.inf)
    np.maximum.at(largest, g, skew)
    counts = np.bincount(g[far], minlength=len(groups))
    ids, first = np.unique(g[far], return_index=True)
    for gi, pos in zip(ids.tolist(), first.tolist(), strict=True):
        group = groups[gi]
        absname = group.files[0].path.name
        group.joins[k - 1].add(
            group.files[k].path,
            int(rel.line[ir[far[pos]]]),
            f"clock skew: {int(counts[gi])} rows aligned on page_timer_ms differ from "
            f"{absname} epoch_ms by more than {_MAX_SKEW_MS} ms (max "
            f"{largest[gi]:.0f} ms); kept, t_ms comes from {absname}",
        )


def _sides(
    a: _Rows, ia: I64, rel: _Rows, il: I64, ir: I64, mouse: Bool
) -> tuple[dict[str, np.ndarray], I64]:
    """Columns of aligned rows (abs rows ``a[ia]``, left rel rows ``rel[il]``, right
    ``rel[ir]``, -1 for none) and the rel row each snippet comes from (-1: none).

    ``side`` is the first panel (left, then right) that holds the point (a rel row not at
    ``-1,-1``); char_index and the snippet come from that row, validate from the left one.
    The ``-1,-1`` of ``abs_mouse`` before the first move becomes NaN.
    """
    assert rel.ci is not None and rel.v is not None
    on_l = ~((rel.x[il] == -1) & (rel.y[il] == -1))
    has_r = ir >= 0
    rr = np.where(has_r, ir, 0)
    on_r = has_r & ~((rel.x[rr] == -1) & (rel.y[rr] == -1))
    g, x, y = a.g[ia], a.x[ia], a.y[ia]
    unmoved = mouse[g] & (x == -1) & (y == -1)
    cols: dict[str, np.ndarray] = {
        "g": g,
        "t": a.e[ia],
        "pt": a.pt[ia],
        "occ": a.occ[ia],
        "x": np.where(unmoved, np.nan, x),
        "y": np.where(unmoved, np.nan, y),
        "side": np.select([on_l, on_r], [SIDE_LEFT, SIDE_RIGHT], SIDE_NONE).astype(np.int8),
        "ci": np.select([on_l, on_r], [rel.ci[il], rel.ci[rr]], -1).astype(np.int32),
        "v": rel.v[il].astype(np.int8),
    }
    return cols, np.select([on_l, on_r], [il, rr], -1)
