"""Gaze traces: sides in bouts, caret offsets moving through the answer, WebGazer noise.

Gaze alternates between panels in geometric bouts, with a WebGazer-sized error per bout and
jitter per sample; the caret offset under the gaze progresses through the answer over time
(real curve).
"""

from __future__ import annotations

import numpy as np

from fedgaze.data.schema import SIDE_NONE, SIDE_RIGHT
from fedgaze.data.synthetic.arrays import (
    FloatArray,
    IntArray,
    Trace,
    bouts,
    group_lower_quantile,
    pick_side,
    rank_in_query,
    reflect,
)
from fedgaze.data.synthetic.panels import off_panel, panel_boxes, panel_of, panel_xy
from fedgaze.data.synthetic.params import COMPLETION_QUANTILE, SyntheticParams
from fedgaze.data.synthetic.plan import Plan
from fedgaze.data.synthetic.streams import Streams


def gaze_trace(
    rng: np.random.Generator,
    p: SyntheticParams,
    plan: Plan,
    s: Streams,
    on_share: FloatArray,
    left_share: FloatArray,
    completion: FloatArray,
    len_l: IntArray,
    len_r: IntArray,
) -> Trace:
    """Gaze: side bouts, caret offsets progressing through the answer, jittered positions."""
    q = s.query
    bout = bouts(rng, s.n, p.gaze_bout_samples, s.query_start)
    n_bouts = int(bout[-1]) + 1 if s.n else 0
    bout_q = q[np.searchsorted(bout, np.arange(n_bouts))]
    on, lft = on_share[bout_q], left_share[bout_q]
    side = pick_side(rng.random(n_bouts), on * lft, on * (1 - lft))[bout]
    is_on = side != SIDE_NONE
    # caret offset: the position progresses through the answer over the time-ordered samples
    # on it (the real curve), scaled so each answer's 90th percentile is its drawn completion
    has_char = is_on & (rng.random(s.n) >= p.gaze_no_char_share)
    right = side == SIDE_RIGHT
    tau = np.zeros(s.n)
    for mask in (has_char & right, has_char & ~right):
        rank, size = rank_in_query(mask, q, s.bounds)
        tau[mask] = (rank / np.maximum(size - 1, 1))[mask]
    deciles = (np.arange(len(p.progression_mean)) + 0.5) / len(p.progression_mean)
    v = np.interp(tau, deciles, p.progression_mean) + rng.normal(0, p.progression_sd, s.n)
    key = q[has_char] * 3 + side[has_char]
    v[has_char] /= np.maximum(group_lower_quantile(v[has_char], key, COMPLETION_QUANTILE), 1e-6)
    comp = np.where(right, completion[1][q], completion[0][q])
    length = np.where(right, len_r[q], len_l[q])
    frac = np.clip(comp * v, 0.0, 1.0)
    char = np.rint(frac * length).astype(np.int64)  # the caret may sit after the last char
    char[~has_char] = -1
    # positions: bout centre across the panel, height following the reading position; on an
    # answer add a per-bout WebGazer error and per-sample jitter, folded back into the panel
    pw = plan.pw[q]
    panel = panel_of(side, pw)
    x, y = panel_xy(p, panel, rng.random(n_bouts)[bout], frac)
    off_x, off_y = off_panel(rng, p, plan.pw[bout_q])
    err = rng.normal(0, p.gaze_offset_px, (2, n_bouts))[:, bout] * is_on
    x = np.where(is_on, x, off_x[bout]) + err[0] + rng.normal(0, p.gaze_jitter_px, s.n)
    y = np.where(is_on, y, off_y[bout]) + err[1] + rng.normal(0, p.gaze_jitter_px, s.n)
    box = panel_boxes(p)[panel[is_on]]
    x[is_on] = reflect(x[is_on], box[:, 0], box[:, 2])
    y[is_on] = reflect(y[is_on], box[:, 1], box[:, 3])
    return x, y, side, char
