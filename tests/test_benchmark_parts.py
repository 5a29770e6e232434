"""The pieces the reward benchmark is built from: client-level DP, personalization, simulation."""

from __future__ import annotations

import math
import random

import dp_accounting
import numpy as np
import pytest
from opacus.accountants import RDPAccountant

from fedgaze.local.simulation import DeviceRows, SimulationPlan, simulate_federation
from fedgaze.model.evaluation import roc_auc
from fedgaze.model.personal import PersonalHead, fit_personal_head
from fedgaze.privacy.accounting import RDP_ORDERS, epsilon_for, merge_history
from fedgaze.privacy.central import CentralDPConfig, calibrate_central_noise, central_epsilon
from fedgaze.privacy.dp_train import train_local_nonprivate
from fedgaze.server.aggregate import dp_fedavg


@pytest.mark.slow
def test_cached_rdp_epsilon_is_identical_to_opacus_accountant() -> None:
    rnd = random.Random(3)
    for _ in range(20):
        history = [
            (rnd.uniform(0.6, 3.0), rnd.choice([1.0, 0.5, 0.25, 0.1]), rnd.randint(1, 40))
            for _ in range(rnd.randint(1, 3))
        ]
        acc = RDPAccountant()
        acc.history = merge_history(history)
        assert epsilon_for(history, 1e-5) == acc.get_epsilon(1e-5, alphas=list(RDP_ORDERS))


def test_roc_auc_by_hand() -> None:
    # Positives score 0.9 and 0.4, negatives 0.5 and 0.1: 3 of 4 pairs ordered right.
    assert roc_auc(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.5, 0.1])) == 0.75
    # A tie between a positive and a negative counts one half.
    assert roc_auc(np.array([1, 0]), np.array([0.5, 0.5])) == 0.5
    assert math.isnan(roc_auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_central_epsilon_matches_dp_accounting() -> None:
    for q, accountant in ((1.0, "rdp"), (0.3, "rdp"), (0.3, "pld")):
        one = dp_accounting.GaussianDpEvent(1.5)
        event = one if q == 1.0 else dp_accounting.PoissonSampledDpEvent(q, one)
        acc = (
            dp_accounting.rdp.RdpAccountant()
            if accountant == "rdp"
            else (dp_accounting.pld.PLDAccountant())
        )
        acc.compose(dp_accounting.SelfComposedDpEvent(event, 10))
        ours = central_epsilon(1.5, sample_rate=q, rounds=10, delta=1e-5, accountant=accountant)
        assert ours == pytest.approx(acc.get_epsilon(1e-5), rel=1e-9)
    assert central_epsilon(1.5, sample_rate=1.0, rounds=0, delta=1e-5) == 0.0
    # Sampling amplifies privacy: fewer participants per round, smaller epsilon.
    assert central_epsilon(1.5, sample_rate=0.1, rounds=10, delta=1e-5) < central_epsilon(
        1.5, sample_rate=1.0, rounds=10, delta=1e-5
    )


def test_calibrated_central_noise_fits_and_is_tight() -> None:
    sigma = calibrate_central_noise(4.0, sample_rate=1.0, rounds=20, delta=1e-5)
    assert central_epsilon(sigma, sample_rate=1.0, rounds=20, delta=1e-5) <= 4.0
    assert central_epsilon(sigma - 0.02, sample_rate=1.0, rounds=20, delta=1e-5) > 4.0
    with pytest.raises(ValueError):
        CentralDPConfig(noise_multiplier=0.0, clip_norm=1.0)


def _state(value: float) -> dict[str, np.ndarray]:
    return {"a": np.full((2, 2), value, np.float32), "b": np.full(3, value, np.float32)}


def test_dp_fedavg_clips_each_update_and_divides_by_expected_devices() -> None:
    current = _state(0.0)
    # Update norms: sqrt(7) * 1 and sqrt(7) * 10 (7 coordinates); clip 1 scales both to norm 1.
    updates = [_state(1.0), _state(10.0)]
    rng = np.random.default_rng(0)
    new, norms = dp_fedavg(
        current, updates, clip_norm=1.0, noise_multiplier=0.0, expected_devices=2, rng=rng
    )
    assert norms == pytest.approx([math.sqrt(7), 10 * math.sqrt(7)])
    # Each clipped update is 1/sqrt(7) per coordinate; the sum over 2 devices divided by 2.
    expected = 1 / math.sqrt(7)
    assert np.allclose(new["a"], expected) and np.allclose(new["b"], expected)
    assert new["a"].dtype == np.float32 and new["a"].shape == (2, 2)


def test_dp_fedavg_one_device_moves_the_result_by_at_most_clip_over_expected() -> None:
    current = _state(0.5)
    others = [_state(0.7), _state(0.2)]
    hostile = _state(1e6)
    kwargs = {"clip_norm": 0.3, "noise_multiplier": 0.0, "expected_devices": 3}
    with_h, _ = dp_fedavg(current, [*others, hostile], rng=np.random.default_rng(0), **kwargs)
    without, _ = dp_fedavg(current, others, rng=np.random.default_rng(0), **kwargs)
    diff = np.concatenate([(with_h[k] - without[k]).ravel() for k in current])
    assert np.linalg.norm(diff) <= 0.3 / 3 + 1e-6


def test_dp_fedavg_adds_noise_of_the_stated_scale() -> None:
    current = {"w": np.zeros(20_000, np.float32)}
    new, _ = dp_fedavg(
        current,
        [current],
        clip_norm=2.0,
        noise_multiplier=1.5,
        expected_devices=4,
        rng=np.random.default_rng(1),
    )
    # Noise std on the sum is 1.5 * 2 = 3, on the average 3 / 4.
    assert float(np.std(new["w"])) == pytest.approx(0.75, rel=0.03)


def _pairs(rng: np.random.Generator, n: int, bias: float) -> tuple[np.ndarray, np.ndarray]:
    X = rng.normal(size=(n, 2, 3))
    logit = 2.0 * (X[:, 1, 0] - X[:, 0, 0]) + bias
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    return X, y


def test_personal_head_learns_a_side_bias_and_stays_zero_without_data() -> None:
    rng = np.random.default_rng(0)
    X, y = _pairs(rng, 400, bias=1.5)
    shared = 2.0 * (X[:, 1, 0] - X[:, 0, 0])  # the shared model knows the feature, not the bias
    head = fit_personal_head(shared, X, y)
    assert 1.0 < head.bias < 2.0
    empty = fit_personal_head(np.empty(0), np.empty((0, 2, 3)), np.empty(0))
    assert empty.bias == 0.0 and not empty.weights.any()
    assert np.array_equal(PersonalHead.zero(3).adjust(shared, X), shared)


def test_personal_head_prior_keeps_few_labels_close_to_the_shared_model() -> None:
    rng = np.random.default_rng(1)
    X, y = _pairs(rng, 3, bias=0.0)
    head = fit_personal_head(np.zeros(3), X, y)
    assert abs(head.bias) < 1.0 and np.abs(head.weights).max() < 0.2


def test_train_local_nonprivate_is_reproducible_and_learns() -> None:
    rng = np.random.default_rng(2)
    X, y = _pairs(rng, 64, bias=0.0)
    X32, y32 = X.astype(np.float32), y.astype(np.float32)
    a = train_local_nonprivate(None, X32, y32, epochs=3, lr=0.1, batch_size=8, seed=5)
    b = train_local_nonprivate(None, X32, y32, epochs=3, lr=0.1, batch_size=8, seed=5)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = train_local_nonprivate(a, X32[:0], y32[:0], epochs=3, lr=0.1, batch_size=8, seed=5)
    assert all(np.array_equal(a[k], c[k]) for k in a)


def _devices(n_devices: int, seed: int) -> list[DeviceRows]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_devices):
        X, y = _pairs(rng, 30, bias=0.0)
        out.append(DeviceRows(f"d{i}", X.astype(np.float32), y.astype(np.float32)))
    return out


