"""Local DP-SGD: accounting against Google's dp_accounting, budget, ledger persistence, retries."""

from __future__ import annotations

import itertools
import json
import logging
import math
import subprocess
import sys
import warnings
from pathlib import Path

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant
from opacus.data_loader import DPDataLoader
from pydantic import ValidationError
from torch.utils.data import DataLoader, TensorDataset

from fedgaze.model.evaluation import evaluate
from fedgaze.privacy import dp_train
from fedgaze.privacy.accounting import (
    RDP_ORDERS,
    epsilon_for,
    epsilon_if,
    steps_per_epoch,
)
from fedgaze.privacy.dp_train import (
    BudgetExhausted,
    DPConfig,
    RoundAlreadyCharged,
    train_central,
    train_local,
    train_local_persisted,
)
from fedgaze.privacy.state import PrivacyEvent, PrivacyState, PrivacyStateError

F = 17
DELTA = 1e-5
RDP_REL_TOL = 2e-3  # the two libraries bound RDP at fractional orders differently (<= 0.04% seen)
PRV_REL_TOL = 2e-2  # PRV upper bound (eps_error 0.01) vs dp_accounting's PLD

logging.getLogger("absl").setLevel(logging.ERROR)  # dp_accounting's convergence notes


def toy(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Comparisons whose preferred side has the larger hidden linear reward."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2, F)).astype(np.float32)
    w = np.linspace(-1.0, 1.0, F)
    return X, (X[:, 1] @ w > X[:, 0] @ w).astype(np.float32)


def google_epsilon(history, delta: float, pld: bool = False) -> float:
    """Epsilon of a history computed independently with dp_accounting."""
    accountant = PLDAccountant() if pld else RdpAccountant(orders=RDP_ORDERS)
    for sigma, q, steps in history:
        event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
        accountant.compose(dp_accounting.SelfComposedDpEvent(event, steps))
    return float(accountant.get_epsilon(delta))


def run_rounds(cfg: DPConfig, rounds: int, n: int = 40, state: PrivacyState | None = None):
    X, y = toy(n)
    state = state or PrivacyState()
    weights, results = None, []
    for rnd in range(1, rounds + 1):
        result = train_local(weights, X, y, cfg, state, run_id="run", round=rnd, seed=rnd)
        state, weights = result.new_privacy_state, result.state
        results.append(result)
    return results


# --- accounting -----------------------------------------------------------------------------


@pytest.mark.parametrize("accountant", ["rdp", pytest.param("prv", marks=pytest.mark.slow)])
def test_epsilon_after_k_rounds_matches_dp_accounting(accountant):
    cfg = DPConfig(noise_multiplier=1.1, batch_size=8, local_epochs=1, accountant=accountant)
    results = run_rounds(cfg, rounds=3)
    history = results[-1].new_privacy_state.history
    assert history == [(1.1, 0.2, 5)] * 3  # n=40, b=8: q = 1/5, 5 steps a round
    for k, result in enumerate(results, start=1):
        if accountant == "rdp":
            expected = google_epsilon(history[:k], DELTA)
            assert result.epsilon == pytest.approx(expected, rel=RDP_REL_TOL)
        else:
            expected = google_epsilon(history[:k], DELTA, pld=True)
            assert result.epsilon == pytest.approx(expected, rel=PRV_REL_TOL)
            assert result.epsilon >= expected * (1 - 1e-3)  # an upper bound, not an estimate


@pytest.mark.parametrize(
    "history",
    [
        [(1.1, 1.0, 1)] * 4,  # tiny device: the whole dataset every step
        [(0.8, 0.25, 4), (1.5, 0.1, 10)],  # heterogeneous rounds
        [(2.0, 0.01, 1000)],
    ],
)
def test_epsilon_for_matches_dp_accounting(history):
    assert epsilon_for(history, DELTA, "rdp") == pytest.approx(
        google_epsilon(history, DELTA), rel=RDP_REL_TOL
    )
    assert epsilon_for(history, DELTA, "prv") == pytest.approx(
        google_epsilon(history, DELTA, pld=True), rel=PRV_REL_TOL
    )


def test_accounting_without_opacus_imported_gives_the_same_epsilon():
    """A process that has not imported Opacus loads only its RDP analysis file (no torch);
    the numbers are those of the package's own module."""
    history = [(0.8, 0.25, 4), (1.5, 0.1, 10)]
    code = (
        "import sys; from fedgaze.privacy.accounting import epsilon_for as e; "
        f"print(repr(e({history!r}, {DELTA!r})), 'opacus' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split() == [repr(epsilon_for(history, DELTA)), "False"]


def test_epsilon_grows_with_rounds():
    results = run_rounds(DPConfig(epsilon_budget=100.0), rounds=4)
    eps = [r.epsilon for r in results]
    assert all(b > a for a, b in itertools.pairwise(eps)), eps
    assert epsilon_for([], DELTA) == 0.0
    assert epsilon_if([], (1.1, 0.2, 5), DELTA) == pytest.approx(eps[0])


@pytest.mark.parametrize("n", [1, 5, 9, 40, 93 * 8, 94 * 8 - 3])
@pytest.mark.parametrize("batch_size", [1, 8])
def test_steps_per_epoch_matches_opacus_loader(n, batch_size):
    dataset = TensorDataset(torch.zeros(n, 1))
    loader = DPDataLoader.from_data_loader(DataLoader(dataset, batch_size=batch_size))
    assert steps_per_epoch(n, batch_size) == (loader.sample_rate, len(loader))


# --- budget, persistence and retries ----------------------------------------------------------


def test_budget_refusal_happens_before_training(monkeypatch, tmp_path: Path):
    one_round = (1.1, 0.2, 5)
    budget = (epsilon_for([one_round], DELTA) + epsilon_for([one_round] * 2, DELTA)) / 2
    cfg = DPConfig(epsilon_budget=budget)
    first = run_rounds(cfg, rounds=1)[0]
    path = tmp_path / "privacy.json"
    first.new_privacy_state.save(path)
    before = path.read_bytes()

    def no_training(*args, **kwargs):
        raise AssertionError("trained although the budget was exhausted")

    monkeypatch.setattr(dp_train, "_dp_sgd", no_training)
    X, y = toy(40)
    with pytest.raises(BudgetExhausted) as info:
        train_local_persisted(path, first.state, X, y, cfg, run_id="run", round=2, seed=0)
    err = info.value
    assert err.spent == pytest.approx(first.epsilon)
    assert err.next_epsilon > err.budget == budget > err.spent
    assert f"{budget:.4g}" in str(err) and f"{first.epsilon:.4g}" in str(err)
    assert path.read_bytes() == before


def test_restart_keeps_cumulative_epsilon(tmp_path: Path):
    cfg = DPConfig()
    path = tmp_path / "device" / "privacy.json"
    X, y = toy(40)
    r1 = train_local_persisted(path, None, X, y, cfg, run_id="run", round=1, seed=1)
    reloaded = PrivacyState.load(path)  # as a restarted process would
    assert reloaded == r1.new_privacy_state
    assert reloaded.epsilon(DELTA) == pytest.approx(r1.epsilon, rel=1e-12)
    r2 = train_local_persisted(path, r1.state, X, y, cfg, run_id="run", round=2, seed=2)
    assert r2.epsilon > r1.epsilon
    assert r2.epsilon == pytest.approx(epsilon_for([(1.1, 0.2, 5)] * 2, DELTA), rel=1e-12)
    assert PrivacyState.load(path).epsilon(DELTA) == pytest.approx(r2.epsilon, rel=1e-12)
    assert [p.name for p in path.parent.iterdir()] == ["privacy.json"]  # no temp files left


def test_retried_round_is_replayed_not_charged_again(tmp_path: Path):
    cfg = DPConfig()
    path = tmp_path / "privacy.json"
    X, y = toy(40)
    first = train_local_persisted(path, None, X, y, cfg, run_id="run", round=1, seed=1)
    on_disk = path.read_bytes()
    retry = train_local_persisted(path, None, X, y, cfg, run_id="run", round=1, seed=1)
    assert retry.replayed and not first.replayed
    assert retry.epsilon == first.epsilon
    assert len(PrivacyState.load(path).events) == 1 and path.read_bytes() == on_disk
    for name, value in first.state.items():
        np.testing.assert_array_equal(retry.state[name], value)

    with pytest.raises(RoundAlreadyCharged, match="other inputs"):
        train_local_persisted(path, None, X[:30], y[:30], cfg, run_id="run", round=1, seed=1)
    other_run = train_local_persisted(path, None, X, y, cfg, run_id="run-2", round=1, seed=1)
    assert not other_run.replayed and other_run.epsilon > first.epsilon


def test_ledger_refuses_a_second_event_for_the_same_round():
    event = PrivacyEvent(run_id="r", round=3, noise_multiplier=1.0, sample_rate=0.5, steps=2)
    state = PrivacyState().with_event(event)
    with pytest.raises(RoundAlreadyCharged):
        state.with_event(event.model_copy(update={"steps": 9}))
    assert state.history == [(1.0, 0.5, 2)]


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "",
        '{"format": 1, "events": [{"run_id": "r", "round": 1}]}',
        '{"format": 1, "events": [{"run_id": "r", "round": 1, "noise_multiplier": 1.0,'
        ' "sample_rate": 0.5, "steps": -2}]}',
        '{"events": []}',
        "[]",
    ],
)
def test_corrupt_state_file_is_a_clear_error(tmp_path: Path, content: str):
    path = tmp_path / "privacy.json"
    path.write_text(content)
    with pytest.raises(PrivacyStateError, match=str(path)):
        PrivacyState.load(path)
    X, y = toy(10)
    with pytest.raises(PrivacyStateError):
        train_local_persisted(path, None, X, y, DPConfig(), run_id="r", round=1, seed=0)
    assert path.read_text() == content


