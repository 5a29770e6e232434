"""White-box privacy audit of local DP-SGD with gradient ("Dirac") canaries, from one run.

The audited mechanism is fedgaze's real training path: :func:`~fedgaze.privacy.dp_train.
train_local` (Opacus DP-SGD: per-example clipping at ``C``, Gaussian noise ``sigma C``, SGD)
and the accountant that states its epsilon. The auditor is the strongest one of Nasr et al.
("Tight Auditing of Differentially Private Machine Learning", USENIX Security 2023): it
inserts canaries as examples whose clipped per-example gradient it chooses, and it sees the
model's parameters. The statistics are those of Steinke, Nasr and Jagielski (NeurIPS 2023,
:func:`fedgaze.audit.canary.epsilon_lower_bound`): ``m`` canaries, each included with
probability 1/2, one training run, ``r`` guesses fixed before the run.

Canary ``i`` is a Dirac gradient: ``C e_{c_i}``, length exactly the clip norm, along its own
coordinate ``c_i`` of the first layer's weights (distinct coordinates, drawn at random; the
model is made wide enough to hold ``m`` of them: DP-SGD's guarantee does not depend on the
model). Opacus' per-example gradients of the canaries would take ``m`` times the model's size in
memory, so the audit adds the included canaries' clipped gradients to Opacus' sum of clipped
gradients (``DPOptimizer.clip_and_accumulate``), before its noise, scaling and step: the same
sum that ``m / 2`` more examples with those per-example gradients would give. The training is
full-batch (sample rate 1, ``steps`` steps), so every included canary is in every step and
Poisson subsampling, and its amplification, are outside this audit.

Score: ``-(theta_T - theta_0)[c_i]``, how far training moved canary ``i``'s coordinate against
its gradient. With full batches the sum of the per-step moves is a sufficient statistic for
whether canary ``i`` was included, so the audit has the same power whether the adversary sees
every intermediate model or only the final one (what a server sees of a round): it audits both
threat models at once. Guesses: "included" for the ``r / 2`` highest scores, "excluded" for the
``r / 2`` lowest. By default ``r`` is fixed from the claim before the run
(:func:`guesses_for_claim`): at least :data:`MIN_GUESSES`, and enough that ``r`` correct
guesses would refute the claim.

Reach: the lower bound cannot exceed what ``r`` correct guesses give, which at delta 1e-5 and
95% confidence is about 8.2 however many canaries (the ``2 m delta`` term of the theorem);
:attr:`GradientAuditResult.ceiling` states it for each audit. Power, measured by
``bench/privacy_audit.py`` (docs/results.md): noise switched off refutes claims up to 8; half
the claimed noise multiplier refutes a claim of 2.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from opacus.optimizers.optimizer import DPOptimizer
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedgaze import defaults
from fedgaze.audit.broken import noise_scaled
from fedgaze.audit.canary import epsilon_lower_bound
from fedgaze.audit.outcome import AuditSummary
from fedgaze.data.synthetic import generate_cohort
from fedgaze.features.v2 import featurize_device
from fedgaze.model.reward import PairwiseRewardModel, state_to_numpy
from fedgaze.privacy.accounting import calibrate_noise_multiplier, epsilon_for
from fedgaze.privacy.dp_train import DPConfig, train_local
from fedgaze.privacy.state import PrivacyState

__all__ = [
    "MIN_GUESSES",
    "GradientAuditConfig",
    "GradientAuditResult",
    "guesses_for_claim",
    "run_gradient_audit",
]

MIN_GUESSES = 500
"""Fewest guesses an automatic audit makes: enough precision to catch a noisy but broken run."""
MAX_GUESS_SHARE = 0.98
"""Most guesses, as a share of the canaries: each side's guesses stay clear of the included
count's random spread (about ``sqrt(m) / 2``)."""
MARGIN = 0.1
"""An automatic ``r`` could, if every guess were right, refute a claim this much higher."""
_NO_BUDGET = 1e12
_RUN_ID = "gradient-audit"
_WEIGHT = "net.0.weight"


