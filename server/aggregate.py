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


def _flat(state: ModelState, names: Sequence[str]) -> np.ndarray:
    return np.concatenate([np.asarray(state[k], dtype=np.float64).reshape(-1) for k in names])


def dp_fedavg(
    current: ModelState,
    updates: Sequence[ModelState],
    *,
    clip_norm: float,
    noise_multiplier: float,
    expected_devices: float,
    rng: np.random.Generator,
) -> tuple[ModelState, list[float]]:
    """Client-level DP FedAvg: clip each device's change, sum, add noise, divide by a constant.

    Each update's difference from ``current`` is scaled down to L2 norm at most ``clip_norm``
    (over all parameters together); the clipped differences are summed, Gaussian noise of
    standard deviation ``noise_multiplier * clip_norm`` is added to every coordinate, and the
    sum is divided by ``expected_devices`` (a fixed denominator, so one device's presence changes
    the result by at most ``clip_norm / expected_devices``; see
    :mod:`fedgaze.privacy.central`). Devices are weighted equally: weighting by example counts
    would break the per-device sensitivity. Returns the new state and each update's norm before
    clipping. ``rng`` must be seeded from a secret (OS entropy) in deployment.
    """
    if expected_devices <= 0:
        raise ValueError(f"expected_devices must be > 0, got {expected_devices}")
    names = list(current)
    base = _flat(current, names)
    total = np.zeros_like(base)
    norms = []
    for state in updates:
        if list(state) != names:
            raise ValueError("an update disagrees with the current model on parameter names")
        diff = _flat(state, names) - base
        norm = float(np.linalg.norm(diff))
        norms.append(norm)
        total += diff * min(1.0, clip_norm / norm) if norm > 0 else diff
    total += rng.normal(0.0, noise_multiplier * clip_norm, size=total.shape)
    new_flat = base + total / expected_devices
    out: ModelState = {}
    offset = 0
    for name in names:
        ref = np.asarray(current[name])
        out[name] = new_flat[offset : offset + ref.size].reshape(ref.shape).astype(ref.dtype)
        offset += ref.size
    return out, norms