def test_missing_state_file_is_a_fresh_ledger(tmp_path: Path):
    state = PrivacyState.load(tmp_path / "absent.json")
    assert state.events == () and state.epsilon(DELTA) == 0.0


# --- training -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5])
def test_tiny_datasets_train(n: int):
    X, y = toy(n)
    result = train_local(
        None, X, y, DPConfig(local_epochs=2), PrivacyState(), run_id="r", round=1, seed=0
    )
    assert (result.examples, result.sample_rate, result.steps) == (n, 1.0, 2)
    assert all(np.isfinite(v).all() for v in result.state.values())
    assert math.isfinite(result.train_loss)
    assert result.epsilon == pytest.approx(epsilon_for([(1.1, 1.0, 2)], DELTA))


def test_no_data_changes_nothing():
    start = train_local(None, *toy(10), DPConfig(), PrivacyState(), run_id="r", round=1, seed=0)
    X, y = np.zeros((0, 2, F), np.float32), np.zeros(0, np.float32)
    state = start.new_privacy_state
    result = train_local(start.state, X, y, DPConfig(), state, run_id="r", round=2, seed=0)
    assert (result.examples, result.steps) == (0, 0)
    assert result.new_privacy_state is state and result.epsilon == start.epsilon
    for name, value in start.state.items():
        np.testing.assert_array_equal(result.state[name], value)


