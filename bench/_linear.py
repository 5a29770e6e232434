"""Linear Bradley-Terry models for the benchmarks that ask what simple models can reach.

Shared by ``bench/text_reward_ceiling.py`` and ``bench/behaviour_levers.py``: the L2-penalised
logistic fit without intercept, grouped inner folds, the longer-answer rule as a score, metrics
summarised over seeds, and their rendering.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

from fedgaze.model.evaluation import roc_auc


def metrics(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """Accuracy (score > 0 predicts right) and AUC."""
    return {"accuracy": float(np.mean((score > 0) == (y == 1))), "auc": roc_auc(y, score)}


def fit_bt(
    X: np.ndarray,
    y: np.ndarray,
    lam: float,
    bounds: list[tuple[float | None, float | None]] | None = None,
    point: tuple[np.ndarray, np.ndarray, float] | None = None,
) -> np.ndarray:
    """Weights minimising mean logistic loss + lam / 2 * |w|^2 (no intercept), by L-BFGS-B;
    ``bounds`` per weight; ``point`` = (P, t, weight) adds weight * mean (P w - t)^2."""

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = X @ w
        value = np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * lam * w @ w
        grad = X.T @ (expit(z) - y) / len(y) + lam * w
        if point is not None:
            P, t, weight = point
            res = P @ w - t
            value += weight * res @ res / len(t)
            grad = grad + 2 * weight * P.T @ res / len(t)
        return float(value), grad

    return minimize(loss, np.zeros(X.shape[1]), jac=True, method="L-BFGS-B", bounds=bounds).x


def inner_splits(
    owner: np.ndarray, train: np.ndarray, seed: int, folds: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Grouped folds of the workers in ``train``, dealt after a seeded shuffle (as
    ``reward_benchmark.grouped_splits`` deals devices)."""
    workers = np.random.default_rng(seed).permutation(np.unique(owner[train]))
    out = []
    for f in range(folds):
        held = np.isin(owner[train], workers[f::folds])
        out.append((train[~held], train[held]))
    return out


def rule_logits(lengths: np.ndarray) -> np.ndarray:
    """The rule as a score: right minus left characters, + 0.5 so that a tie goes right."""
    lengths = np.asarray(lengths, dtype=np.float64)
    return lengths[:, 1] - lengths[:, 0] + 0.5


def mean_std(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and population std over seeds of accuracy and AUC, with the per-seed values."""
    out: dict[str, Any] = {}
    for w in ("accuracy", "auc"):
        values = [float(m[w]) for m in per_seed]
        out |= {f"{w}_mean": statistics.mean(values), f"{w}_std": statistics.pstdev(values)}
    return out | {"per_seed": list(per_seed)}


def pair(cell: Mapping[str, Any]) -> str:
    """``acc ± std | auc ± std`` (no ± for a single value)."""
    if "accuracy_mean" not in cell:
        return f"{cell['accuracy']:.3f} | {cell['auc']:.3f}"
    return " | ".join(
        f"{cell[f'{w}_mean']:.3f} ± {cell[f'{w}_std']:.3f}" for w in ("accuracy", "auc")
    )


def gaps(cell: Mapping[str, Any], ref: Mapping[str, Any]) -> tuple[float, float]:
    """Points above ``ref`` in mean accuracy and mean AUC."""
    acc, auc_ = (100 * (cell[f"{w}_mean"] - ref[f"{w}_mean"]) for w in ("accuracy", "auc"))
    return acc, auc_


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into plain Python."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
