"""One-run canary audit (Steinke, Nasr and Jagielski 2023): the bound, the canaries, real audits.

Determinism: canaries, coin flips, base data and the initial model come from the config's seed;
the DP noise and Poisson sampling come from ``train_local``'s secret seed, which these tests pin
(``dp_train.secrets`` replaced for the test) so that the audits are reproducible. The verdicts do
not depend on that pin: the properly noised audit (claim 2.05) would need about 95 of its 100
guesses right to reach its claim, and gets about 50-65 right over seeds; the broken one gets
100 of 100 right (bound 3.47) against a claim of 0.90, and would need to drop to about 80 to
pass. The largest bound any run with 100 guesses over 1000 canaries can give is 3.47.
"""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import numpy as np
import opacus.optimizers.optimizer as opacus_optimizer
import pytest
import torch
from pydantic import ValidationError
from scipy.stats import binom

from fedgaze.audit.broken import noise_scaled
from fedgaze.audit.canary import (
    CanaryAuditConfig,
    audit_p_value,
    epsilon_lower_bound,
    format_result,
    make_canaries,
    run_canary_audit,
)
from fedgaze.model.reward import PairwiseRewardModel, predict_logits, state_to_numpy
from fedgaze.privacy import dp_train


@pytest.fixture
def pinned_noise_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fix train_local's otherwise secret noise/sampling seed, for reproducible audits."""
    monkeypatch.setattr(dp_train, "secrets", SimpleNamespace(randbits=lambda bits: 20231210))


def _all_correct_pure(r: int, alpha: float = 0.05) -> float:
    """Pure DP, r of r correct: q^r = alpha at q = e^eps / (1 + e^eps)."""
    q = alpha ** (1 / r)
    return math.log(q / (1 - q))


# ------------------------------------------------------------------ the bound


def test_p_value_is_binomial_tail_without_delta() -> None:
    for eps, r, v in [(0.0, 10, 7), (1.0, 50, 40), (2.5, 100, 95)]:
        q = math.exp(eps) / (1 + math.exp(eps))
        expected = binom.sf(v - 1, r, q)
        assert audit_p_value(eps, m=200, r=r, v=v, delta=0.0) == pytest.approx(expected, rel=1e-9)


def test_p_value_delta_term_by_hand() -> None:
    # eps = 0, r = 2: f(2) = 1/4, f(1) = 3/4, f(0) = 1; max_i (f(2 - i) - f(2)) / i
    # = max(1/2, 3/8) = 1/2, so p = 1/4 + 2 * m * delta * 1/2 = 0.25 + 0.1 for m = 10, delta = 0.01.
    assert audit_p_value(0.0, m=10, r=2, v=2, delta=0.01) == pytest.approx(0.35)
    assert audit_p_value(0.0, m=10_000, r=2, v=2, delta=0.01) == 1.0  # capped


def test_all_correct_matches_closed_form() -> None:
    for r in (20, 100, 300):
        bound = epsilon_lower_bound(m=1000, r=r, v=r, delta=0.0)
        assert bound == pytest.approx(_all_correct_pure(r), abs=1e-6)
    assert epsilon_lower_bound(m=1000, r=100, v=100, delta=0.0) == pytest.approx(3.4930, abs=1e-4)


def test_bound_is_valid_and_nearly_tight() -> None:
    m, r, v, delta = 1000, 100, 80, 1e-5
    bound = epsilon_lower_bound(m=m, r=r, v=v, delta=delta)
    assert bound > 0
    assert audit_p_value(bound, m=m, r=r, v=v, delta=delta) <= 0.05
    assert audit_p_value(bound + 1e-3, m=m, r=r, v=v, delta=delta) > 0.05


def test_random_guessing_gives_zero() -> None:
    assert epsilon_lower_bound(m=1000, r=100, v=50, delta=1e-5) == 0.0
    assert epsilon_lower_bound(m=1000, r=100, v=55, delta=1e-5) == 0.0  # p(0) = 0.18 > 0.05
    assert epsilon_lower_bound(m=1000, r=100, v=0, delta=0.0) == 0.0


def test_monotone_in_correct_guesses_and_confidence() -> None:
    bounds = [epsilon_lower_bound(m=1000, r=100, v=v, delta=1e-5) for v in range(50, 101)]
    assert all(b2 >= b1 for b1, b2 in itertools.pairwise(bounds))
    assert bounds[-1] > bounds[30] > 0
    loose = epsilon_lower_bound(m=1000, r=100, v=90, delta=1e-5, confidence=0.99)
    assert loose < epsilon_lower_bound(m=1000, r=100, v=90, delta=1e-5, confidence=0.95)


