"""Deliberately broken mechanisms, for the privacy audits' self-tests only.

Each context manager breaks one mechanism process-wide for the duration of its block while
leaving what the accountant charges unchanged, so an audit can show that it catches the bug:
:func:`noise_scaled` scales the Gaussian noise Opacus' DP-SGD adds (0: none at all, 0.5: half
the claimed noise multiplier), :func:`flips_scaled` scales the flip probability of the label
release's randomized response (0: no flips, 0.5: half the claimed flips). Not thread-safe: never
use them where other training or releases run concurrently. Each raises if the mechanism was
never reached, so that a stale hook cannot make a self-test pass silently.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import opacus.optimizers.optimizer as opacus_optimizer
import torch

from fedgaze.privacy import label_dp

__all__ = ["flips_scaled", "noise_scaled"]


@contextmanager
def noise_scaled(factor: float) -> Iterator[None]:
    """Opacus adds ``factor`` times the Gaussian noise it claims inside this block.

    Replaces ``opacus.optimizers.optimizer._generate_noise`` (what ``DPOptimizer.add_noise``
    calls); the optimizer's ``noise_multiplier``, and so the claimed epsilon, are unchanged.
    """
    if not 0.0 <= factor < 1.0:
        raise ValueError(f"factor must be in [0, 1) (a broken mechanism), got {factor}")
    original = opacus_optimizer._generate_noise
    calls = 0

    def scaled(
        std: float, reference: torch.Tensor, generator: object = None, secure_mode: bool = False
    ) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if factor == 0.0:
            return torch.zeros(reference.shape, device=reference.device, dtype=reference.dtype)
        return original(std * factor, reference, generator, secure_mode)

    opacus_optimizer._generate_noise = scaled
    try:
        yield
    finally:
        opacus_optimizer._generate_noise = original
    if calls == 0:
        raise RuntimeError("noise_scaled: Opacus did not call _generate_noise; hook is stale")


@contextmanager
def flips_scaled(factor: float) -> Iterator[None]:
    """Randomized response flips with ``factor`` times its claimed probability in this block.

    Replaces :func:`fedgaze.privacy.label_dp.flip_rate` where
    :func:`~fedgaze.privacy.label_dp.randomized_response` looks it up.
    """
    if not 0.0 <= factor < 1.0:
        raise ValueError(f"factor must be in [0, 1) (a broken mechanism), got {factor}")
    original = label_dp.flip_rate
    calls = 0

    def scaled(epsilon_label: float) -> float:
        nonlocal calls
        calls += 1
        return factor * original(epsilon_label)

    label_dp.flip_rate = scaled
    try:
        yield
    finally:
        label_dp.flip_rate = original
    if calls == 0:
        raise RuntimeError("flips_scaled: randomized_response did not ask for its flip rate")
