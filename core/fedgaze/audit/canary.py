"""Empirical privacy audit of local DP-SGD from one training run, with coin-flip canaries.

Implements the audit of T. Steinke, M. Nasr and M. Jagielski, "Privacy Auditing with One (1)
Training Run", NeurIPS 2023 (arXiv:2305.08846), on fedgaze's real device training path
(:func:`fedgaze.privacy.dp_train.train_local`: Opacus DP-SGD with Poisson sampling,
per-example clipping and Gaussian noise, one comparison = one DP example).

Procedure (:func:`run_canary_audit`):

1. ``m`` canary comparisons are drawn (see :func:`make_canaries`), and each one is included in
   the training set independently with probability 1/2 (``S_i = +1`` included, ``-1`` not),
   on top of a fixed base training set (the embedded synthetic cohort's features, or real
   features given by the caller).
2. The model is trained once with :func:`~fedgaze.privacy.dp_train.train_local` (a fresh
   :class:`~fedgaze.privacy.state.PrivacyState`; the claimed epsilon is the one the project's
   accountant charges for that run).
3. Every canary is scored by the log-likelihood of its label under the trained model minus
   under the initial model (training on a canary raises its likelihood). The auditor guesses
   "included" for the ``k_plus`` highest scores, "excluded" for the ``k_minus`` lowest, and
   abstains on the rest: ``r = k_plus + k_minus`` guesses, fixed before the run, of which
   ``v`` are correct.
4. :func:`epsilon_lower_bound` turns ``(m, r, v, delta)`` into the largest epsilon that the
   observation rules out at the given confidence (their main theorem, below).

The bound (Steinke, Nasr and Jagielski, main theorem for approximate DP, Section 3): let the
mechanism be (epsilon, delta)-DP with respect to adding or removing one canary, let
``S`` be uniform on {-1, +1}^m and let the auditor make at most ``r`` guesses
``T in {-1, 0, +1}^m`` from the output only. Write ``W`` for the number of correct guesses and

    f(v) = P[Binomial(r, e^eps / (e^eps + 1)) >= v].

Then for every ``v``,

    P[W >= v] <= f(v) + 2 m delta * max_{i = 1..m} (f(v - i) - f(v)) / i.

With ``delta = 0`` this is their pure-DP theorem: the number of correct guesses is stochastically
dominated by ``r`` guesses of eps-randomized response. The right-hand side is the p-value
(:func:`audit_p_value`) of observing ``v`` correct guesses if the training were
(epsilon, delta)-DP; the reported lower bound is the largest epsilon whose p-value is at most
``1 - confidence``. It is valid at that confidence: if the training is (eps*, delta)-DP it is
(eps, delta)-DP for every eps >= eps*, so reporting a bound above eps* requires an observation
whose p-value at some eps >= eps* is <= 1 - confidence, which has probability <= 1 - confidence.
The search (grid, then bisection) only ever returns an epsilon whose p-value was checked to be
<= 1 - confidence, so numerical error can only make the bound smaller (conservative).

What the audit shows: a lower bound above the claimed epsilon means the implementation (or its
accounting) is broken, at the configured confidence (95% by default). A bound below the claim
is consistent, not a proof of privacy: this is a black-box, input-space audit of one run, and
for correctly noised DP-SGD it is typically far below the claim. The white-box audit with
gradient canaries (:mod:`fedgaze.audit.dirac`) is much stronger and is ``fedgaze audit
canary``'s default; this one is ``--kind input``.

Canary choice (:func:`make_canaries`): canaries are built against the initial model (which the
auditor knows: the server sends it) so that their clipped gradients are nearly orthogonal to
each other. A canary's left and right answers are chosen so that (a) on both sides the model's
hidden units all have the same pre-activation, hence its initial logit is exactly 0 and its
loss gradient the same size for every canary; (b) one hidden unit, ``k = i mod H``, sits at
pre-activation 0 (tanh in its linear range) while every other unit is saturated at +-
``canary_saturation`` (tanh' ~ 0), so the canary's gradient lies almost entirely in the first-
layer weights of unit ``k``; (c) within that row it points along ``[d, 2d]`` with ``d`` the
difference right - left, taken from an orthonormal basis (randomly rotated) of the directions
that leave every hidden pre-activation equal on both sides. Up to ``H (F - H)`` canaries (1072
for 16 hidden units and 83 features) therefore have mutually orthogonal gradients; beyond that
``d`` is a random unit vector of the same subspace. Labels are uniformly random, so a canary's
effect on its own score depends on whether it was trained on. Input-space canaries with random
directions do much worse on this small MLP: its (near-linear) output only has about F degrees
of freedom, so hundreds of them drown each other out even without noise. The base set also
pulls on the canaries' scores; its default is one synthetic device of 30 comparisons (a typical
device), where a larger base weakens the audit (more drift per canary) but does not bias it.

Cost: with the defaults (m = 1000 canaries, about 500 included plus 30 base comparisons,
batch 100, 10 local epochs, 60 DP-SGD steps) one audit takes about a second on one core.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from scipy.linalg import null_space
from scipy.stats import binom

from fedgaze import defaults
from fedgaze.audit.broken import noise_scaled
from fedgaze.audit.outcome import AuditSummary
from fedgaze.data.synthetic import generate_cohort
from fedgaze.features.v2 import featurize_device
from fedgaze.model.reward import PairwiseRewardModel, model_from_state, state_to_numpy
from fedgaze.privacy.accounting import epsilon_for
from fedgaze.privacy.dp_train import DPConfig, train_local
from fedgaze.privacy.params import DeviceBudget, DPSGDParams
from fedgaze.privacy.state import PrivacyState

__all__ = [
    "CanaryAuditConfig",
    "CanaryAuditResult",
    "audit_p_value",
    "epsilon_lower_bound",
    "format_result",
    "make_canaries",
    "run_canary_audit",
]

FloatArray = npt.NDArray[np.float64]

_AUDIT_RUN_ID = "canary-audit"
_NO_BUDGET = 1e12
"""Epsilon budget of the audit's fresh ledger: the audit measures, it does not enforce."""
_GRID_STEP = 0.01
_BISECTION_STEPS = 40
_EXACT_TERMS = 2048


