"""Array aliases, the millisecond unit and small vectorized helpers of the generator.

Generation works on flat arrays over the whole cohort (one row per query, bout or sample, the
rows of a query contiguous and in time order); these helpers rank, group, bout and fold such
rows without Python loops.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedgaze.data.schema import SIDE_LEFT, SIDE_NONE, SIDE_RIGHT

#: Epoch-ms multiplier.
MS = 1000.0

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
#: One trace's columns per sample: x, y, side, caret offset.
Trace = tuple[FloatArray, FloatArray, npt.NDArray[np.int8], IntArray]


def sigmoid(x: FloatArray) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), np.float64)


def run_rank(keys: IntArray) -> tuple[IntArray, IntArray]:
    """For rows where equal keys are contiguous: (rank within the run, length of the run)."""
    n = len(keys)
    new = np.r_[True, keys[1:] != keys[:-1]] if n else np.zeros(0, bool)
    starts = np.flatnonzero(new)
    run = np.cumsum(new) - 1
    return np.arange(n) - starts[run], np.diff(np.r_[starts, n])[run]


def rank_in_query(mask: BoolArray, q: IntArray, bounds: IntArray) -> tuple[IntArray, IntArray]:
    """For time-ordered rows of contiguous queries: rank among the query's ``mask`` rows, count.

    O(n) with cumulative sums (no sort); values on rows outside ``mask`` are meaningless.
    """
    c = np.cumsum(mask)
    before = np.r_[0, c][bounds[:-1]]
    count = np.bincount(q[mask], minlength=len(bounds) - 1)
    return c - 1 - before[q], count[q]


def group_lower_quantile(values: FloatArray, keys: IntArray, q: float) -> FloatArray:
    """Per row, the ``q`` quantile of its key group's values, "lower" method (no interpolation).

    "lower" puts one sample exactly on the quantile and the rest above it, so scaling by it and
    clipping at the end of the answer keeps the measured (interpolated) quantile intact. One
    argsort of key + value squeezed into [0, 0.5) (keys are integers).
    """
    if len(values) == 0:
        return np.empty(0)
    lo, hi = float(values.min()), float(values.max())
    order = np.argsort(keys + 0.5 * (values - lo) / (hi - lo + 1e-12))
    sk = keys[order]
    new = np.r_[True, sk[1:] != sk[:-1]]
    starts = np.flatnonzero(new)
    sizes = np.diff(np.r_[starts, len(keys)])
    group_q = values[order][starts + np.floor(q * (sizes - 1)).astype(np.int64)]
    out = np.empty(len(values))
    out[order] = group_q[np.cumsum(new) - 1]
    return out


def bouts(rng: np.random.Generator, n: int, mean_len: float, forced: BoolArray) -> IntArray:
    """Bout id per row: geometric bouts of mean ``mean_len`` rows, new bouts where ``forced``."""
    start = (rng.random(n) < 1.0 / max(mean_len, 1.0)) | forced
    if n:
        start[0] = True
    return np.cumsum(start) - 1


def reflect(v: FloatArray, lo: FloatArray, hi: FloatArray) -> FloatArray:
    """Fold values into [lo, hi] by mirroring at the edges (keeps jitter inside a panel)."""
    width = np.maximum(hi - lo, 1e-9)
    r = np.mod(v - lo, 2 * width)
    return np.asarray(lo + np.where(r > width, 2 * width - r, r), np.float64)


def pick_side(u: FloatArray, p_left: FloatArray, p_right: FloatArray) -> npt.NDArray[np.int8]:
    """Side codes from uniforms and per-row probabilities of left and right (rest: none)."""
    side = np.full(len(u), SIDE_NONE, np.int8)
    side[u < p_left] = SIDE_LEFT
    side[(u >= p_left) & (u < p_left + p_right)] = SIDE_RIGHT
    return side
