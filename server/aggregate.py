"""Aggregation of device updates: FedAvg weighted by the number of training examples."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedgaze.federation.arrays import ModelState


def fedavg(updates: Sequence[tuple[ModelState, int]]) -> ModelState:
    """Average model states weighted by each device's example count.

    Updates with zero examples carry no information and are ignored; with no informative update
    at all there is nothing to average and the caller keeps its current model.
    """
    kept = [(state, n) for state, n in updates if n > 0]
    if not kept:
        raise ValueError("no update with a positive example count to aggregate")
    names = list(kept[0][0])
    for state, _ in kept[1:]:
        if list(state) != names:
            raise ValueError("updates disagree on parameter names")
    total = float(sum(n for _, n in kept))
    return {
        name: np.sum(
            [state[name].astype(np.float64) * (n / total) for state, n in kept], axis=0
        ).astype(kept[0][0][name].dtype)
        for name in names
    }


def weighted_mean(values: Sequence[tuple[float, int]]) -> float | None:
    """Mean of ``values`` weighted by their counts; None when nothing was counted."""
    total = sum(n for _, n in values)
    if total <= 0:
        return None
    return float(sum(v * n for v, n in values) / total)
