"""Reviewing versus composing: when the person stopped comparing the answers and started
typing the next prompt, and what they looked at after that.

A query's samples run from when its answers appeared until the next query was sent, so the
window holds reading the answers and then writing the next prompt. The rule:

1. Gaze and mouse are combined into one timeline of on-answer instants: every sample of either
   modality that lies on either answer panel (off-answer samples are ignored).
2. A *reading bout* is a maximal run of those instants whose consecutive gaps are at most
   ``GAP_CAP_S``; its duration is its last instant minus its first.
3. The reviewing phase runs from the query's first sample to the end of the last bout that
   lasts at least ``SUSTAINED_S`` (sustained reading); the composing phase is everything after
   it, up to the query's last sample. Without any sustained bout the whole window is reviewing.

Since every bout after the split is shorter than ``SUSTAINED_S``, the bouts there are glances:
*look-backs* at an answer while composing. They are counted per side on that side's own
timeline (the side's on-answer instants of either modality, same gap rule).

Features: ``phase_review_log1p`` and ``phase_compose_log1p`` (seconds, query-level),
``phase_compose_share`` (composing seconds over the query's span), per side and modality the
engaged seconds in each phase (``log1p``; a sample belongs to the phase its time falls in), and
per side ``lookback_count_log1p`` and ``lookback_time_log1p`` (summed durations of its
look-back bouts; a single-sample glance lasts 0 s).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedgaze.features.trace import GAP_CAP_S, Trace

__all__ = ["PHASE_NAMES", "SUSTAINED_S", "Phases", "bouts", "find_phases", "phase_features"]

F64 = npt.NDArray[np.float64]

SUSTAINED_S = 2.0
"""Shortest bout (seconds) that counts as sustained reading and so extends the reviewing phase."""

PHASE_NAMES = (
    "phase_review_log1p",
    "phase_compose_log1p",
    "phase_compose_share",
    "gaze_review_time_log1p",
    "gaze_compose_time_log1p",
    "mouse_review_time_log1p",
    "mouse_compose_time_log1p",
    "lookback_count_log1p",
    "lookback_time_log1p",
)


@dataclass(frozen=True)
class Phases:
    """The query's span ``[start_s, end_s]`` and where reviewing ends (``split_s``)."""

    start_s: float
    split_s: float
    end_s: float

    @property
    def review_s(self) -> float:
        """Seconds of reviewing."""
        return self.split_s - self.start_s

    @property
    def compose_s(self) -> float:
        """Seconds of composing."""
        return self.end_s - self.split_s


def _on_times(traces: tuple[Trace, ...], side: int | None) -> F64:
    """Sorted finite times of the traces' samples on ``side`` (either answer when None)."""
    parts = []
    for tr in traces:
        on = tr.row >= 0 if side is None else tr.row == side
        parts.append(tr.t_s[on & np.isfinite(tr.t_s)])
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0)


def bouts(times: F64) -> tuple[F64, F64]:
    """Start and end times of the bouts of sorted ``times`` (gaps <= GAP_CAP_S within one)."""
    if len(times) == 0:
        return np.zeros(0), np.zeros(0)
    breaks = np.flatnonzero(np.diff(times) > GAP_CAP_S)
    starts = times[np.concatenate(([0], breaks + 1))]
    ends = times[np.concatenate((breaks, [len(times) - 1]))]
    return starts, ends


def find_phases(gaze: Trace, mouse: Trace, start_s: float, end_s: float) -> Phases:
    """Split the span ``[start_s, end_s]`` at the end of the last sustained bout."""
    starts, ends = bouts(_on_times((gaze, mouse), None))
    sustained = ends - starts >= SUSTAINED_S
    split = float(ends[sustained].max()) if sustained.any() else end_s
    return Phases(start_s=start_s, split_s=split, end_s=end_s)


def _phase_seconds(trace: Trace, split_s: float) -> F64:
    """Engaged seconds per side in reviewing (column 0) and composing (column 1), (2, 2)."""
    on = trace.row >= 0
    review = on & (trace.t_s <= split_s)
    compose = on & (trace.t_s > split_s)
    out = np.zeros((2, 2))
    out[:, 0] = np.bincount(trace.row[review], weights=trace.gap_s[review], minlength=2)[:2]
    out[:, 1] = np.bincount(trace.row[compose], weights=trace.gap_s[compose], minlength=2)[:2]
    return out


def phase_features(gaze: Trace, mouse: Trace, phases: Phases) -> F64:
    """The phase features of one query, shape (2, len(PHASE_NAMES)); see the module."""
    out = np.zeros((2, len(PHASE_NAMES)))
    span = phases.end_s - phases.start_s
    out[:, 0] = np.log1p(phases.review_s)
    out[:, 1] = np.log1p(phases.compose_s)
    out[:, 2] = phases.compose_s / span if span > 0 else 0.0
    out[:, 3:5] = np.log1p(_phase_seconds(gaze, phases.split_s))
    out[:, 5:7] = np.log1p(_phase_seconds(mouse, phases.split_s))
    if phases.compose_s > 0:
        for side in (0, 1):
            times = _on_times((gaze, mouse), side)
            starts, ends = bouts(times[times > phases.split_s])
            out[side, 7] = np.log1p(len(starts))
            out[side, 8] = np.log1p(float((ends - starts).sum()))
    return out
