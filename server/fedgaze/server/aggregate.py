"""Aggregation of device updates: FedAvg weighted by the number of training examples, the
robust coordinate-wise trimmed mean and median, and client-level DP FedAvg.

FedAvg and the median are Flower's own (``flwr.server.strategy.aggregate``), run in float64 on
the parameters in name order. The trimmed mean is ours: Flower's trims ``floor(beta * n)``
values from each end, which is none at all for fewer than ``1 / beta`` devices, while a server
that asked for trimming should drop at least one (``ceil``, :func:`trim_count`). DP-FedAvg is
ours too: Flower's fixed-clipping wrapper fails a round whose replies are fewer than the sample
size it was built with, while ours divides by the expected device count whatever arrives (the
sensitivity stays ``clip_norm / expected``), so a device that drops out costs a round nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from flwr.server.strategy.aggregate import aggregate as flwr_weighted_average
from flwr.server.strategy.aggregate import aggregate_median

from fedgaze.federation.settings import Aggregation
from fedgaze.model.weights import ModelState


def _layers(state: ModelState, names: Sequence[str]) -> list[np.ndarray]:
    return [np.asarray(state[name], dtype=np.float64) for name in names]


def _named(layers: Sequence[np.ndarray], like: ModelState) -> ModelState:
    """Flower's per-layer result back into a model state with ``like``'s names and dtypes."""
    return {
        name: np.asarray(layer).astype(np.asarray(like[name]).dtype)
        for name, layer in zip(like, layers, strict=True)
    }


def fedavg(updates: Sequence[tuple[ModelState, int]]) -> ModelState:
    """Average model states weighted by each device's example count.

    Updates with zero examples carry no information and are ignored; with no informative update
    at all there is nothing to average and the caller keeps its current model.
    """
    kept = [(state, n) for state, n in updates if n > 0]
    if not kept:
        raise ValueError("no update with a positive example count to aggregate")
    names = _check_names([state for state, _ in kept])
    averaged = flwr_weighted_average([(_layers(state, names), n) for state, n in kept])
    return _named(averaged, kept[0][0])


def _stacked(updates: Sequence[ModelState], name: str) -> np.ndarray:
    return np.stack([np.asarray(state[name], dtype=np.float64) for state in updates])


def _check_names(updates: Sequence[ModelState]) -> list[str]:
    if not updates:
        raise ValueError("no update to aggregate")
    names = list(updates[0])
    for state in updates[1:]:
        if list(state) != names:
            raise ValueError("updates disagree on parameter names")
    return names


def trim_count(n: int, trim_fraction: float) -> int:
    """How many values the trimmed mean drops at each end of ``n``: ``ceil(trim_fraction * n)``,
    but never so many that nothing is left (at most ``(n - 1) // 2``)."""
    if not 0 <= trim_fraction < 0.5:
        raise ValueError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")
    return min(math.ceil(trim_fraction * n), (n - 1) // 2)


def trimmed_mean(updates: Sequence[ModelState], trim_fraction: float) -> ModelState:
    """Coordinate-wise trimmed mean: per coordinate, drop the ``ceil(trim_fraction * n)``
    largest and smallest values of the ``n`` updates and average the rest (unweighted).

    Devices are weighted equally: weighting by the example counts the devices themselves report
    would let one device claim a huge count. With too few updates to drop that many (fewer than
    ``2 * ceil(trim_fraction * n) + 1``) fewer are dropped, see :func:`trim_count`.
    """
    names = _check_names(updates)
    k = trim_count(len(updates), trim_fraction)
    out: ModelState = {}
    for name in names:
        stacked = np.sort(_stacked(updates, name), axis=0)
        kept = stacked[k : len(updates) - k]
        out[name] = kept.mean(axis=0).astype(np.asarray(updates[0][name]).dtype)
    return out


def coordinate_median(updates: Sequence[ModelState]) -> ModelState:
    """Coordinate-wise median of the updates (unweighted; the mean of the two middle values
    for an even count)."""
    names = _check_names(updates)
    return _named(aggregate_median([(_layers(state, names), 1) for state in updates]), updates[0])


def aggregate(
    updates: list[tuple[ModelState, int]], rule: Aggregation, trim_fraction: float
) -> ModelState:
    """Combine the accepted updates with ``rule``."""
    if rule == "trimmed-mean":
        return trimmed_mean([u for u, _ in updates], trim_fraction)
    if rule == "median":
        return coordinate_median([u for u, _ in updates])
    return fedavg(updates)


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
