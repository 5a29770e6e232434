"""Client sampling: Poisson selection of a round's devices, and the client-level DP accounting
that credits it (amplification by sampling), from settings to the server's round record."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from fedgaze.federation.planning import plan_settings
from fedgaze.federation.results import RoundLog
from fedgaze.privacy.central import central_epsilon
from fedgaze.server.rounds import sample_nodes
from settings_factory import server_settings


def test_fraction_one_sends_to_every_device_in_order() -> None:
    assert sample_nodes([5, 2, 9], 1.0, random.Random(0)) == [5, 2, 9]


def test_each_device_is_sampled_independently_at_the_fraction() -> None:
    rng = random.Random(1)
    nodes = list(range(200))
    sizes = [len(sample_nodes(nodes, 0.1, rng)) for _ in range(200)]
    mean = sum(sizes) / len(sizes)
    assert 18 < mean < 22  # 20 expected; sd of the mean about 0.3
    assert len(set(sizes)) > 5  # Poisson sampling: the sample size varies
    chosen = sample_nodes(nodes, 0.1, rng)
    assert chosen == sorted(chosen) and set(chosen) <= set(nodes)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.01])
def test_a_fraction_outside_zero_one_is_refused(bad: float) -> None:
    with pytest.raises(ValidationError, match="fraction"):
        server_settings(fraction=bad)


def test_client_dp_accounting_credits_the_sampling() -> None:
    full = server_settings(client_dp_noise_multiplier=1.0, client_dp_clip_norm=0.5)
    tenth = server_settings(client_dp_noise_multiplier=1.0, client_dp_clip_norm=0.5, fraction=0.1)
    spent_full, spent_tenth = full.client_dp_spent(20), tenth.client_dp_spent(20)
    assert spent_full is not None and spent_tenth is not None
    assert spent_tenth.sample_rate == 0.1 and spent_full.sample_rate == 1.0
    assert spent_tenth.epsilon == pytest.approx(
        central_epsilon(1.0, sample_rate=0.1, rounds=20, delta=spent_tenth.delta)
    )
    assert spent_tenth.epsilon < spent_full.epsilon / 3


def test_calibration_uses_the_fraction() -> None:
    fields = dict(
        run_dir="/tmp/x", run_key="k", min_nodes=2, node_wait_timeout=5, round_timeout=5,
        hidden=4, noise_multiplier=1.0, rounds=20,
    )  # fmt: skip
    full = plan_settings(epsilon=None, client_dp_epsilon=4.0, **fields)
    tenth = plan_settings(epsilon=None, client_dp_epsilon=4.0, fraction=0.1, **fields)
    assert tenth.client_dp_noise_multiplier is not None
    assert full.client_dp_noise_multiplier is not None
    assert tenth.client_dp_noise_multiplier < full.client_dp_noise_multiplier
    spent = tenth.client_dp_spent(20)
    assert spent is not None and spent.epsilon <= 4.0


def test_the_round_log_records_the_sample_and_reads_old_records() -> None:
    log = RoundLog(round=3, train_devices=2, train_examples=10, replies=2, sampled=4)
    assert RoundLog.from_json(log.to_json()) == log
    old = {"round": 1, "train_devices": 2, "train_examples": 10, "replies": 2}
    assert RoundLog.from_json(old).sampled is None
