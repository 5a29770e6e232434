"""Noise calibration: the planned run fits every device's budget, and not by a wide margin."""

from __future__ import annotations

import pytest

from fedgaze.privacy.accounting import (
    calibrate_noise_multiplier,
    epsilon_for,
    worst_case_epsilon,
)


@pytest.mark.parametrize(("budget", "rounds"), [(8.0, 3), (3.0, 5), (1.0, 2)])
def test_calibrated_noise_fits_every_device_tightly(budget: float, rounds: int) -> None:
    sigma = calibrate_noise_multiplier(budget, rounds=rounds, local_epochs=1, delta=1e-5)
    assert worst_case_epsilon(sigma, rounds=rounds, local_epochs=1, delta=1e-5) <= budget
    # A device with one Poisson batch (sample rate 1) spends the most; 3% less noise overspends.
    assert epsilon_for([(sigma * 0.97, 1.0, rounds)], 1e-5) > budget


@pytest.mark.slow
def test_more_rounds_need_more_noise() -> None:
    few = calibrate_noise_multiplier(8.0, rounds=2, local_epochs=1, delta=1e-5)
    many = calibrate_noise_multiplier(8.0, rounds=6, local_epochs=1, delta=1e-5)
    assert many > few


def test_rejects_nonpositive_budget() -> None:
    with pytest.raises(ValueError, match="budget"):
        calibrate_noise_multiplier(0.0, rounds=3, local_epochs=1, delta=1e-5)