def guesses_for_claim(claim: float, *, m: int, delta: float, confidence: float) -> int:
    """The number of guesses, fixed from the claim before the run: the fewest (at least
    :data:`MIN_GUESSES`) whose all-correct bound exceeds ``claim + MARGIN``, else the most
    allowed (``MAX_GUESS_SHARE`` of ``m``); always even."""
    most = max(2, int(MAX_GUESS_SHARE * m) // 2 * 2)
    r = min(most, MIN_GUESSES)
    while r < most:
        if epsilon_lower_bound(m=m, r=r, v=r, delta=delta, confidence=confidence) > claim + MARGIN:
            return r
        r = min(most, r * 2)
    return most


class GradientAuditConfig(BaseModel):
    """What to audit and how: the claim, the DP-SGD run and the canaries.

    The claim is ``epsilon`` (the noise multiplier is calibrated so the accountant states at
    most that for ``steps`` full-batch steps) or, instead, an explicit ``noise_multiplier``.
    ``m`` canaries; ``guesses`` (r) None: :func:`guesses_for_claim`. ``seed`` fixes the base
    data, the model, the canaries' coordinates and coin flips (the DP noise uses the training
    path's own secret seed). The base set is ``base_comparisons`` synthetic comparisons.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    epsilon: float | None = Field(default=8.0, gt=0, allow_inf_nan=False)
    noise_multiplier: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    m: int = Field(default=50_000, ge=2)
    guesses: int | None = Field(default=None, ge=2)
    steps: int = Field(default=10, ge=1)
    max_grad_norm: float = Field(default=defaults.MAX_GRAD_NORM, gt=0, allow_inf_nan=False)
    lr: float = Field(default=defaults.LR, gt=0, allow_inf_nan=False)
    delta: float = Field(default=defaults.DELTA, gt=0, lt=1)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    seed: int = Field(default=0, ge=0)
    base_comparisons: int = Field(default=30, ge=1)

    @model_validator(mode="after")
    def _one_claim(self) -> GradientAuditConfig:
        if (self.epsilon is None) == (self.noise_multiplier is None):
            raise ValueError("give exactly one of epsilon and noise_multiplier")
        if self.guesses is not None and (self.guesses > self.m or self.guesses % 2):
            raise ValueError(f"guesses must be even and at most m={self.m}, got {self.guesses}")
        return self

    def sigma(self) -> float:
        """The noise multiplier under audit."""
        if self.noise_multiplier is not None:
            return self.noise_multiplier
        assert self.epsilon is not None
        return calibrate_noise_multiplier(
            self.epsilon, rounds=1, local_epochs=self.steps, delta=self.delta, tolerance=1e-3
        )


@dataclass(frozen=True)
class GradientAuditResult:
    """One audit: ``summary`` (the accountant's claim against the observed lower bound) and
    this kind's details. ``ceiling`` is the bound ``summary.guesses`` correct guesses would
    give: no claim above it can be refuted by this audit."""

    config: GradientAuditConfig
    summary: AuditSummary
    noise_multiplier: float
    ceiling: float
    included: int

    @property
    def violated(self) -> bool:
        """True when the lower bound exceeds the claim: the DP guarantee does not hold."""
        return self.summary.violated

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (``fedgaze audit canary --json``)."""
        return self.summary.to_json(
            ceiling=self.ceiling,
            included=self.included,
            noise_multiplier=self.noise_multiplier,
            steps=self.config.steps,
            sample_rate=1.0,
            max_grad_norm=self.config.max_grad_norm,
        )


@contextmanager
def _dirac_canaries(shape: tuple[int, ...], canary_sum: torch.Tensor) -> Iterator[None]:
    """Inside this block every DP-SGD step adds ``canary_sum`` (the included canaries' clipped
    gradients) to Opacus' sum of clipped gradients of the parameter of ``shape``."""
    original = DPOptimizer.clip_and_accumulate
    calls = 0

    def clip_and_accumulate(self: DPOptimizer) -> None:
        nonlocal calls
        original(self)
        for p in self.params:
            if tuple(p.shape) == shape:
                p.summed_grad = p.summed_grad + canary_sum.to(p.summed_grad.dtype)
                calls += 1

    DPOptimizer.clip_and_accumulate = clip_and_accumulate
    try:
        yield
    finally:
        DPOptimizer.clip_and_accumulate = original
    if calls == 0:
        raise RuntimeError("gradient canaries: Opacus never clipped a batch; hook is stale")


def _base(cfg: GradientAuditConfig) -> tuple[np.ndarray, np.ndarray]:
    (device,) = generate_cohort(1, seed=cfg.seed, comparisons_per_device=cfg.base_comparisons)
    fm = featurize_device(device)
    if len(fm) == 0:
        raise ValueError("the synthetic base set is empty")
    return fm.X.astype(np.float32), fm.y.astype(np.float32)


def run_gradient_audit(
    config: GradientAuditConfig, *, noise_factor: float = 1.0
) -> GradientAuditResult:
    """Audit one full-batch DP-SGD run of :func:`train_local` with ``config.m`` Dirac canaries.

    ``noise_factor`` < 1 is a self-test only (:func:`fedgaze.audit.broken.noise_scaled`): the
    run adds that share of the noise it claims (0: none), and the audit must catch it.
    """
    started = time.perf_counter()
    sigma = config.sigma()
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0xD1AC]))
    X, y = _base(config)
    n_features = X.shape[2]
    hidden = max(defaults.HIDDEN, math.ceil(config.m / (2 * n_features)))
    model = PairwiseRewardModel(n_features, hidden=hidden, seed=config.seed)
    initial = state_to_numpy(model)
    shape = tuple(initial[_WEIGHT].shape)
    coords = rng.permutation(math.prod(shape))[: config.m]
    included = rng.random(config.m) < 0.5
    canary_sum = torch.zeros(math.prod(shape), dtype=torch.float64)
    canary_sum[torch.from_numpy(coords[included])] = config.max_grad_norm
    dp = DPConfig(
        noise_multiplier=sigma,
        max_grad_norm=config.max_grad_norm,
        batch_size=len(X),  # one batch: sample rate 1
        local_epochs=config.steps,
        lr=config.lr,
        delta=config.delta,
        epsilon_budget=_NO_BUDGET,
    )
    broken = None
    if noise_factor < 1.0:
        broken = "noise-off" if noise_factor == 0.0 else f"noise x{noise_factor:g}"
    with (
        noise_scaled(noise_factor) if broken else nullcontext(),
        _dirac_canaries(shape, canary_sum.view(shape)),
    ):
        local = train_local(
            initial, X, y, dp, PrivacyState(), run_id=_RUN_ID, round=0, seed=config.seed
        )
    if local.sample_rate != 1.0 or local.steps != config.steps:
        raise RuntimeError(f"expected {config.steps} full-batch steps, got {local.steps}")
    claimed = epsilon_for(local.new_privacy_state.history, config.delta)
    moved = np.asarray(local.state[_WEIGHT], np.float64) - np.asarray(initial[_WEIGHT])
    scores = -moved.reshape(-1)[coords]
    r = config.guesses or guesses_for_claim(
        claimed, m=config.m, delta=config.delta, confidence=config.confidence
    )
    order = np.argsort(scores, kind="stable")
    k = r // 2
    correct = int(included[order[len(order) - k :]].sum() + (~included[order[:k]]).sum())

    def bound(v: int) -> float:
        return epsilon_lower_bound(
            m=config.m, r=r, v=v, delta=config.delta, confidence=config.confidence
        )

    summary = AuditSummary(
        "gradient",
        "dp-sgd",
        "white-box: gradient canaries, every intermediate or final model",
        claimed,
        config.delta,
        bound(correct),
        config.confidence,
        broken,
        config.m,
        r,
        correct,
        config.seed,
        time.perf_counter() - started,
    )
    return GradientAuditResult(config, summary, sigma, bound(r), int(included.sum()))
