"""Privacy accounting for DP-SGD with Poisson sampling, on top of Opacus' accountants.

A history is a sequence of ``(noise_multiplier, sample_rate, steps)`` entries, exactly Opacus'
``IAccountant.history`` format: each entry is ``steps`` compositions of the Poisson-subsampled
Gaussian mechanism. Epsilon is always computed from the whole history, so it is cumulative
across rounds and process restarts as long as the history is persisted (see ``state.py``).
"""

from __future__ import annotations

import importlib.util
import math
import sys
import warnings
from collections.abc import Iterable, Sequence
from functools import cache, lru_cache
from pathlib import Path
from types import ModuleType

import numpy as np

from fedgaze.privacy.label_dp import label_rdp
from fedgaze.privacy.params import AccountantName

HistoryEntry = tuple[float, float, int]

RDP_ORDERS: tuple[float, ...] = (
    *(1 + x / 10.0 for x in range(1, 100)),
    *range(11, 64),
    128,
    256,
    512,
    1024,
)
"""RDP orders: Opacus' defaults extended to 1024, the same grid as ``dp_accounting``'s default."""


ORDER_GRID_NOTICE = "Optimal order is the"
"""Start of Opacus' warning that the best RDP order is at the grid's edge: the bound is still
valid, only possibly loose, so it is not shown to users."""


class BudgetExhausted(RuntimeError):
    """Training would push the device's epsilon over its budget; nothing was trained."""

    def __init__(self, spent: float, next_epsilon: float, budget: float, delta: float) -> None:
        self.spent = spent
        self.next_epsilon = next_epsilon
        self.budget = budget
        self.delta = delta
        super().__init__(
            f"privacy budget exhausted: spent epsilon {spent:.4g}, this round would reach "
            f"{next_epsilon:.4g} > budget {budget:.4g} (delta={delta:g})"
        )


