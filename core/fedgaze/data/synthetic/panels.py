"""The answer panels on screen, shared by gaze and mouse: boxes, positions in them, off them."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedgaze.data.schema import SIDE_NONE, SIDE_RIGHT
from fedgaze.data.synthetic.arrays import BoolArray, FloatArray, IntArray
from fedgaze.data.synthetic.params import SyntheticParams


def panel_boxes(p: SyntheticParams) -> FloatArray:
    """Panel boxes as rows (x0, y0, x1, y1): 0 left, 1 right (pairwise), 2 single (pointwise)."""
    return np.array(
        [[b.x0, b.y0, b.x1, b.y1] for b in (p.panel_left, p.panel_right, p.panel_single)]
    )


def panel_of(side: npt.NDArray[np.int8], pairwise: BoolArray) -> IntArray:
    """Row of :func:`panel_boxes` for each row's side, -1 off the answers."""
    panel = np.where(side == SIDE_RIGHT, 1, np.where(pairwise, 0, 2))
    return np.where(side == SIDE_NONE, -1, panel)


def panel_xy(
    p: SyntheticParams, panel: IntArray, fx: FloatArray, fy: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Positions from relative coordinates (0-1) inside each row's panel (off: NaN)."""
    box = panel_boxes(p)[np.maximum(panel, 0)]
    x = box[:, 0] + fx * (box[:, 2] - box[:, 0])
    y = box[:, 1] + fy * (box[:, 3] - box[:, 1])
    off = panel < 0
    x[off], y[off] = np.nan, np.nan
    return x, y


def inside_panel(p: SyntheticParams, x: FloatArray, y: FloatArray, pairwise: BoolArray) -> IntArray:
    """Which panel (row of :func:`panel_boxes`) each point is in, -1 none; left wins an overlap."""
    panel = np.full(len(x), -1)
    for k in (1, 0, 2):
        x0, y0, x1, y1 = panel_boxes(p)[k]
        which = pairwise if k < 2 else ~pairwise
        panel[which & (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)] = k
    return panel


def off_panel(
    rng: np.random.Generator, p: SyntheticParams, pairwise: BoolArray
) -> tuple[FloatArray, FloatArray]:
    """Off-panel positions: the real off-panel spread, mirrored above a panel when inside one."""
    g = p.gaze_off
    x = rng.normal(g.mean_x, g.sd_x, len(pairwise))
    y = rng.normal(g.mean_y, g.sd_y, len(pairwise))
    panel = inside_panel(p, x, y, pairwise)
    top = panel_boxes(p)[np.maximum(panel, 0), 1]
    return x, np.where(panel >= 0, 2 * top - y - 1.0, y)
