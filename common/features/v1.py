"""Feature set v1: per-side reading features of one pairwise comparison, computed on the device.

For each side (row 0 = left = response 1, row 1 = right = response 2) and each modality (gaze,
mouse) the features describe how much and how far that answer was read; three text-length
features follow. Every feature is a fixed transform of one query's own data (``log1p``, ratios,
positions normalized by the answer's length), so vectors are comparable across devices without
any fitted, server-side normalization, and a query with missing or empty traces still gets a
finite vector (zeros, with the ``*_present`` indicator at 0) so that every comparison can be
scored.

Per modality ``m``:

- ``m_time_log1p``: ``log1p`` of engaged seconds on the side: the sum of the gaps from each sample
  on the side to the next sample of that modality, each gap clipped to ``[0, GAP_CAP_S]`` so
  that a pause (tab switch, lost face) does not count as reading. The last sample adds nothing.
- ``m_share``: the side's share of all the modality's samples on the query (0 with none).
- ``m_completion``: furthest character reached on the side, ``max(char_index) / len(text)``.
- ``m_pos_mean``, ``m_pos_var``: mean and variance of ``char_index / len(text)``.
- ``m_count_log1p``: ``log1p`` of the number of samples on the side.
- ``m_present``: 1 when the query has any sample of the modality at all (same on both rows).

Normalized positions are clipped to ``[0, 1]``; samples without a caret (``char_index < 0``)
are ignored for the position features. Text features: ``log1p`` of characters, lines, words.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from fedgaze.data.schema import MODALITIES, SIDE_LEFT, SIDE_RIGHT, Query, Samples

GAP_CAP_S = 1.0
"""Longest gap (seconds) between consecutive samples that still counts as reading time."""

_TRACE_FEATURES = ("time_log1p", "share", "completion", "pos_mean", "pos_var", "count_log1p")
_TEXT_FEATURES = ("text_chars_log1p", "text_lines_log1p", "text_words_log1p")

SIDE_FEATURE_NAMES: tuple[str, ...] = (
    *(f"{m}_{f}" for m in MODALITIES for f in (*_TRACE_FEATURES, "present")),
    *_TEXT_FEATURES,
)
"""Names of the per-side features, in column order; ``F = len(SIDE_FEATURE_NAMES)``."""

N_SIDE_FEATURES = len(SIDE_FEATURE_NAMES)
_SIDES = np.array([SIDE_LEFT, SIDE_RIGHT])


@dataclass(frozen=True, eq=False)
class FeatureMatrix:
    """Features of ``n`` comparisons: ``X`` (n, 2, F) float32, ``y`` (n,) float32, ids int64.

    ``y`` is 1 where the right answer was preferred, 0 where the left was, NaN when unlabelled
    (only in :func:`featurize_for_scoring`).
    """

    X: np.ndarray
    y: np.ndarray
    query_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def trace_features(samples: Samples, text_lengths: np.ndarray) -> np.ndarray:
    """Reading features of one modality's samples, shape (2, 7): per side, the modality block.

    ``text_lengths`` holds the character counts of the left and right answers. Vectorized: one
    ``np.diff`` for the gaps, ``np.bincount`` per side for sums, ``np.maximum.at`` for maxima.
    """
    out = np.zeros((2, len(_TRACE_FEATURES) + 1), dtype=np.float64)
    n = len(samples)
    if n == 0:
        return out
    # Sides 1 and 2 map to rows 0 and 1; SIDE_NONE (0) becomes -1 and is masked out.
    row = samples.side.astype(np.intp) - SIDE_LEFT
    on = row >= 0
    gaps_s = np.diff(samples.t_ms, append=samples.t_ms[-1]) / 1000.0
    gaps_s = np.clip(np.nan_to_num(gaps_s, nan=0.0, posinf=0.0, neginf=0.0), 0.0, GAP_CAP_S)
    counts = np.bincount(row[on], minlength=2).astype(np.float64)
    seconds = np.bincount(row[on], weights=gaps_s[on], minlength=2)

    length = text_lengths[np.maximum(row, 0)]
    caret = on & (samples.char_index >= 0) & (length > 0)
    pos_row = row[caret]
    pos = np.clip(samples.char_index[caret] / length[caret], 0.0, 1.0)
    n_pos = np.bincount(pos_row, minlength=2).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n_pos > 0, np.bincount(pos_row, weights=pos, minlength=2) / n_pos, 0.0)
        dev2 = (pos - mean[pos_row]) ** 2
        var = np.where(n_pos > 0, np.bincount(pos_row, weights=dev2, minlength=2) / n_pos, 0.0)
    completion = np.zeros(2)
    np.maximum.at(completion, pos_row, pos)

    out[:, 0] = np.log1p(seconds)
    out[:, 1] = counts / n
    out[:, 2] = completion
    out[:, 3] = mean
    out[:, 4] = var
    out[:, 5] = np.log1p(counts)
    out[:, 6] = 1.0
    return out


def text_features(text: str) -> np.ndarray:
    """``log1p`` of the answer's characters, lines and whitespace-separated words."""
    lines = text.count("\n") + 1 if text else 0
    return np.log1p(np.array([len(text), lines, len(text.split())], dtype=np.float64))


def side_features(query: Query) -> np.ndarray:
    """Feature rows of one query, shape (2, F) float32: row 0 the left answer, row 1 the right.

    A pointwise query (no right answer) gets an all-zero right row. Always finite.
    """
    texts = (query.response_left, query.response_right or "")
    lengths = np.array([len(t) for t in texts], dtype=np.float64)
    blocks = [trace_features(getattr(query, m), lengths) for m in MODALITIES]
    blocks.append(np.stack([text_features(t) for t in texts]))
    out = np.concatenate(blocks, axis=1)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def _matrix(queries: Iterable[Query]) -> FeatureMatrix:
    chosen = list(queries)
    X = np.zeros((len(chosen), 2, N_SIDE_FEATURES), dtype=np.float32)
    for i, q in enumerate(chosen):
        X[i] = side_features(q)
    y = np.array(
        [q.label_right if q.is_labelled_comparison else np.nan for q in chosen],
        dtype=np.float32,
    )
    ids = np.array([q.query_id for q in chosen], dtype=np.int64)
    return FeatureMatrix(X=X, y=y, query_ids=ids)


def featurize(queries: Sequence[Query]) -> FeatureMatrix:
    """Training matrix: one row per labelled comparison (left or right preferred; no ties)."""
    return _matrix(q for q in queries if q.is_labelled_comparison)


def featurize_for_scoring(queries: Sequence[Query]) -> FeatureMatrix:
    """Scoring matrix: every pairwise query with a right answer; ``y`` is NaN when unlabelled."""
    return _matrix(q for q in queries if q.pairwise and q.response_right is not None)
