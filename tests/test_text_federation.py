"""The text reward model trained over a real local federation (SuperLink, SuperNodes, TLS), with
labels inferred on the devices by a behaviour model the server sends, then scored."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from fedgaze.audit.verify import audit_path
from fedgaze.data.synthetic.cohort import generate_cohort
from fedgaze.features.v2 import FEATURE_SET, N_SIDE_FEATURES
from fedgaze.federation.rundir import RunLayout
from fedgaze.local.demo import FederationOptions, run_local_federation
from fedgaze.model.factory import initial_state
from fedgaze.model.store import SavedModel, save_model

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

NODES, SEED = 3, 3


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("text")
    behaviour = root / "behaviour"
    save_model(
        behaviour,
        SavedModel(initial_state(16, seed=0), FEATURE_SET, N_SIDE_FEATURES, 16, {"kind": "test"}),
    )
    summary = run_local_federation(
        FederationOptions(
            nodes=NODES,
            rounds=2,
            run_dir=root / "run",
            seed=SEED,
            epsilon_budget=8.0,
            model_kind="text",
            text_labels="both",
            behaviour_model=behaviour,
        ),
        Console(file=io.StringIO(), width=200),
    ).to_json()
    return root / "run", summary


def test_devices_train_the_text_model_within_their_budgets(
    run: tuple[Path, dict[str, Any]],
) -> None:
    run_dir, summary = run
    assert summary["rounds_completed"] == 2
    trained = [d for d in summary["devices"] if d["rounds_participated"] == 2]
    assert trained, summary["devices"]
    for device in summary["devices"]:
        assert device["epsilon"] <= device["epsilon_budget"] + 1e-9
    assert summary["metrics"][-1]["eval_examples"] > 0
    audits = audit_path(run_dir)
    assert all(a.ok for a in audits), [p for a in audits for p in a.problems]


def test_the_final_model_is_a_text_reward_model_that_scores_any_answer(
    run: tuple[Path, dict[str, Any]],
) -> None:
    from fedgaze.text.reward_model import RewardModel

    run_dir, _ = run
    model = RewardModel.load(RunLayout(run_dir).model)
    assert model.provenance["mode"] == "federated" and model.provenance["labels"] == "both"
    assert model.provenance["epsilon_per_device"]["max"] <= 8.0
    queries = [q for q in generate_cohort(1, seed=SEED)[0].queries if q.pairwise][:4]
    scores = model.score([q.prompt for q in queries], [q.response_left for q in queries])
    assert scores.shape == (len(queries),) and np.isfinite(scores).all()
    p = model.prefer(
        [q.prompt for q in queries],
        [q.response_left for q in queries],
        [q.response_right or "" for q in queries],
    )
    right = model.score([q.prompt for q in queries], [q.response_right or "" for q in queries])
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-(right - scores))), rtol=1e-5, atol=1e-6)