# --------------------------------------------------------------------------------------------
# The statistical bound (Steinke, Nasr and Jagielski 2023)
# --------------------------------------------------------------------------------------------


def _check_counts(m: int, r: int, v: int, delta: float) -> None:
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= correct <= guesses <= canaries, got v={v}, r={r}, m={m}")
    if not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1), got {delta}")


def _p_values(eps: FloatArray, m: int, r: int, v: int, delta: float) -> FloatArray:
    """The theorem's p-value at each epsilon of ``eps`` (vectorized; see :func:`audit_p_value`)."""
    eps = np.asarray(eps, dtype=np.float64)
    q = 1.0 / (1.0 + np.exp(-eps))  # accuracy of eps-randomized response, e^eps / (e^eps + 1)
    tail = binom.sf(v - 1, r, q)  # f(v) = P[Binomial(r, q) >= v]
    if delta == 0 or v == 0:
        return np.minimum(tail, 1.0)
    # f(v - i) - f(v) = P[v - i <= B <= v - 1] = sum_{j=1..i} P[B = v - j], for i = 1..v;
    # for i > v the numerator stays 1 - f(v) and the ratio only shrinks, so i <= v suffices.
    # Beyond i = _EXACT_TERMS every ratio is at most (1 - f(v)) / (_EXACT_TERMS + 1): that
    # cap stands in for them, which can only raise the p-value (conservative).
    terms = min(v, _EXACT_TERMS)
    below = np.arange(v - 1, v - 1 - terms, -1)  # v - 1, v - 2, ..., v - terms
    pmf = binom.pmf(below[None, :], r, q[..., None])
    ratios = (np.cumsum(pmf, axis=-1) / np.arange(1, terms + 1)).max(axis=-1)
    if terms < v:
        ratios = np.maximum(ratios, (1.0 - tail) / (terms + 1))
    return np.minimum(tail + 2.0 * m * delta * ratios, 1.0)


def audit_p_value(eps: float, *, m: int, r: int, v: int, delta: float) -> float:
    """P-value of ``v`` correct guesses out of ``r`` (``m`` canaries) under (eps, delta)-DP.

    Steinke, Nasr and Jagielski (NeurIPS 2023), main theorem for approximate DP: if training
    is (eps, delta)-DP with respect to each canary, which is included independently with
    probability 1/2, then
    ``P[W >= v] <= f(v) + 2 m delta max_{i>=1} (f(v - i) - f(v)) / i`` with
    ``f(v) = P[Binomial(r, e^eps / (e^eps + 1)) >= v]``; this returns that bound (capped at 1).
    """
    _check_counts(m, r, v, delta)
    if eps < 0 or not math.isfinite(eps):
        raise ValueError(f"eps must be finite and >= 0, got {eps}")
    return float(_p_values(np.array([eps]), m, r, v, delta)[0])