def test_dp_training_learns_and_is_quiet():
    Xt, yt = toy(400, seed=1)
    cfg = DPConfig(noise_multiplier=1.0, batch_size=50, local_epochs=3, lr=0.5, epsilon_budget=20)
    threads = torch.get_num_threads()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = run_rounds(cfg, rounds=3, n=400)
    assert torch.get_num_threads() == threads
    loss, accuracy, n = evaluate(results[-1].state, Xt, yt)
    assert n == 400 and accuracy > 0.8, (loss, accuracy)


def test_central_dp_training_meets_target_epsilon():
    X, y = toy(200)
    dp = DPConfig(batch_size=20, epsilon_budget=3.0, lr=0.5)
    state, epsilon = train_central(X, y, epochs=2, lr=0.5, seed=0, dp=dp)
    assert epsilon is not None and 2.5 < epsilon <= 3.0
    assert all(np.isfinite(v).all() for v in state.values())


def test_evaluate_skips_unlabelled_rows():
    X, y = toy(20)
    state = train_central(X, y, epochs=1, lr=0.01, seed=0)[0]
    y_partial = y.copy()
    y_partial[:5] = np.nan
    assert evaluate(state, X, y_partial)[2] == 15
    loss, accuracy, n = evaluate(state, X, np.full(20, np.nan))
    assert n == 0 and math.isnan(loss) and math.isnan(accuracy)


def test_config_is_validated_and_frozen():
    with pytest.raises(ValidationError):
        DPConfig(noise_multiplier=0)
    with pytest.raises(ValidationError):
        DPConfig(accountant="gdp")
    with pytest.raises(ValidationError):
        DPConfig(batch_sise=8)
    cfg = DPConfig()
    with pytest.raises(ValidationError):
        cfg.lr = 1.0  # type: ignore[misc]
    assert json.loads(cfg.model_dump_json())["accountant"] == "rdp"
