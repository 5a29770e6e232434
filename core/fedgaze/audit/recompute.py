"""Independent recomputation of a device's epsilon with Google's ``dp_accounting`` (no Opacus).

A device's history is a sequence of events in the order it made them:

- a DP-SGD charge ``(sigma, q, steps)``: ``SelfComposed(PoissonSampled(q, Gaussian(sigma)),
  steps)``, accounted for one comparison against its absence;
- a label release at ``epsilon_label``: binary randomized response, at most once per
  comparison, so releases compose in parallel and the device pays one randomized response at
  the largest epsilon_label released so far.

The cumulative epsilon after an event is the smaller of two valid bounds: the RDP composition of
every DP-SGD charge and that randomized response (dp_accounting's RDP of each, added at every
order, then converted to ``(epsilon, delta)``), and the DP-SGD epsilon plus ``epsilon_label``
(basic composition with a pure ``epsilon_label``-DP release). The device computes the same two
bounds with Opacus for the DP-SGD part (:func:`fedgaze.privacy.accounting.epsilon_for`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fedgaze.privacy.central import quiet_absl
from fedgaze.privacy.label_dp import label_rdp


@dataclass(frozen=True)
class SgdCharge:
    """One DP-SGD charge: ``steps`` Poisson-subsampled Gaussian steps."""

    noise_multiplier: float
    sample_rate: float
    steps: int


@dataclass(frozen=True)
class LabelRelease:
    """One label release by randomized response at ``epsilon_label`` of ``released``
    comparisons released for the first time (a release of none costs nothing)."""

    epsilon_label: float
    released: int = 1


DeviceEvent = SgdCharge | LabelRelease


def sgd_event(sigma: float, q: float, steps: int) -> Any:
    """dp_accounting's event of one DP-SGD charge."""
    from dp_accounting import dp_event

    return dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), steps
    )


def cumulative_epsilons(events: Sequence[DeviceEvent], delta: float) -> list[float]:
    """The device's epsilon at ``delta`` after each of ``events`` (in order)."""
    from dp_accounting import rdp
    from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

    acc = rdp.RdpAccountant()
    label: float | None = None
    charged = False
    out: list[float] = []
    with quiet_absl():
        for event in events:
            if isinstance(event, SgdCharge):
                acc.compose(sgd_event(event.noise_multiplier, event.sample_rate, event.steps))
                charged = True
            elif event.released > 0:
                label = max(label or 0.0, event.epsilon_label)
            sgd = float(acc.get_epsilon(delta)) if charged else 0.0
            if label is None:
                out.append(sgd)
                continue
            total = acc.rdp + label_rdp(label, tuple(float(o) for o in acc.orders))
            composed = float(compute_epsilon(acc.orders, total, delta)[0])
            out.append(min(composed, sgd + label))
    return out


def rdp_epsilons(entries: Sequence[tuple[float, float, int, float]]) -> list[float]:
    """Cumulative RDP epsilon after each DP-SGD ``(sigma, q, steps, delta)`` entry."""
    from dp_accounting import rdp

    acc = rdp.RdpAccountant()
    out = []
    with quiet_absl():
        for sigma, q, steps, delta in entries:
            acc.compose(sgd_event(sigma, q, steps))
            out.append(float(acc.get_epsilon(delta)))
    return out


def pld_epsilon(entries: Sequence[tuple[float, float, int]], delta: float) -> float:
    """PLD epsilon of all DP-SGD ``(sigma, q, steps)`` entries at ``delta``."""
    from dp_accounting import pld

    if not entries:
        return 0.0
    acc = pld.PLDAccountant()
    with quiet_absl():
        for sigma, q, steps in entries:
            acc.compose(sgd_event(sigma, q, steps))
        return float(acc.get_epsilon(delta))