def epsilon_lower_bound(*, m: int, r: int, v: int, delta: float, confidence: float = 0.95) -> float:
    """Largest epsilon that ``v`` correct guesses out of ``r`` rule out at ``confidence``.

    That is ``sup {eps >= 0 : audit_p_value(eps) <= 1 - confidence}`` (0.0 when even eps = 0
    is not rejected): with probability at least ``confidence`` over the canaries' coin flips
    and the training's randomness, an (eps*, delta)-DP training gives a bound <= eps*.

    Only epsilons beyond which the pure term f(v) alone exceeds ``1 - confidence`` can be
    excluded from the search (f(v) increases with eps and the delta term is >= 0); below that
    a grid of step 0.01 finds the largest rejected grid point, and bisection refines it towards
    the next, keeping an endpoint whose p-value was checked, so the result never overstates.
    """
    _check_counts(m, r, v, delta)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = 1.0 - confidence
    if v == 0 or _p_values(np.zeros(1), m, r, v, delta)[0] > alpha:
        return 0.0
    hi = 1.0
    while binom.sf(v - 1, r, 1.0 / (1.0 + math.exp(-hi))) <= alpha:
        hi *= 2.0
        if hi > 1e4:  # the pure term tends to 1 for v <= r; unreachable in practice
            raise RuntimeError("epsilon lower bound search did not terminate")
    grid = np.arange(0.0, hi + _GRID_STEP, _GRID_STEP)
    rejected = np.flatnonzero(_p_values(grid, m, r, v, delta) <= alpha)
    lo = float(grid[rejected[-1]])
    up = lo + _GRID_STEP
    for _ in range(_BISECTION_STEPS):
        mid = (lo + up) / 2
        if _p_values(np.array([mid]), m, r, v, delta)[0] <= alpha:
            lo = mid
        else:
            up = mid
    return lo


# --------------------------------------------------------------------------------------------
# Configuration and result
# --------------------------------------------------------------------------------------------


class CanaryAuditConfig(DPSGDParams):
    """What to audit (the DP-SGD hyperparameters of one local round) and how.

    ``m`` canaries, each included with probability 1/2; ``k_plus`` "included" and ``k_minus``
    "excluded" guesses (fixed in advance: choosing them after seeing the scores would void the
    bound); ``confidence`` of the lower bound; ``seed`` fixes the canaries, their coin flips,
    the base cohort and the initial model (the DP noise and Poisson sampling use the training
    path's own secret seed). The DP-SGD hyperparameters and ``delta`` are the
    :class:`~fedgaze.privacy.dp_train.DPConfig` under audit; ``canary_norm`` is the length of
    the difference between a canary's two answers and ``canary_saturation`` the pre-activation
    of its saturated hidden units (see :func:`make_canaries`); the base set is ``base_devices``
    synthetic devices with ``comparisons_per_device`` comparisons each (unless features are
    passed in).
    """

    m: int = Field(default=1000, ge=2)
    k_plus: int = Field(default=50, ge=0)
    k_minus: int = Field(default=50, ge=0)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    seed: int = Field(default=0, ge=0)
    # An audit's round trains longer, in larger batches, than a device's default round.
    noise_multiplier: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    batch_size: int = Field(default=100, ge=1)
    local_epochs: int = Field(default=10, ge=1)
    lr: float = Field(default=0.5, gt=0, allow_inf_nan=False)
    delta: float = Field(default=defaults.DELTA, gt=0, lt=1)
    canary_norm: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    canary_saturation: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    base_devices: int = Field(default=1, ge=0)
    comparisons_per_device: int = Field(default=30, ge=0)

    @model_validator(mode="after")
    def _guesses_fit(self) -> CanaryAuditConfig:
        if not 1 <= self.k_plus + self.k_minus <= self.m:
            raise ValueError(
                f"need 1 <= k_plus + k_minus <= m, got {self.k_plus} + {self.k_minus}, m={self.m}"
            )
        return self

    @property
    def guesses(self) -> int:
        """r: the number of guesses (the rest of the canaries are abstentions)."""
        return self.k_plus + self.k_minus

    def dp_config(self) -> DPConfig:
        """The DP-SGD configuration under audit, with a budget that never stops the run."""
        return DPConfig.for_device(self, DeviceBudget(self.delta, _NO_BUDGET))


