"""A device's text reward model rows: features of its own texts, labels per the plan's mode."""

from __future__ import annotations

import numpy as np
import pytest

from fedgaze.client.device.store import save_device
from fedgaze.client.local_rows import behaviour_rows, text_rows
from fedgaze.data.split import chronological_split
from fedgaze.data.synthetic.cohort import generate_cohort
from fedgaze.federation.settings import NodeSettings, RoundPlan
from fedgaze.model.factory import initial_state
from fedgaze.model.weights import ModelState
from fedgaze.text.encoder import load_encoder
from fedgaze.text.features import n_text_features


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> NodeSettings:
    device = generate_cohort(1, seed=4, comparisons_per_device=10)[0]
    root = tmp_path_factory.mktemp("dev")
    save_device(root / "store", device, key_path=root / "store.key")
    return NodeSettings(
        device_id=device.device_id,
        device_dir=str(root),
        data=str(root / "store"),
        store_key=str(root / "store.key"),
        epsilon_budget=8.0,
        delta=1e-5,
    )


@pytest.fixture(scope="module")
def behaviour() -> ModelState:
    return initial_state(16, seed=1)


def _plan(labels: str) -> RoundPlan:
    return RoundPlan(
        run_key="r", server_round=1, model_kind="text", text_labels=labels, holdout=0.25
    )  # type: ignore[arg-type]


def test_text_rows_follow_the_labels_mode(node: NodeSettings, behaviour: ModelState) -> None:
    from fedgaze.client.device.data import load_node_device

    device = load_node_device(node)
    train, test = chronological_split(device.comparisons(), 0.25)
    unlabelled = [
        q
        for q in device.queries
        if q.pairwise and q.response_right and not q.is_labelled_comparison
    ]
    width = n_text_features(load_encoder().dim)
    explicit = text_rows(node, _plan("explicit"), None)
    assert explicit.train_X.shape == (len(train), 2, width)
    assert explicit.train_y.tolist() == [q.label_right for q in train]
    assert explicit.test_y.tolist() == [q.label_right for q in test]
    implicit = text_rows(node, _plan("implicit"), behaviour)
    assert len(implicit.train_y) == len(train) + len(unlabelled) and implicit.soft
    assert ((implicit.train_y > 0) & (implicit.train_y < 1)).all()
    both = text_rows(node, _plan("both"), behaviour)
    assert both.train_y[: len(train)].tolist() == [float(q.label_right) for q in train]
    np.testing.assert_array_equal(both.train_y[len(train) :], implicit.train_y[len(train) :])
    np.testing.assert_array_equal(both.test_X, explicit.test_X)
    with pytest.raises(ValueError, match="needs the behaviour model"):
        text_rows(node, _plan("both"), None)


def test_behaviour_rows_are_unchanged(node: NodeSettings) -> None:
    rows = behaviour_rows(node, 0.25)
    assert rows.train_X.shape[1:] == (2, 83) and not rows.soft
    assert set(rows.train_y.tolist()) <= {0.0, 1.0}
