"""Scoring a reward model on labelled comparisons (no privacy machinery needed)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from scipy.stats import rankdata

from fedgaze.model.reward import model_from_state, predict_logits


def evaluate(
    model_state: Mapping[str, np.ndarray], X: np.ndarray, y: np.ndarray
) -> tuple[float, float, int]:
    """Mean log loss, accuracy and count over the labelled rows (``y`` not NaN).

    Returns ``(nan, nan, 0)`` when no row is labelled. Not differentially private.
    """
    ya = np.asarray(y, dtype=np.float64).reshape(-1)
    keep = np.isfinite(ya)
    if not keep.any():
        return math.nan, math.nan, 0
    logits = predict_logits(model_from_state(model_state), np.asarray(X)[keep])
    yk = ya[keep]
    # Log loss from logits, stable for large |logit|: softplus(z) - y z.
    loss = np.mean(np.logaddexp(0.0, logits) - yk * logits)
    accuracy = np.mean((logits > 0) == (yk == 1))
    return float(loss), float(accuracy), int(keep.sum())


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC of ``score`` for binary ``y`` by the rank-sum formula (ties share ranks).

    NaN when only one class is present, where AUC is undefined.
    """
    ya = np.asarray(y, dtype=np.float64).reshape(-1)
    pos = int((ya == 1).sum())
    neg = len(ya) - pos
    if pos == 0 or neg == 0:
        return math.nan
    ranks = rankdata(np.asarray(score, dtype=np.float64).reshape(-1))
    return float((ranks[ya == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))
