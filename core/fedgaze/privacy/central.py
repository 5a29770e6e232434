"""Client-level (central) differential privacy of the aggregate, accounted with ``dp_accounting``.

With client-level DP the server clips each device's whole update to L2 norm ``clip_norm``, sums
the clipped updates, adds Gaussian noise of standard deviation ``noise_multiplier * clip_norm``
and divides by the expected number of devices (DP-FedAvg, McMahan et al. 2018). One round is then
a Gaussian mechanism on the sum with sensitivity ``clip_norm`` with respect to adding or removing
one device's entire data; with devices sampled independently with probability ``sample_rate``
each round it is the Poisson-subsampled Gaussian mechanism. The protected unit is a whole person,
and the epsilon holds against anyone who sees the released models (other devices, observers),
not against the server that adds the noise.

Accounting uses Google's ``dp_accounting`` (RDP, and PLD for a tighter number), never a
hand-written bound; it is imported on first use (with scipy's signal and stats packages it costs
about 1 s of CPU, which runs without client-level DP never need).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import dp_accounting

CentralAccountant = Literal["rdp", "pld"]

__all__ = ["CentralDPConfig", "calibrate_central_noise", "central_epsilon"]


class CentralDPConfig(BaseModel):
    """Client-level DP parameters of the server's aggregation (validated, immutable).

    ``sample_rate`` is the probability that a device takes part in a round (1.0: every device,
    every round, which the accountant treats as no sampling at all).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    noise_multiplier: float = Field(gt=0, allow_inf_nan=False)
    clip_norm: float = Field(gt=0, allow_inf_nan=False)
    sample_rate: float = Field(default=1.0, gt=0, le=1)
    delta: float = Field(default=1e-5, gt=0, lt=1)


@contextmanager
def quiet_absl() -> Iterator[None]:
    """Silence dp_accounting's notices while accounting: it logs (through absl) each
    fractional RDP order it cannot evaluate and then excludes it (the bound stays valid)."""
    log = logging.getLogger("absl")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _event(noise_multiplier: float, sample_rate: float, rounds: int) -> dp_accounting.DpEvent:
    import dp_accounting

    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
    one = (
        gaussian
        if sample_rate >= 1.0
        else dp_accounting.PoissonSampledDpEvent(sample_rate, gaussian)
    )
    return dp_accounting.SelfComposedDpEvent(one, rounds)


def central_epsilon(
    noise_multiplier: float,
    *,
    sample_rate: float,
    rounds: int,
    delta: float,
    accountant: CentralAccountant = "rdp",
) -> float:
    """Client-level epsilon at ``delta`` after ``rounds`` noised aggregations (0.0 for none)."""
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds}")
    if rounds == 0:
        return 0.0
    import dp_accounting

    event = _event(noise_multiplier, sample_rate, rounds)
    acc: dp_accounting.PrivacyAccountant = (
        dp_accounting.rdp.RdpAccountant()
        if accountant == "rdp"
        else dp_accounting.pld.PLDAccountant()
    )
    with quiet_absl():
        acc.compose(event)
        return float(acc.get_epsilon(delta))


def calibrate_central_noise(
    epsilon: float,
    *,
    sample_rate: float,
    rounds: int,
    delta: float,
    tolerance: float = 0.005,
) -> float:
    """The smallest noise multiplier (to ``tolerance``) whose RDP epsilon after ``rounds`` is at
    most ``epsilon``; the returned value always satisfies the target."""
    if epsilon <= 0 or rounds < 1:
        raise ValueError(f"need epsilon > 0 and rounds >= 1, got {epsilon} and {rounds}")

    def fits(sigma: float) -> bool:
        return (
            central_epsilon(sigma, sample_rate=sample_rate, rounds=rounds, delta=delta) <= epsilon
        )

    low, high = 0.1, 1.0
    while not fits(high):
        low, high = high, high * 2
        if high > 1e4:
            raise ValueError(f"no noise multiplier reaches epsilon {epsilon} in {rounds} rounds")
    while high - low > tolerance:
        mid = (low + high) / 2
        low, high = (low, mid) if fits(mid) else (mid, high)
    return high
