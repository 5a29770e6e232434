"""Cross-modality features: how closely the mouse followed the eyes, and whether both agree on
which answer got more attention.

Gaze and mouse samples are paired by time, not by index: each gaze sample is matched with the
mouse sample nearest in time (``np.searchsorted`` on the sorted mouse times), and the pair is
kept when they are at most ``ALIGN_S`` apart. In IFLLM both are read at the same instants, so
every gaze sample finds its twin, but another capture may sample them independently.

- ``cross_dist_log1p``: ``log1p`` of the mean gaze-mouse distance in viewport pixels over pairs
  where both positions are finite (0 without such pairs). Query-level.
- ``cross_y_corr``: Pearson correlation of gaze y and mouse y over those pairs; 0 when it is
  undefined (fewer than two pairs or a constant coordinate). Query-level. People who read with
  the pointer show a high correlation, and then the mouse features carry reading information.
- ``cross_both_on_share``: per side, the share of pairs with both gaze and mouse on that side.
- ``cross_agree``: per side, 1 when both modalities spent more engaged time on this side than on
  the other (0 on both rows when they disagree or tie): the favored answer is doubly attested.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedgaze.features.trace import Trace, side_seconds

__all__ = ["ALIGN_S", "CROSS_NAMES", "align", "cross_features"]

F64 = npt.NDArray[np.float64]
Intp = npt.NDArray[np.intp]

ALIGN_S = 0.1
"""Largest time difference (seconds) between a gaze and a mouse sample that are paired."""

CROSS_NAMES = ("cross_dist_log1p", "cross_y_corr", "cross_both_on_share", "cross_agree")


def align(gaze: Trace, mouse: Trace) -> tuple[Intp, Intp]:
    """Indices ``(g, m)`` of paired gaze and mouse samples (nearest time within ``ALIGN_S``)."""
    g_idx = np.flatnonzero(np.isfinite(gaze.t_s))
    m_idx = np.flatnonzero(np.isfinite(mouse.t_s))
    if len(g_idx) == 0 or len(m_idx) == 0:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty
    m_idx = m_idx[np.argsort(mouse.t_s[m_idx], kind="stable")]
    m_t = mouse.t_s[m_idx]
    g_t = gaze.t_s[g_idx]
    right = np.minimum(np.searchsorted(m_t, g_t), len(m_t) - 1)
    left = np.maximum(right - 1, 0)
    take_left = np.abs(g_t - m_t[left]) <= np.abs(m_t[right] - g_t)
    nearest = np.where(take_left, left, right)
    keep = np.abs(m_t[nearest] - g_t) <= ALIGN_S
    return g_idx[keep], m_idx[nearest[keep]]


def _pearson(a: F64, b: F64) -> float:
    """Pearson correlation, 0 when undefined."""
    if len(a) < 2:
        return 0.0
    da, db = a - a.mean(), b - b.mean()
    den = float(np.sqrt((da * da).sum() * (db * db).sum()))
    if not np.isfinite(den) or den <= 0:
        return 0.0
    return float(np.clip((da * db).sum() / den, -1.0, 1.0))


def cross_features(gaze: Trace, mouse: Trace) -> F64:
    """Cross-modality features of one query, shape (2, len(CROSS_NAMES)); see the module."""
    out = np.zeros((2, len(CROSS_NAMES)))
    g, m = align(gaze, mouse)
    if len(g):
        gx, gy, mx, my = gaze.x[g], gaze.y[g], mouse.x[m], mouse.y[m]
        xy = np.isfinite(gx) & np.isfinite(gy) & np.isfinite(mx) & np.isfinite(my)
        if xy.any():
            dist = np.hypot(gx[xy] - mx[xy], gy[xy] - my[xy])
            out[:, 0] = np.log1p(float(dist.mean()))
        ys = np.isfinite(gy) & np.isfinite(my)
        out[:, 1] = _pearson(gy[ys], my[ys])
        g_row, m_row = gaze.row[g], mouse.row[m]
        both = (g_row >= 0) & (g_row == m_row)
        out[:, 2] = np.bincount(g_row[both], minlength=2)[:2] / len(g)
    g_sec, m_sec = side_seconds(gaze), side_seconds(mouse)
    out[:, 3] = (g_sec > g_sec[::-1]) & (m_sec > m_sec[::-1])
    return out
