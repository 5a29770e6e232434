"""Mouse traces: the mouse rests for runs of samples and glides between rest positions."""

from __future__ import annotations

import numpy as np

from fedgaze.data.schema import SIDE_LEFT, SIDE_NONE, SIDE_RIGHT
from fedgaze.data.synthetic.arrays import (
    BoolArray,
    FloatArray,
    IntArray,
    Trace,
    pick_side,
    run_rank,
)
from fedgaze.data.synthetic.panels import inside_panel, off_panel, panel_boxes, panel_of, panel_xy
from fedgaze.data.synthetic.params import SyntheticParams
from fedgaze.data.synthetic.plan import Plan
from fedgaze.data.synthetic.streams import Streams


def _alternating_runs(rng: np.random.Generator, n: int, mean_a: float, mean_b: float) -> BoolArray:
    """Per row, whether it is in a "b" run of an a/b/a/b... sequence of geometric runs."""
    pairs = int(n / max(mean_a + mean_b, 1.0)) + 16
    while True:
        runs = np.empty(2 * pairs, np.int64)
        runs[0::2] = rng.geometric(1.0 / max(mean_a, 1.0), pairs)
        runs[1::2] = rng.geometric(1.0 / max(mean_b, 1.0), pairs)
        ends = np.cumsum(runs)
        if ends[-1] >= n:
            break
        pairs *= 2
    offset = rng.integers(0, runs[0] + runs[1])  # start at a random point of the cycle
    run = np.searchsorted(ends, np.arange(n) + offset, side="right")
    return np.asarray(run % 2 == 1)


def mouse_trace(
    rng: np.random.Generator,
    p: SyntheticParams,
    plan: Plan,
    s: Streams,
    on_share: FloatArray,
    left_share: FloatArray,
    len_l: IntArray,
    len_r: IntArray,
) -> Trace:
    """Mouse: rests in place, moves in short bursts; unknown (NaN) before the first move.

    Rest positions are drawn per query (on an answer with the query's mouse shares); a move
    glides linearly from the previous rest position to the next one, and its side is the panel
    it passes over. Segments break at every query start (the person clicks the input box).
    """
    q = s.query
    moving = _alternating_runs(rng, s.n, p.mouse_rest_samples, p.mouse_move_samples)
    seg_start = s.query_start | np.r_[True, moving[1:] != moving[:-1]]
    seg = np.cumsum(seg_start) - 1
    first_row = np.flatnonzero(seg_start)
    n_seg = len(first_row)
    seg_q = q[first_row]
    seg_move = moving[first_row]
    seg_pw = plan.pw[seg_q]
    on, lft = on_share[seg_q], left_share[seg_q]
    seg_side = pick_side(rng.random(n_seg), on * lft, on * (1 - lft))
    x, y = panel_xy(p, panel_of(seg_side, seg_pw), rng.random(n_seg), rng.random(n_seg))
    off_x, off_y = off_panel(rng, p, seg_pw)
    off = seg_side == SIDE_NONE
    x[off], y[off] = off_x[off], off_y[off]
    # moves: glide between the neighbouring rest positions of the same query
    j = np.arange(n_seg)
    prev = np.where((j > 0) & (seg_q[np.maximum(j - 1, 0)] == seg_q), j - 1, j)
    nxt = np.where((j < n_seg - 1) & (seg_q[np.minimum(j + 1, n_seg - 1)] == seg_q), j + 1, j)
    prev = np.where(prev == j, nxt, prev)
    rank, size = run_rank(seg)
    frac = (rank + 1) / (size + 1)
    row_move = seg_move[seg]
    sx = np.where(row_move, x[prev][seg] + (x[nxt][seg] - x[prev][seg]) * frac, x[seg])
    sy = np.where(row_move, y[prev][seg] + (y[nxt][seg] - y[prev][seg]) * frac, y[seg])
    pw = plan.pw[q]
    panel = np.where(row_move, inside_panel(p, sx, sy, pw), panel_of(seg_side, seg_pw)[seg])
    side = np.where(panel == 1, SIDE_RIGHT, np.where(panel >= 0, SIDE_LEFT, SIDE_NONE))
    side = side.astype(np.int8)
    # caret offset under the mouse: its height in the panel
    box = panel_boxes(p)[np.maximum(panel, 0)]
    length = np.maximum(np.where(panel == 1, len_r[q], len_l[q]), 1)
    rel = np.clip((sy - box[:, 1]) / (box[:, 3] - box[:, 1]), 0.0, 1.0)
    char = np.rint(rel * length).astype(np.int64)
    seg_no_char = rng.random(n_seg) < p.mouse_no_char_share
    char[(panel < 0) | seg_no_char[seg]] = -1
    # the first segment of a task page may come before any move: position unknown
    unknown_seg = (
        s.query_start[first_row]
        & plan.first_in_task[seg_q]
        & (rng.random(n_seg) < p.mouse_nan_start_share)
    )
    unknown = unknown_seg[seg]
    sx[unknown], sy[unknown], side[unknown], char[unknown] = np.nan, np.nan, SIDE_NONE, -1
    return sx, sy, side, char