def _accuracy(state: dict[str, np.ndarray], devices: list[DeviceRows]) -> float:
    from fedgaze.model.reward import model_from_state, predict_logits

    model = model_from_state(state)
    X = np.concatenate([d.X for d in devices])
    y = np.concatenate([d.y for d in devices])
    return float(np.mean((predict_logits(model, X) > 0) == (y == 1)))


def test_simulated_federation_learns_and_accounts_every_mode() -> None:
    train, test = _devices(6, 0), _devices(4, 1)
    common = {"rounds": 4, "lr": 0.2, "hidden": 4, "seed": 0}
    plain = simulate_federation(train, SimulationPlan(mode="nonprivate", **common))
    assert _accuracy(plain.state, test) > 0.7
    assert plain.device_epsilons == {} and plain.central_epsilon is None

    dp = simulate_federation(train, SimulationPlan(mode="device_dp", device_epsilon=8.0, **common))
    assert set(dp.device_epsilons) == {d.device_id for d in train}
    assert max(dp.device_epsilons.values()) <= 8.0 and dp.declined == 0
    assert dp.noise_multiplier is not None and dp.noise_multiplier > 0

    central = CentralDPConfig(noise_multiplier=1.0, clip_norm=1.0, sample_rate=1.0)
    cdp = simulate_federation(train, SimulationPlan(mode="client_dp", central=central, **common))
    assert cdp.central_epsilon == pytest.approx(
        central_epsilon(1.0, sample_rate=1.0, rounds=4, delta=1e-5)
    )
    with pytest.raises(ValueError, match="central"):
        simulate_federation(train, SimulationPlan(mode="client_dp", **common))
    with pytest.raises(ValueError, match="no device"):
        simulate_federation([], SimulationPlan(mode="nonprivate"))


def test_personal_head_round_trips_and_rejects_bad_files(tmp_path) -> None:
    from fedgaze.model.personal import load_personal_head, save_personal_head

    head = PersonalHead(bias=0.25, weights=np.array([0.1, -0.2, 0.0]))
    save_personal_head(tmp_path / "h.json", head)
    back = load_personal_head(tmp_path / "h.json")
    assert back.bias == 0.25 and np.array_equal(back.weights, head.weights)
    (tmp_path / "bad.json").write_text('{"format": 1, "bias": "x"}')
    with pytest.raises(ValueError, match=r"bad\.json"):
        load_personal_head(tmp_path / "bad.json")