def steps_per_epoch(n: int, batch_size: int) -> tuple[float, int]:
    """Sample rate and optimizer steps per epoch that Opacus' Poisson loader uses for ``n``.

    ``make_private`` sets ``sample_rate = 1 / len(data_loader)`` with ``len = ceil(n / b)``
    (so the expected batch is ``n / ceil(n / b) <= b``; equal to ``b / n`` when ``b`` divides
    ``n``, and 1 when ``n <= b``) and its sampler runs ``int(1 / sample_rate)`` batches per epoch,
    which float rounding makes one less than ``ceil(n / b)`` for some sizes. Mirroring both here
    lets the budget be checked before training against exactly what will be charged.
    """
    if n < 1 or batch_size < 1:
        raise ValueError(f"need n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    sample_rate = 1 / math.ceil(n / batch_size)
    return sample_rate, int(1 / sample_rate)


def merge_history(history: Iterable[Sequence[float]]) -> list[HistoryEntry]:
    """Validated history with equal ``(noise_multiplier, sample_rate)`` entries summed.

    Composition of identical mechanisms only depends on the total number of steps, so merging
    is exact and makes each epsilon query cost one term per distinct mechanism.
    """
    totals: dict[tuple[float, float], int] = {}
    for entry in history:
        sigma, rate, steps = (float(entry[0]), float(entry[1]), entry[2])
        if not (math.isfinite(sigma) and sigma > 0 and 0 < rate <= 1):
            raise ValueError(f"invalid history entry {tuple(entry)}")
        if int(steps) != steps or steps < 0:
            raise ValueError(f"invalid step count in history entry {tuple(entry)}")
        totals[(sigma, rate)] = totals.get((sigma, rate), 0) + int(steps)
    return [(s, q, k) for (s, q), k in totals.items() if k > 0]


@cache
def _opacus_rdp() -> ModuleType:
    """Opacus' RDP analysis, ``opacus/accountants/analysis/rdp.py`` (``compute_rdp``,
    ``get_privacy_spent``).

    That module needs only numpy and scipy, but importing it through the ``opacus`` package
    first imports torch and the rest of Opacus (about 3 s of CPU), which accounting alone
    (planning a run, auditing a ledger, a device's status) never uses. So where Opacus is not
    imported yet, the module is loaded from its file on its own; it is the same code either way.
    """
    if "opacus" not in sys.modules:
        package = importlib.util.find_spec("opacus")  # finds the package without importing it
        if package is not None and package.submodule_search_locations:
            path = Path(next(iter(package.submodule_search_locations)))
            spec = importlib.util.spec_from_file_location(
                "fedgaze.privacy._opacus_rdp", path / "accountants" / "analysis" / "rdp.py"
            )
            if spec is not None and spec.loader is not None:
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                return module
    from opacus.accountants.analysis import rdp

    return rdp


@lru_cache(maxsize=4096)
def _rdp_per_step(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    """RDP of one Poisson-subsampled Gaussian step at every order of :data:`RDP_ORDERS`.

    Opacus' ``compute_rdp`` is this vector times ``steps``; computing it costs ~0.1 s at
    fractional orders, and a device asks for the same few mechanisms every round, so it is
    cached (read-only) and scaled by the step count, which gives bit-identical results.
    """
    vec = np.asarray(
        _opacus_rdp().compute_rdp(
            q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=list(RDP_ORDERS)
        ),
        dtype=np.float64,
    )
    vec.setflags(write=False)
    return vec


def _rdp_epsilon(
    merged: Sequence[HistoryEntry], delta: float, label_epsilon: float | None = None
) -> float:
    """Opacus' RDP epsilon (same conversion as ``RDPAccountant``) from cached per-step RDP,
    plus one label release at ``label_epsilon`` (:func:`fedgaze.privacy.label_dp.label_rdp`)."""
    total = sum(
        (_rdp_per_step(sigma, rate) * steps for sigma, rate, steps in merged),
        np.zeros(len(RDP_ORDERS)),
    )
    if label_epsilon is not None:
        total = total + label_rdp(label_epsilon, RDP_ORDERS)
    eps, _ = _opacus_rdp().get_privacy_spent(orders=list(RDP_ORDERS), rdp=total, delta=delta)
    return float(eps)


def epsilon_for(
    history: Iterable[Sequence[float]],
    delta: float,
    accountant: AccountantName = "rdp",
    label_epsilon: float | None = None,
) -> float:
    """Epsilon at ``delta`` after every entry of ``history`` (0.0 for an empty history) and,
    with ``label_epsilon``, one randomized-response label release at that epsilon.

    ``"rdp"`` uses Opacus' ``RDPAccountant`` over :data:`RDP_ORDERS`; ``"prv"`` uses its
    ``PRVAccountant`` (numerical composition, tighter; the reported value is its upper bound).
    A label release is composed in RDP (:mod:`fedgaze.privacy.label_dp`); the result is the
    smaller of that bound and the DP-SGD epsilon plus ``label_epsilon`` (basic composition with
    a pure ``label_epsilon``-DP release), both valid.
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    merged = merge_history(history)
    if label_epsilon is not None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=ORDER_GRID_NOTICE, category=UserWarning)
            composed = _rdp_epsilon(merged, delta, label_epsilon)
        return min(composed, epsilon_for(merged, delta, accountant) + label_epsilon)
    if not merged:
        return 0.0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=ORDER_GRID_NOTICE, category=UserWarning)
        if accountant == "rdp":
            return _rdp_epsilon(merged, delta)
        if accountant == "prv":
            from opacus.accountants import PRVAccountant

            prv = PRVAccountant()
            prv.history = merged
            with np.errstate(divide="ignore"):  # log(1 - q) = -inf at q = 1 is handled
                return float(prv.get_epsilon(delta))
    raise ValueError(f"unknown accountant {accountant!r} (expected 'rdp' or 'prv')")


def epsilon_if(
    history: Iterable[Sequence[float]],
    next_entry: Sequence[float],
    delta: float,
    accountant: AccountantName = "rdp",
    label_epsilon: float | None = None,
) -> float:
    """Epsilon the history would reach with ``next_entry`` appended (for checks before training)."""
    return epsilon_for([*history, next_entry], delta, accountant, label_epsilon)


def check_budget(
    history: Sequence[Sequence[float]],
    next_entry: Sequence[float],
    *,
    delta: float,
    budget: float,
    accountant: AccountantName = "rdp",
    label_epsilon: float | None = None,
) -> tuple[float, float]:
    """``(spent, next)`` epsilons; :class:`BudgetExhausted` if ``next`` would exceed ``budget``.

    ``label_epsilon``: the device's label releases so far (the largest epsilon_label).
    """
    spent = epsilon_for(history, delta, accountant, label_epsilon)
    after = epsilon_if(history, next_entry, delta, accountant, label_epsilon)
    if after > budget:
        raise BudgetExhausted(spent, after, budget, delta)
    return spent, after


WORST_CASE_BATCHES: tuple[int, ...] = (1, 2, 3, 4, 8, 16, 32)
"""Batches per epoch checked for the worst case: small devices (one batch, sample rate 1)
spend the most, larger ones less (sample-rate amplification)."""


def worst_case_epsilon(
    noise_multiplier: float,
    *,
    rounds: int,
    local_epochs: int,
    delta: float,
    label_epsilon: float | None = None,
) -> float:
    """Largest epsilon a device reaches after ``rounds`` rounds at ``noise_multiplier`` (and a
    label release at ``label_epsilon``).

    A device with ``k`` Poisson batches per epoch (``k = ceil(n / batch_size)``) trains at
    sample rate ``1/k`` for ``k * local_epochs`` steps per round; the maximum is taken over
    :data:`WORST_CASE_BATCHES`.
    """
    return max(
        epsilon_for(
            [(noise_multiplier, 1.0 / k, k * local_epochs * rounds)],
            delta,
            label_epsilon=label_epsilon,
        )
        for k in WORST_CASE_BATCHES
    )


def calibrate_noise_multiplier(
    epsilon_budget: float,
    *,
    rounds: int,
    local_epochs: int,
    delta: float,
    tolerance: float = 0.01,
    label_epsilon: float | None = None,
) -> float:
    """A noise multiplier at which every device fits ``rounds`` rounds (and, with
    ``label_epsilon``, the label release after them) into ``epsilon_budget``, so a planned run
    is not cut short by exhausted budgets.

    Bisects on the one-batch device (sample rate 1, the largest spender), then confirms the
    worst case over :data:`WORST_CASE_BATCHES`. Devices still enforce their own budgets; this
    only plans the server's request.
    """
    if epsilon_budget <= 0:
        raise ValueError(f"epsilon budget must be > 0, got {epsilon_budget}")
    if label_epsilon is not None and epsilon_for([], delta, label_epsilon=label_epsilon) >= (
        epsilon_budget
    ):
        raise ValueError(
            f"epsilon_label {label_epsilon:g} leaves no room for training in the device "
            f"budget {epsilon_budget:g}"
        )
    steps = local_epochs * rounds

    def fits(sigma: float) -> bool:
        return epsilon_for([(sigma, 1.0, steps)], delta, label_epsilon=label_epsilon) <= (
            epsilon_budget
        )

    low, high = 0.3, 1.0
    while not fits(high):
        low, high = high, high * 2
        if high > 1e4:
            raise ValueError(
                f"no noise multiplier fits epsilon {epsilon_budget} into {rounds} rounds"
            )
    while high - low > tolerance:
        mid = (low + high) / 2
        low, high = (low, mid) if fits(mid) else (mid, high)
    sigma = round(high, 3)
    while (
        worst_case_epsilon(
            sigma,
            rounds=rounds,
            local_epochs=local_epochs,
            delta=delta,
            label_epsilon=label_epsilon,
        )
        > epsilon_budget
    ):
        sigma = round(sigma * 1.02 + 0.001, 3)
    return sigma
