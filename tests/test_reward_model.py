"""The pairwise reward model: exact antisymmetry, Opacus compatibility, state round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus import GradSampleModule
from opacus.validators import ModuleValidator

from fedgaze.model.evaluation import evaluate
from fedgaze.model.reward import (
    PairwiseRewardModel,
    load_numpy_state,
    model_from_state,
    predict_proba,
    state_to_numpy,
)
from fedgaze.privacy.dp_train import train_central

F = 17


def toy_comparisons(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs whose preferred side has the larger hidden linear reward (separable)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2, F)).astype(np.float32)
    w = np.linspace(-1.0, 1.0, F)
    y = (X[:, 1] @ w > X[:, 0] @ w).astype(np.float32)
    return X, y


@pytest.mark.parametrize("hidden", [0, 1, 4, 16])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_swapping_sides_exactly_negates_logit(hidden: int, seed: int):
    model = PairwiseRewardModel(F, hidden=hidden, seed=seed)
    x = torch.randn(257, 2, F, generator=torch.Generator().manual_seed(seed)) * 3
    logits = model(x)
    assert logits.shape == (257,)
    assert torch.equal(model(x.flip(1)), -logits)
    p = predict_proba(model, x.numpy())
    np.testing.assert_allclose(predict_proba(model, x.flip(1).numpy()), 1 - p, atol=1e-12)
    assert ((p >= 0) & (p <= 1)).all()


def test_identical_sides_are_a_coin_flip():
    model = PairwiseRewardModel(F, seed=0)
    x = torch.randn(5, 1, F).expand(5, 2, F)
    assert torch.equal(model(x), torch.zeros(5))


def test_opacus_accepts_model():
    model = PairwiseRewardModel(F)
    assert ModuleValidator.validate(model, strict=False) == []
    ModuleValidator.validate(model, strict=True)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_one_comparison_is_one_dp_example():
    """Opacus' per-sample gradient of a comparison is the gradient of that comparison alone.

    The MLP runs once per side; both calls must land in the same per-sample row, summed.
    """
    base = PairwiseRewardModel(F, hidden=4, seed=0)
    x = torch.randn(6, 2, F, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    expected = []
    for i in range(len(x)):
        base.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(
            base(x[i : i + 1]), y[i : i + 1]
        ).backward()
        expected.append({n: p.grad.clone() for n, p in base.named_parameters()})

    model = GradSampleModule(base, loss_reduction="sum")
    torch.nn.functional.binary_cross_entropy_with_logits(model(x), y, reduction="sum").backward()
    for name, p in base.named_parameters():
        assert p.grad_sample.shape == (6, *p.shape)
        for i in range(len(x)):
            torch.testing.assert_close(p.grad_sample[i], expected[i][name])


def test_seeded_init_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = PairwiseRewardModel(F, seed=7)
    assert torch.equal(torch.rand(3), expected)
    b = PairwiseRewardModel(F, seed=7)
    c = PairwiseRewardModel(F, seed=8)
    sa, sb, sc = state_to_numpy(a), state_to_numpy(b), state_to_numpy(c)
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert not all(np.array_equal(sa[k], sc[k]) for k in sa)


def test_state_round_trip_with_and_without_opacus_wrapper():
    model = PairwiseRewardModel(F, hidden=5, seed=3)
    state = state_to_numpy(model)
    assert list(state) == list(model.state_dict())
    assert all(v.dtype == np.float32 for v in state.values())

    wrapped = GradSampleModule(PairwiseRewardModel(F, hidden=5, seed=4))
    assert list(state_to_numpy(wrapped)) == list(state)
    load_numpy_state(wrapped, state)
    x = torch.randn(9, 2, F)
    assert torch.equal(wrapped(x), model(x))
    rebuilt = model_from_state(state)
    assert (rebuilt.n_features, rebuilt.hidden) == (F, 5)
    assert torch.equal(rebuilt(x), model(x))


def test_load_rejects_mismatched_state():
    state = state_to_numpy(PairwiseRewardModel(F, hidden=5))
    with pytest.raises(ValueError, match="missing"):
        load_numpy_state(PairwiseRewardModel(F, hidden=5), {"net.0.weight": state["net.0.weight"]})
    with pytest.raises(ValueError, match="shape"):
        load_numpy_state(PairwiseRewardModel(F, hidden=6), state)
    with pytest.raises(ValueError, match="expected input"):
        PairwiseRewardModel(F)(torch.zeros(2, 3, F))


def test_learns_separable_toy_problem():
    X, y = toy_comparisons(600, seed=0)
    Xt, yt = toy_comparisons(400, seed=1)
    state, epsilon = train_central(X, y, epochs=40, lr=0.02, seed=0)
    assert epsilon is None
    loss, accuracy, n = evaluate(state, Xt, yt)
    assert n == 400
    assert accuracy > 0.9, (loss, accuracy)


def test_linear_variant_is_logistic_regression_on_the_difference():
    model = PairwiseRewardModel(F, hidden=0, seed=3)
    state = state_to_numpy(model)
    assert set(state) == {"net.0.weight", "net.0.bias"} and state["net.0.weight"].shape == (
        1,
        2 * F,
    )
    a, b = state["net.0.weight"][0, :F], state["net.0.weight"][0, F:]
    X, _ = toy_comparisons(50, 4)
    expected = (X[:, 1] - X[:, 0]) @ (a + 2 * b)
    logits = model(torch.from_numpy(X)).detach().numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    rebuilt = model_from_state(state)
    assert rebuilt.hidden == 0 and torch.equal(
        rebuilt(torch.from_numpy(X)), model(torch.from_numpy(X))
    )
    assert model_from_state(state_to_numpy(PairwiseRewardModel(F, hidden=1))).hidden == 1