@dataclass(frozen=True)
class CanaryAuditResult:
    """Outcome of one audit: the claimed epsilon against the empirical lower bound.

    ``claimed_epsilon`` is what the accountant charged for the run, at ``delta``;
    ``epsilon_lower_bound`` holds at ``confidence``; ``guesses`` = r, ``correct`` = v out of
    ``m`` canaries, of which ``included`` were trained on, among ``examples`` training rows
    (``steps`` DP-SGD steps at ``sample_rate``). ``noise_off`` marks the deliberately broken
    run. ``seconds`` is the wall time of the whole audit.
    """

    config: CanaryAuditConfig
    claimed_epsilon: float
    epsilon_lower_bound: float
    delta: float
    confidence: float
    m: int
    guesses: int
    correct: int
    included: int
    examples: int
    steps: int
    sample_rate: float
    noise_off: bool
    seconds: float

    @property
    def violated(self) -> bool:
        """True when the lower bound exceeds the claim: the DP guarantee does not hold."""
        return self.epsilon_lower_bound > self.claimed_epsilon

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (``fedgaze audit canary --kind input --json``)."""
        summary = AuditSummary(
            "input",
            "dp-sgd",
            "black-box: input-space canaries, the final model",
            self.claimed_epsilon,
            self.delta,
            self.epsilon_lower_bound,
            self.confidence,
            "noise-off" if self.noise_off else None,
            self.m,
            self.guesses,
            self.correct,
            self.config.seed,
            self.seconds,
        )
        return summary.to_json(
            included=self.included,
            noise_multiplier=self.config.noise_multiplier,
            steps=self.steps,
            sample_rate=self.sample_rate,
        )


# --------------------------------------------------------------------------------------------
# Canaries and base data
# --------------------------------------------------------------------------------------------


def make_canaries(
    initial_state: Mapping[str, np.ndarray],
    m: int,
    *,
    norm: float,
    saturation: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """``m`` canaries ``X`` (m, 2, F) float32 with random labels ``y`` (m,) float32.

    Built against the initial model's first layer (``net.0``, H hidden units over inputs
    ``[own, own - other]``), as the module docstring explains: with ``P``, ``Q`` the weights on
    ``own`` and on ``own - other``, a canary with sum ``s = left + right`` and difference
    ``d = right - left`` has hidden pre-activations ``(P s) / 2 + b`` on both sides when
    ``(P + 2Q) d = 0``; ``s`` sets them to 0 for unit ``i mod H`` and to +-``saturation``
    (random signs) for the others, and ``d`` (length ``norm``) runs through an orthonormal basis
    of the null space of ``P + 2Q``.
    """
    W = np.asarray(initial_state["net.0.weight"], dtype=np.float64)
    bias = np.asarray(initial_state["net.0.bias"], dtype=np.float64)
    if "net.2.weight" not in initial_state:
        raise ValueError("canaries need the hidden-layer model (hidden > 0)")
    hidden, twice_f = W.shape
    n_features = twice_f // 2
    P, Q = W[:, :n_features], W[:, n_features:]
    basis = null_space(P + 2 * Q)  # (F, F - H): directions that keep both sides equal
    if basis.shape[1] == 0:
        raise ValueError(f"need more features than hidden units, got F={n_features}, H={hidden}")
    basis = basis @ _random_rotation(basis.shape[1], rng)
    sum_solver = np.linalg.pinv(P)
    X = np.empty((m, 2, n_features), dtype=np.float64)
    for i in range(m):
        unit, slot = i % hidden, i // hidden
        if slot < basis.shape[1]:
            d = basis[:, slot]
        else:
            d = basis @ rng.standard_normal(basis.shape[1])
            d /= np.linalg.norm(d)
        target = rng.choice([-saturation, saturation], size=hidden)
        target[unit] = 0.0
        s = sum_solver @ (2.0 * (target - bias))
        X[i, 0] = (s - norm * d) / 2
        X[i, 1] = (s + norm * d) / 2
    y = rng.integers(0, 2, size=m).astype(np.float32)
    return X.astype(np.float32), y


def _random_rotation(n: int, rng: np.random.Generator) -> FloatArray:
    """A uniformly random n x n orthogonal matrix (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return np.asarray(q * np.sign(np.diag(r)), dtype=np.float64)


def _synthetic_base(cfg: CanaryAuditConfig) -> tuple[np.ndarray, np.ndarray]:
    """The base (non-canary) training set: the embedded synthetic cohort's comparisons."""
    devices = generate_cohort(
        cfg.base_devices, seed=cfg.seed, comparisons_per_device=cfg.comparisons_per_device
    )
    matrices = [featurize_device(d) for d in devices]
    if not matrices or sum(len(fm) for fm in matrices) == 0:
        raise ValueError("the synthetic base set is empty (base_devices or comparisons = 0)")
    return (
        np.concatenate([fm.X for fm in matrices]).astype(np.float32),
        np.concatenate([fm.y for fm in matrices]).astype(np.float32),
    )


def _log_likelihood(model: torch.nn.Module, X: np.ndarray, y: np.ndarray) -> FloatArray:
    """Log-probability of each label ``y`` under ``model``, float64 (n,)."""
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(X)).double()
        nll = F.binary_cross_entropy_with_logits(
            logits, torch.from_numpy(y).double(), reduction="none"
        )
    return (-nll).numpy()