def test_delta_lowers_the_bound() -> None:
    pure = epsilon_lower_bound(m=1000, r=100, v=100, delta=0.0)
    small = epsilon_lower_bound(m=1000, r=100, v=100, delta=1e-5)
    large = epsilon_lower_bound(m=1000, r=100, v=100, delta=1e-3)
    assert pure > small > large > 0


def test_bound_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        epsilon_lower_bound(m=10, r=20, v=5, delta=0.0)
    with pytest.raises(ValueError):
        epsilon_lower_bound(m=100, r=20, v=21, delta=0.0)
    with pytest.raises(ValueError):
        audit_p_value(-1.0, m=100, r=20, v=10, delta=0.0)


# ------------------------------------------------------------------ config and canaries


def test_config_validates_guesses() -> None:
    with pytest.raises(ValidationError):
        CanaryAuditConfig(m=10, k_plus=6, k_minus=6)
    with pytest.raises(ValidationError):
        CanaryAuditConfig(k_plus=0, k_minus=0)
    cfg = CanaryAuditConfig()
    assert cfg.guesses == 100
    assert cfg.dp_config().noise_multiplier == cfg.noise_multiplier
    with pytest.raises(ValidationError):
        cfg.m = 5  # type: ignore[misc]


def test_canaries_start_at_zero_logit_with_near_orthogonal_gradients() -> None:
    model = PairwiseRewardModel(83, hidden=16, seed=3)
    X, y = make_canaries(
        state_to_numpy(model), 200, norm=10.0, saturation=5.0, rng=np.random.default_rng(0)
    )
    assert X.shape == (200, 2, 83) and X.dtype == np.float32
    assert set(np.unique(y)) == {0.0, 1.0}
    assert np.abs(predict_logits(model, X)).max() < 1e-4
    grads = []
    for i in range(len(X)):
        model.zero_grad()
        model(torch.from_numpy(X[i : i + 1])).sum().backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy())
    G = np.array(grads, dtype=np.float64)
    G /= np.linalg.norm(G, axis=1, keepdims=True)
    cosines = np.abs(G @ G.T)[~np.eye(len(G), dtype=bool)]
    assert cosines.max() < 0.1  # random directions in the 83-dimensional input would give ~0.3


def test_noise_switch_restores_opacus() -> None:
    original = opacus_optimizer._generate_noise
    with pytest.raises(RuntimeError, match="did not call"), noise_scaled(0.0):
        pass
    assert opacus_optimizer._generate_noise is original


# ------------------------------------------------------------------ real audits


def test_properly_noised_training_is_consistent(pinned_noise_seed: None) -> None:
    result = run_canary_audit(CanaryAuditConfig(noise_multiplier=3.0, seed=0))
    assert 1.5 < result.claimed_epsilon < 3.0
    assert result.guesses == 100 and result.m == 1000
    assert 0 <= result.correct <= 80
    assert result.epsilon_lower_bound < result.claimed_epsilon - 1.0
    assert not result.violated
    assert result.seconds < 30
    assert "consistent" in format_result(result)


def test_noise_switched_off_is_caught(pinned_noise_seed: None) -> None:
    cfg = CanaryAuditConfig(noise_multiplier=6.0, seed=0)
    broken = run_canary_audit(cfg, noise_off=True)
    assert broken.noise_off
    assert 0.5 < broken.claimed_epsilon < 1.2  # same accounting as an honest run
    assert broken.correct >= 95
    assert broken.epsilon_lower_bound > broken.claimed_epsilon + 1.5
    assert broken.violated
    text = format_result(broken)
    assert "VIOLATED" in text and "noise deliberately switched off" in text
    honest = run_canary_audit(cfg)
    assert honest.claimed_epsilon == pytest.approx(broken.claimed_epsilon)
    assert not honest.violated


def test_audit_accepts_given_base_features(pinned_noise_seed: None) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 2, 30)).astype(np.float32)
    y = rng.integers(0, 2, size=40).astype(np.float32)
    result = run_canary_audit(
        CanaryAuditConfig(m=200, k_plus=20, k_minus=20, noise_multiplier=2.0), base=(X, y)
    )
    assert result.examples == 40 + result.included
    assert not result.violated


def test_audit_canary_command_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    from fedgaze.cli.main import main

    assert main(["audit", "canary", "--noise-multiplier", "3"]) == 0
    assert "consistent" in capsys.readouterr().out
    assert main(["audit", "canary", "--noise-multiplier", "6", "--noise-off"]) == 1
    out = capsys.readouterr().out
    assert "VIOLATED" in out and "[noise deliberately switched off]" in out
