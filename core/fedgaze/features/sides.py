"""Order of attention between the two answers: which came first, which came last, how often
attention went back and forth.

Per modality, over the samples on either answer in time order:

- ``first_look``: 1 on the side of the first such sample, 0 on the other (0 on both when the
  modality never touched an answer). People tend to start with the left answer, so this mostly
  helps the model separate position habits from preference.
- ``last_look``: 1 on the side of the last such sample: the answer the person was on when they
  stopped comparing (often the chosen one).
- ``switches_log1p``: ``log1p`` of the number of left <-> right changes between consecutive
  on-answer samples (off-answer samples in between are skipped); query-level, on both rows.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedgaze.features.trace import Trace

__all__ = ["SIDES_FEATURES", "sides_features", "sides_names"]

F64 = npt.NDArray[np.float64]

SIDES_FEATURES = ("first_look", "last_look", "switches_log1p")


def sides_names(modality: str) -> tuple[str, ...]:
    """Column names of :func:`sides_features` for one modality."""
    return tuple(f"{modality}_{f}" for f in SIDES_FEATURES)


def sides_features(trace: Trace) -> F64:
    """First look, last look and switches of one modality, shape (2, 3)."""
    out = np.zeros((2, len(SIDES_FEATURES)))
    rows = trace.row[trace.row >= 0]
    if len(rows) == 0:
        return out
    out[rows[0], 0] = 1.0
    out[rows[-1], 1] = 1.0
    out[:, 2] = np.log1p(np.count_nonzero(rows[1:] != rows[:-1]))
    return out
