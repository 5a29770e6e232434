"""Building reward models for the current feature set: fresh, or from a saved model directory."""

from __future__ import annotations

import torch

from fedgaze.features.v2 import FEATURE_SET, N_SIDE_FEATURES
from fedgaze.model.kind import ModelKind
from fedgaze.model.reward import PairwiseRewardModel, load_numpy_state, new_model, state_to_numpy
from fedgaze.model.store import ModelDirError, SavedModel
from fedgaze.model.weights import ModelState


def initial_state(
    hidden: int, seed: int, kind: ModelKind = "behaviour", n_features: int = N_SIDE_FEATURES
) -> ModelState:
    """A freshly initialised reward model's weights, reproducible from ``seed``; ``n_features``
    is the input width per answer (the behaviour feature set's unless told)."""
    torch.manual_seed(seed)
    return state_to_numpy(new_model(kind, n_features, hidden, None))


def build_model(saved: SavedModel) -> PairwiseRewardModel:
    """Rebuild a torch model from a saved model, refusing one made for other features."""
    if saved.feature_set != FEATURE_SET or saved.n_features != N_SIDE_FEATURES:
        raise ModelDirError(
            f"model was trained on feature set {saved.feature_set!r} with {saved.n_features} "
            f"features; this fedgaze computes {FEATURE_SET!r} with {N_SIDE_FEATURES}"
        )
    model = PairwiseRewardModel(saved.n_features, hidden=saved.hidden)
    load_numpy_state(model, saved.state)
    return model
