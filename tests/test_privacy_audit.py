"""The white-box gradient-canary audit of DP-SGD and the label-release audit, and their power.

Fast tests: the guess rule, the configuration's refusals, the self-test hooks, small audits
and the CLI's JSON. Slow tests (the power the audits promise, default sizes, real training):
noise switched off refutes a claim of 8 at delta 1e-5, half the noise multiplier refutes a
claim of 2, correct runs are never refuted over several seeds, and the label release with half
its flips is refuted while a correct one is not.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedgaze.audit import dirac
from fedgaze.audit.broken import flips_scaled, noise_scaled
from fedgaze.audit.canary import epsilon_lower_bound
from fedgaze.audit.dirac import (
    MIN_GUESSES,
    GradientAuditConfig,
    guesses_for_claim,
    run_gradient_audit,
)
from fedgaze.audit.label_audit import LabelAuditConfig, run_label_audit
from fedgaze.audit.outcome import format_audit
from fedgaze.privacy import label_dp


def test_guesses_are_fixed_from_the_claim() -> None:
    small = guesses_for_claim(2.0, m=50_000, delta=1e-5, confidence=0.95)
    assert small == MIN_GUESSES
    big = guesses_for_claim(6.0, m=10_000, delta=1e-5, confidence=0.95)
    assert big % 2 == 0 and MIN_GUESSES < big <= 9800
    assert epsilon_lower_bound(m=10_000, r=big, v=big, delta=1e-5) > 6.1
    beyond = guesses_for_claim(20.0, m=5000, delta=1e-5, confidence=0.95)
    assert beyond == 4900  # out of reach: the most guesses, and the result says its ceiling
    assert guesses_for_claim(2.0, m=100, delta=1e-5, confidence=0.95) == 98


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"epsilon": None}, "exactly one of epsilon and noise_multiplier"),
        ({"noise_multiplier": 2.0}, "exactly one of epsilon and noise_multiplier"),
        ({"guesses": 3}, "guesses must be even"),
        ({"m": 10, "guesses": 12}, "at most m=10"),
    ],
)
def test_a_bad_configuration_is_refused(fields: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GradientAuditConfig(**fields)  # type: ignore[arg-type]


def test_the_self_test_hooks_restore_what_they_break() -> None:
    original = label_dp.flip_rate
    with flips_scaled(0.5):
        assert label_dp.flip_rate(1.0) == pytest.approx(original(1.0) / 2)
    assert label_dp.flip_rate is original
    with pytest.raises(RuntimeError, match="did not ask"), flips_scaled(0.0):
        pass
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"factor must be in \[0, 1\)"), noise_scaled(bad):
            pass
    with (
        pytest.raises(RuntimeError, match="never clipped"),
        dirac._dirac_canaries((2, 2), np.zeros((2, 2))),  # type: ignore[arg-type]
    ):
        pass


def test_a_small_gradient_audit_catches_no_noise_and_passes_correct_noise() -> None:
    config = GradientAuditConfig(epsilon=4.0, m=4000)
    honest = run_gradient_audit(config)
    assert 3.9 < honest.summary.claimed_epsilon <= 4.0 and not honest.violated
    assert honest.summary.guesses % 2 == 0 and honest.included == pytest.approx(2000, abs=150)
    broken = run_gradient_audit(config, noise_factor=0.0)
    assert broken.violated and broken.summary.broken == "noise-off"
    assert broken.summary.correct == broken.summary.guesses  # perfectly separated
    assert broken.summary.claimed_epsilon == pytest.approx(honest.summary.claimed_epsilon)
    text = format_audit(broken.to_json())
    assert "VIOLATED" in text and "[noise deliberately switched off]" in text
    assert "no claim above" in text


def test_a_small_label_audit_catches_missing_flips() -> None:
    honest = run_label_audit(LabelAuditConfig(epsilon_label=1.0, m=2000))
    assert not honest.violated and 0.5 < honest.summary.epsilon_lower_bound < 1.0
    broken = run_label_audit(LabelAuditConfig(epsilon_label=1.0, m=2000), flip_factor=0.0)
    assert (
        broken.violated and broken.summary.correct == 2000 and broken.summary.broken == "flips-off"
    )
    record = broken.to_json()
    assert record["delta"] == 0.0 and record["mechanism"] == "randomized-response"


def test_canary_command_json_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    from fedgaze.cli.main import main

    args = ["audit", "canary", "--epsilon", "4", "--canaries", "4000", "--json"]
    assert main(args) == 0
    honest = json.loads(capsys.readouterr().out)
    assert honest["kind"] == "gradient" and not honest["violated"] and honest["broken"] is None
    assert main([*args, "--noise-off"]) == 1
    broken = json.loads(capsys.readouterr().out)
    assert broken["violated"] and broken["broken"] == "noise-off"
    assert main(["audit", "canary", "--kind", "input", "--epsilon", "2"]) == 2
    assert "--kind input takes --noise-multiplier" in capsys.readouterr().err
    assert main(["audit", "canary", "--epsilon", "2", "--noise-multiplier", "3"]) == 2


# --- the power the audits promise (default sizes) ---------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_noise_off_refutes_a_claim_of_8() -> None:
    result = run_gradient_audit(GradientAuditConfig(epsilon=8.0), noise_factor=0.0)
    assert 7.9 < result.summary.claimed_epsilon <= 8.0
    assert result.violated and result.summary.epsilon_lower_bound > 8.1
    assert result.summary.seconds < 60


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", [0, 1])
def test_half_the_noise_refutes_a_claim_of_2(seed: int) -> None:
    result = run_gradient_audit(GradientAuditConfig(epsilon=2.0, seed=seed), noise_factor=0.5)
    assert 1.99 < result.summary.claimed_epsilon <= 2.0 and result.violated


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correct_training_is_never_refuted(seed: int) -> None:
    for epsilon in (2.0, 8.0):
        result = run_gradient_audit(GradientAuditConfig(epsilon=epsilon, seed=seed))
        assert not result.violated and result.summary.epsilon_lower_bound < 0.8 * epsilon


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_half_the_flips_refute_the_label_epsilon() -> None:
    broken = run_label_audit(LabelAuditConfig(epsilon_label=1.0), flip_factor=0.5)
    assert broken.violated and broken.summary.epsilon_lower_bound > 1.5
    honest = run_label_audit(LabelAuditConfig(epsilon_label=1.0, seed=1))
    assert not honest.violated and honest.summary.epsilon_lower_bound > 0.9  # tight
