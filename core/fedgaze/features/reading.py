"""Reading features: how long, how far and how each answer was read, per side and modality.

For one modality's :class:`~fedgaze.features.trace.Trace` on one query, each side's row gets:

- ``time_log1p``: ``log1p`` of engaged seconds on the side (gaps capped at ``GAP_CAP_S``).
- ``time_ratio``: the side's engaged seconds over the engaged seconds of the whole query,
  off-answer time included (0 when the query has none): how much of the window went to it.
- ``time_rel``, ``count_rel``, ``completion_rel``: safe ratios ``own / (own + other)`` of
  engaged seconds, sample count and completion (0.5 when both are 0), so the comparison between
  the two answers is explicit in the features instead of left to the model.
- ``share``: the side's share of all the modality's samples on the query.
- ``count_log1p``: ``log1p`` of the number of samples on the side.
- ``completion``: furthest normalized caret position reached on the side.
- ``pos_mean``, ``pos_var``: mean and variance of the normalized caret position.
- ``entries_log1p``: ``log1p`` of the number of visits to the side, a visit being a run of
  consecutive samples on it (the first sample counts as an entry when it is on the side).
- ``regressions_log1p``, ``regression_rate``: backward jumps of more than
  ``REGRESSION_CHARS`` characters between consecutive caret samples of the side (re-reading;
  a visit to the other answer in between does not break the sequence), as ``log1p`` of the
  count and as a rate per sample on the side. Smaller jumps are tracker noise or line wraps.
- ``present``: 1 when the query has any sample of the modality (the same on both rows).

:func:`window_profile` adds the time profile of attention (see its docstring). Everything is
vectorized over samples with ``np.bincount`` keyed by side.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedgaze.features.trace import Trace

__all__ = [
    "N_WINDOWS",
    "READING_FEATURES",
    "REGRESSION_CHARS",
    "profile_names",
    "reading_features",
    "reading_names",
    "relative",
    "window_profile",
]

F64 = npt.NDArray[np.float64]

REGRESSION_CHARS = 20
"""A backward caret jump longer than this many characters counts as a regression."""

N_WINDOWS = 10
"""Equal time windows of the profile. IFLLM queries with gaze last about 18 s (5th percentile),
70 s (median) and 4.5 min (95th percentile) at about 12 Hz: 10 windows keep about 20 samples
per window even in short queries (20 windows would leave about 10, too few for a stable share)
and add only 10 features per modality for a data set of a few hundred labelled comparisons."""

READING_FEATURES = (
    "time_log1p",
    "time_ratio",
    "time_rel",
    "share",
    "count_log1p",
    "count_rel",
    "completion",
    "completion_rel",
    "pos_mean",
    "pos_var",
    "entries_log1p",
    "regressions_log1p",
    "regression_rate",
    "present",
)


def reading_names(modality: str) -> tuple[str, ...]:
    """Column names of :func:`reading_features` for one modality."""
    return tuple(f"{modality}_{f}" for f in READING_FEATURES)


def profile_names(modality: str) -> tuple[str, ...]:
    """Column names of :func:`window_profile` for one modality."""
    return tuple(f"{modality}_window{k}_share" for k in range(N_WINDOWS))


def relative(values: F64) -> F64:
    """``own / (own + other)`` per side of a (2,) array, 0.5 where both are 0.

    ``v + v[::-1]`` adds the same two numbers on both rows, so the result swaps exactly when
    the sides are swapped and the two entries sum to 1.
    """
    total = values + values[::-1]
    return np.divide(values, total, out=np.full(2, 0.5), where=total > 0)


def reading_features(trace: Trace) -> F64:
    """Reading features of one modality, shape (2, len(READING_FEATURES)); see the module."""
    out = np.zeros((2, len(READING_FEATURES)))
    n = len(trace)
    if n == 0:
        return out
    row = trace.row
    on = row >= 0
    r_on = row[on]
    counts = np.bincount(r_on, minlength=2)[:2].astype(np.float64)
    seconds = np.asarray(np.bincount(r_on, weights=trace.gap_s[on], minlength=2)[:2], np.float64)
    total = float(trace.gap_s.sum())

    has_pos = ~np.isnan(trace.pos)
    p_row = row[has_pos]
    pos = trace.pos[has_pos]
    n_pos = np.bincount(p_row, minlength=2)[:2].astype(np.float64)
    pos_sum = np.bincount(p_row, weights=pos, minlength=2)[:2]
    mean = np.divide(pos_sum, n_pos, out=np.zeros(2), where=n_pos > 0)
    dev2 = np.bincount(p_row, weights=(pos - mean[p_row]) ** 2, minlength=2)[:2]
    var = np.divide(dev2, n_pos, out=np.zeros(2), where=n_pos > 0)
    completion = np.zeros(2)
    np.maximum.at(completion, p_row, pos)

    prev = np.empty_like(row)
    prev[0] = -1
    prev[1:] = row[:-1]
    entries = np.bincount(row[on & (row != prev)], minlength=2)[:2].astype(np.float64)

    regressions = _regressions(trace)

    out[:, 0] = np.log1p(seconds)
    out[:, 1] = seconds / total if total > 0 else 0.0
    out[:, 2] = relative(seconds)
    out[:, 3] = counts / n
    out[:, 4] = np.log1p(counts)
    out[:, 5] = relative(counts)
    out[:, 6] = completion
    out[:, 7] = relative(completion)
    out[:, 8] = mean
    out[:, 9] = var
    out[:, 10] = np.log1p(entries)
    out[:, 11] = np.log1p(regressions)
    out[:, 12] = np.divide(regressions, counts, out=np.zeros(2), where=counts > 0)
    out[:, 13] = 1.0
    return out


def _regressions(trace: Trace) -> F64:
    """Backward caret jumps > REGRESSION_CHARS between consecutive caret samples per side."""
    caret = (trace.row >= 0) & (trace.char_index >= 0)
    rows = trace.row[caret]
    chars = trace.char_index[caret].astype(np.int64)
    order = np.argsort(rows, kind="stable")  # per side, in time order
    rows, chars = rows[order], chars[order]
    back = (rows[1:] == rows[:-1]) & (np.diff(chars) < -REGRESSION_CHARS)
    return np.bincount(rows[1:][back], minlength=2)[:2].astype(np.float64)


def window_profile(trace: Trace, start_s: float, end_s: float) -> F64:
    """Share of each time window's samples that lie on each side, shape (2, N_WINDOWS).

    The query's span ``[start_s, end_s]`` (over both modalities) is cut into ``N_WINDOWS``
    equal windows; a window without samples of this modality gives 0 on both sides. The share
    of samples on the side was chosen over the mean caret position per window: WebGazer is
    accurate to a panel or a few lines, not a word, so *which* answer held attention when
    (e.g. returning to the preferred answer at the end) is the robust signal, and a share has
    no ambiguous 0 (a mean position of 0 would mean both "top of the text" and "not looked at").
    """
    out = np.zeros((2, N_WINDOWS))
    finite = np.isfinite(trace.t_s)
    if not finite.any():
        return out
    t = trace.t_s[finite]
    row = trace.row[finite]
    width = end_s - start_s
    if width > 0:
        window = np.minimum(((t - start_s) / width * N_WINDOWS).astype(np.intp), N_WINDOWS - 1)
        window = np.maximum(window, 0)
    else:
        window = np.zeros(len(t), dtype=np.intp)
    per_window = np.bincount(window, minlength=N_WINDOWS)[:N_WINDOWS].astype(np.float64)
    on = row >= 0
    on_side = np.bincount(window[on] * 2 + row[on], minlength=2 * N_WINDOWS)[: 2 * N_WINDOWS]
    on_side = on_side.reshape(N_WINDOWS, 2).T.astype(np.float64)
    return np.divide(on_side, per_window, out=out, where=per_window > 0)
