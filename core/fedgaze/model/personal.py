"""On-device personalization: a small per-person correction on top of the shared reward model.

People differ in how their reading shows a preference (some read the answer they like longer,
some re-read the one they doubt) and in a plain position habit (some pick the right answer more
often). The shared model is antisymmetric and cannot express either for one person, so each
device fits its own :class:`PersonalHead`: a side bias ``b`` and a linear term ``w`` on the
right-minus-left feature difference, added to the shared model's logit:

    logit_personal(x) = logit_shared(x) + b + w . (x_right - x_left)

It is fitted by maximum a posteriori logistic regression with the shared logit as a fixed
offset and Gaussian priors centred on zero (``bias_prior_sd``, ``weight_prior_sd``), so with
few comparisons the head stays close to the shared model and only moves as a person's own labels
accumulate. The head never leaves the device: it is not part of the federated update, so it
needs no DP noise to protect the person from the server (their data stays where it was).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from fedgaze.atomic import write_json_atomic

BIAS_PRIOR_SD = 1.0
"""Prior standard deviation of a person's side bias (logit units)."""

WEIGHT_PRIOR_SD = 0.1
"""Prior standard deviation of each personal feature weight; small, because a person has few
labels and many features, so most of the signal must come from the shared model."""


@dataclass(frozen=True, eq=False)
class PersonalHead:
    """A person's side bias and feature weights on ``x_right - x_left``; zero means no change."""

    bias: float
    weights: np.ndarray

    @classmethod
    def zero(cls, n_features: int) -> PersonalHead:
        """The head of a person with no labels yet: predictions equal the shared model's."""
        return cls(bias=0.0, weights=np.zeros(n_features))

    def adjust(self, shared_logits: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Personal logits for comparisons ``X`` (n, 2, F) given the shared model's logits."""
        diff = np.asarray(X, dtype=np.float64)[:, 1] - np.asarray(X, dtype=np.float64)[:, 0]
        return np.asarray(shared_logits, dtype=np.float64) + self.bias + diff @ self.weights


def fit_personal_head(
    shared_logits: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    *,
    bias_prior_sd: float = BIAS_PRIOR_SD,
    weight_prior_sd: float = WEIGHT_PRIOR_SD,
) -> PersonalHead:
    """MAP fit of a :class:`PersonalHead` on one device's labelled comparisons.

    ``shared_logits`` are the shared model's logits on ``X`` (n, 2, F); ``y`` is 1 where the
    right answer was preferred. The objective is convex (logistic loss plus a quadratic prior),
    so L-BFGS finds its unique minimum; with no rows the zero head is returned.
    """
    Xa = np.asarray(X, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64).reshape(-1)
    offset = np.asarray(shared_logits, dtype=np.float64).reshape(-1)
    if Xa.ndim != 3 or Xa.shape[1] != 2 or not len(Xa) == len(ya) == len(offset):
        raise ValueError(f"expected X (n, 2, F), y (n,), logits (n,); got {Xa.shape}")
    n_features = Xa.shape[2]
    if len(ya) == 0:
        return PersonalHead.zero(n_features)
    design = np.column_stack([np.ones(len(ya)), Xa[:, 1] - Xa[:, 0]])
    precision = np.concatenate(
        [[1.0 / bias_prior_sd**2], np.full(n_features, 1.0 / weight_prior_sd**2)]
    )
    sign = 2.0 * ya - 1.0

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        margin = sign * (offset + design @ theta)
        loss = -float(log_expit(margin).sum()) + 0.5 * float(precision @ theta**2)
        grad = -design.T @ (sign * expit(-margin)) + precision * theta
        return loss, grad

    result = minimize(objective, np.zeros(n_features + 1), jac=True, method="L-BFGS-B")
    return PersonalHead(bias=float(result.x[0]), weights=np.asarray(result.x[1:]))


def save_personal_head(path: str | Path, head: PersonalHead) -> None:
    """Store a head on the device (atomic JSON), replacing the previous one."""
    write_json_atomic(
        path, {"format": 1, "bias": head.bias, "weights": [float(w) for w in head.weights]}
    )


def load_personal_head(path: str | Path) -> PersonalHead:
    """Read a head written by :func:`save_personal_head`; ValueError naming the file if bad."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("format") != 1:
            raise ValueError(f"unknown format {data.get('format')!r}")
        weights = np.asarray(data["weights"], dtype=np.float64)
        bias = float(data["bias"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a personal head ({err})") from None
    if not (np.isfinite(bias) and np.isfinite(weights).all()):
        raise ValueError(f"{path}: personal head has non-finite values")
    return PersonalHead(bias=bias, weights=weights)
