"""One modality's samples on one query, prepared once and shared by every v2 feature module.

:func:`prepare` turns a :class:`~fedgaze.data.schema.Samples` into a :class:`Trace`: times in
seconds from a common origin (the query's first sample over both modalities, so gaze and mouse
share one clock and windows), the side as a row index (0 left, 1 right, -1 off the answers),
the engaged seconds each sample contributes, and the caret position normalized by the length of
that side's answer. Doing this once per query and modality keeps the feature modules small and
avoids recomputing the same ``np.diff`` and masks in each of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedgaze.data.schema import SIDE_LEFT, Samples

__all__ = [
    "GAP_CAP_S",
    "Trace",
    "prepare",
    "query_span",
    "side_seconds",
    "time_origin_ms",
]

GAP_CAP_S = 1.0
"""Longest gap (seconds) between consecutive samples that still counts as engaged time: a longer
pause (tab switch, lost face) is not reading. Also the longest gap inside one reading bout."""

F64 = npt.NDArray[np.float64]
Intp = npt.NDArray[np.intp]
I32 = npt.NDArray[np.int32]


@dataclass(frozen=True, eq=False)
class Trace:
    """Prepared columns of one modality on one query (all arrays have one entry per sample).

    - ``t_s``: seconds since the query's origin; NaN where ``t_ms`` was not finite.
    - ``row``: 0 for the left answer, 1 for the right, -1 off the answers.
    - ``gap_s``: engaged seconds the sample adds: the gap to the modality's next sample clipped
      to ``[0, GAP_CAP_S]`` (0 for the last sample and for gaps that are not finite).
    - ``char_index``: the caret offset (-1 none).
    - ``pos``: ``char_index / len(answer of its side)`` clipped to ``[0, 1]``; NaN when the
      sample is off the answers, has no caret, or its answer is empty.
    - ``x``, ``y``: viewport pixels (NaN unknown).
    """

    t_s: F64
    row: Intp
    gap_s: F64
    char_index: I32
    pos: F64
    x: F64
    y: F64

    def __len__(self) -> int:
        return len(self.t_s)


def time_origin_ms(*samples: Samples) -> float:
    """The earliest finite ``t_ms`` over the given samples (0.0 when there is none)."""
    firsts = [float(np.nanmin(s.t_ms)) for s in samples if np.isfinite(s.t_ms).any()]
    return min(firsts) if firsts else 0.0


def prepare(samples: Samples, lengths: F64, origin_ms: float) -> Trace:
    """Prepare one modality's samples; ``lengths`` holds the left and right answers' lengths."""
    t_s = (samples.t_ms - origin_ms) / 1000.0
    row = samples.side.astype(np.intp) - SIDE_LEFT
    gap = np.diff(t_s, append=t_s[-1:])
    gap[~(gap > 0.0)] = 0.0  # negative, NaN (a NaN time) and the last sample's 0
    np.minimum(gap, GAP_CAP_S, out=gap)
    length = lengths[np.maximum(row, 0)] if len(row) else np.zeros(0)
    caret = (row >= 0) & (samples.char_index >= 0) & (length > 0)
    pos = np.full(len(t_s), np.nan)
    pos[caret] = np.clip(samples.char_index[caret] / length[caret], 0.0, 1.0)
    return Trace(
        t_s=t_s,
        row=row,
        gap_s=gap,
        char_index=samples.char_index,
        pos=pos,
        x=samples.x,
        y=samples.y,
    )


def query_span(*traces: Trace) -> tuple[float, float]:
    """First and last finite time (seconds) over the traces; ``(0.0, 0.0)`` when none."""
    finite = [t.t_s[np.isfinite(t.t_s)] for t in traces]
    times = np.concatenate(finite) if finite else np.zeros(0)
    if len(times) == 0:
        return 0.0, 0.0
    return float(times.min()), float(times.max())


def side_seconds(trace: Trace) -> F64:
    """Engaged seconds on the left and on the right answer, shape (2,)."""
    on = trace.row >= 0
    seconds = np.bincount(trace.row[on], weights=trace.gap_s[on], minlength=2)[:2]
    return np.asarray(seconds, dtype=np.float64)  # already float64; for the type checker
