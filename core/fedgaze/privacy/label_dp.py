"""Label DP by randomized response: the mechanism a device releases a preference bit with.

A released bit is the device's bit ``b`` (the person's explicit choice, or the behaviour model's
inference) kept with probability ``1 - rho`` and flipped with probability
``rho = 1 / (1 + e^epsilon_label)``. Changing the comparison changes the bit's distribution by a
factor of at most ``(1 - rho) / rho = e^epsilon_label``: the release is ``epsilon_label``-DP
for one comparison (the replace-one relation, the usual statement of label DP).

Accounting (:func:`label_rdp`). The device's DP-SGD charges are accounted for one comparison
against its absence (Poisson add/remove, which for DP-SGD is the same as replacing the
comparison by a null one that adds no gradient). A label release is composed with them under
that relation: the null comparison's bit is a fair coin, the even mixture of the two bits'
distributions, so by the joint quasi-convexity of Renyi divergence the replace-one RDP of
randomized response bounds its RDP against the null comparison at every order. dp_accounting
computes it (``RandomizedResponseDpEvent(noise_parameter=2 rho, num_buckets=2)``: keep with
probability ``1 - p``, else a uniform bucket, so a flip has probability ``p / 2 = rho``) and the
device adds it to the RDP of its DP-SGD charges.

Each comparison is released at most once and its bit depends only on that comparison (its own
traces and choice, through the DP-released global model: post-processing), so releases of
different comparisons compose in parallel: every comparison pays one randomized response, at the
epsilon_label it was released with, and the device's worst case is the largest of them.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from functools import lru_cache

import numpy as np


def flip_rate(epsilon_label: float) -> float:
    """The probability ``1 / (1 + e^epsilon_label)`` that randomized response flips a bit."""
    if not (math.isfinite(epsilon_label) and epsilon_label > 0):
        raise ValueError(f"epsilon_label must be a finite number > 0, got {epsilon_label!r}")
    return 1.0 / (1.0 + math.exp(epsilon_label))


def flip_rate_matches(epsilon_label: float, rate: float, rel_tol: float = 1e-9) -> bool:
    """True when ``rate`` is the flip rate of ``epsilon_label`` (within ``rel_tol``)."""
    try:
        return math.isclose(flip_rate(epsilon_label), float(rate), rel_tol=rel_tol)
    except (TypeError, ValueError):
        return False


def randomized_response(
    bits: Sequence[int] | np.ndarray, epsilon_label: float, seed: int | None = None
) -> np.ndarray:
    """``bits`` (0 or 1) each flipped independently with probability :func:`flip_rate`.

    The randomness comes from ``seed``, or from the OS's secret entropy when None (what a
    device uses: a server that knew the seed could undo the flips).
    """
    arr = np.asarray(bits, dtype=np.int64).reshape(-1)
    if not np.isin(arr, (0, 1)).all():
        raise ValueError("randomized response takes bits 0 or 1")
    rng = np.random.default_rng(secrets.randbits(128) if seed is None else seed)
    flips = rng.random(len(arr)) < flip_rate(epsilon_label)
    return np.where(flips, 1 - arr, arr).astype(np.int64)


def rr_noise_parameter(epsilon_label: float) -> float:
    """dp_accounting's noise parameter of binary randomized response at ``epsilon_label``."""
    return 2.0 * flip_rate(epsilon_label)


@lru_cache(maxsize=256)
def label_rdp(epsilon_label: float, orders: tuple[float, ...]) -> np.ndarray:
    """RDP at ``orders`` of one binary randomized response at ``epsilon_label`` (read-only).

    Computed by dp_accounting's ``RdpAccountant`` under the replace-one relation (see the
    module docstring for why it bounds the cost against a null comparison too).
    """
    from dp_accounting import dp_event
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    accountant = rdp.RdpAccountant(list(orders), rdp.NeighborRel.REPLACE_ONE)
    accountant.compose(dp_event.RandomizedResponseDpEvent(rr_noise_parameter(epsilon_label), 2))
    vec = np.asarray(accountant.rdp, dtype=np.float64)
    vec.setflags(write=False)
    return vec


def expected_accuracy(accuracy: float, epsilon_label: float | None) -> float:
    """Agreement with the truth after randomized response of bits that agree with probability
    ``accuracy``: ``a (1 - rho) + (1 - a) rho`` (``accuracy`` itself without noise)."""
    if epsilon_label is None:
        return accuracy
    rho = flip_rate(epsilon_label)
    return accuracy * (1 - rho) + (1 - accuracy) * rho


def effective_labels(n: int, accuracy: float) -> float:
    """How many perfectly correct labels ``n`` labels of agreement ``accuracy`` are worth.

    ``n (2 a - 1)^2``: after debiasing, a label that agrees with the truth with probability
    ``a`` estimates a preference with ``1 / (2 a - 1)^2`` times the variance of a correct one.
    """
    return float(n * (2 * accuracy - 1) ** 2)