# --------------------------------------------------------------------------------------------
# The audit
# --------------------------------------------------------------------------------------------


def run_canary_audit(
    config: CanaryAuditConfig,
    *,
    noise_off: bool = False,
    base: tuple[np.ndarray, np.ndarray] | None = None,
) -> CanaryAuditResult:
    """Audit one local DP-SGD round with ``config.m`` canaries and one training run.

    ``base`` is the non-canary training set ``(X (n, 2, F), y (n,))`` (default: the embedded
    synthetic cohort, see :class:`CanaryAuditConfig`). ``noise_off=True`` simulates a broken
    implementation: training charges the config's noise multiplier (so the claimed epsilon is
    unchanged) while the optimizer adds no noise; it exists to show that the audit catches such
    a bug and must never be used for anything else.
    """
    started = time.perf_counter()
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0x5EED]))
    X_base, y_base = _synthetic_base(config) if base is None else base
    X_base = np.asarray(X_base, dtype=np.float32)
    y_base = np.asarray(y_base, dtype=np.float32)
    n_features = X_base.shape[2]
    initial = PairwiseRewardModel(n_features, hidden=defaults.HIDDEN, seed=config.seed)
    initial_state = state_to_numpy(initial)
    X_can, y_can = make_canaries(
        initial_state,
        config.m,
        norm=config.canary_norm,
        saturation=config.canary_saturation,
        rng=rng,
    )
    included = rng.random(config.m) < 0.5  # S_i = +1: canary i is trained on
    X_train = np.concatenate([X_base, X_can[included]])
    y_train = np.concatenate([y_base, y_can[included]])
    cfg = config.dp_config()
    with noise_scaled(0.0) if noise_off else nullcontext():
        local = train_local(
            initial_state,
            X_train,
            y_train,
            cfg,
            PrivacyState(),
            run_id=_AUDIT_RUN_ID,
            round=0,
            seed=config.seed,
        )
    claimed = epsilon_for(local.new_privacy_state.history, config.delta, cfg.accountant)

    scores = _log_likelihood(model_from_state(local.state), X_can, y_can) - _log_likelihood(
        initial, X_can, y_can
    )
    order = np.argsort(scores, kind="stable")  # ascending; ties broken by canary index
    guess_in = order[len(order) - config.k_plus :] if config.k_plus else order[:0]
    guess_out = order[: config.k_minus]
    correct = int(included[guess_in].sum() + (~included[guess_out]).sum())
    bound = epsilon_lower_bound(
        m=config.m,
        r=config.guesses,
        v=correct,
        delta=config.delta,
        confidence=config.confidence,
    )
    return CanaryAuditResult(
        config=config,
        claimed_epsilon=claimed,
        epsilon_lower_bound=bound,
        delta=config.delta,
        confidence=config.confidence,
        m=config.m,
        guesses=config.guesses,
        correct=correct,
        included=int(included.sum()),
        examples=local.examples,
        steps=local.steps,
        sample_rate=local.sample_rate,
        noise_off=noise_off,
        seconds=time.perf_counter() - started,
    )


def format_result(result: CanaryAuditResult) -> str:
    """One readable paragraph for the CLI: the bound, the claim, and the verdict."""
    verdict = (
        "VIOLATED: the training leaks more than its accounting claims"
        if result.violated
        else "consistent (an audit can refute a claim, not prove it)"
    )
    broken = " [noise deliberately switched off]" if result.noise_off else ""
    return (
        f"Canary audit{broken}: lower bound epsilon >= {result.epsilon_lower_bound:.3f} at "
        f"{result.confidence:.0%} confidence from {result.guesses} guesses "
        f"({result.correct} correct) over {result.m} canaries ({result.included} included, "
        f"{result.examples} training examples, {result.steps} DP-SGD steps at sample rate "
        f"{result.sample_rate:.3g}, noise multiplier {result.config.noise_multiplier:g}); "
        f"claimed epsilon {result.claimed_epsilon:.3f} at delta {result.delta:g}: {verdict}. "
        f"({result.seconds:.1f} s; Steinke, Nasr & Jagielski 2023.)"
    )
