"""``fedgaze train`` (central mode) and ``fedgaze score``: models for independent evaluation.

Central training pools every labelled comparison of an IFLLM-format folder (optionally with
DP-SGD at a target epsilon); scoring writes one probability per labelled pairwise comparison of
a folder, including those whose traces are missing or unusable.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedgaze import defaults
from fedgaze.atomic import write_bytes_atomic
from fedgaze.data.ifllm import load_ifllm
from fedgaze.data.schema import Device
from fedgaze.features.matrix import FeatureMatrix, concat_matrices
from fedgaze.features.v2 import FEATURE_SET, N_SIDE_FEATURES, featurize_device
from fedgaze.model.factory import build_model
from fedgaze.model.reward import predict_proba
from fedgaze.model.store import SavedModel, load_model, save_model
from fedgaze.privacy.dp_train import DPConfig, train_central


def train_central_model(
    data: Path,
    out: Path,
    *,
    epsilon: float | None,
    delta: float = 1e-5,
    epochs: int = defaults.CENTRAL_EPOCHS,
    lr: float = defaults.CENTRAL_LR,
    hidden: int = defaults.HIDDEN,
    seed: int = 0,
) -> SavedModel:
    """Train one model on all labelled comparisons in ``data`` and save it to ``out``."""
    dataset = load_ifllm(data)
    fm = concat_matrices([featurize_device(device) for device in dataset.devices], N_SIDE_FEATURES)
    if len(fm.y) == 0:
        raise ValueError(f"{data}: no labelled pairwise comparisons to train on")
    dp = None if epsilon is None else DPConfig(epsilon_budget=epsilon, delta=delta, lr=lr)
    state, spent = train_central(fm.X, fm.y, epochs=epochs, lr=lr, seed=seed, dp=dp, hidden=hidden)
    saved = SavedModel(
        state=state,
        feature_set=FEATURE_SET,
        n_features=N_SIDE_FEATURES,
        hidden=hidden,
        provenance={
            "kind": "central",
            "data": str(data.resolve()),
            "examples": len(fm.y),
            "devices": len(dataset.devices),
            "epsilon": spent,
            "delta": delta if spent is not None else None,
            "unit": "one labelled comparison" if spent is not None else None,
            "problems": len(dataset.problems),
        },
    )
    save_model(out, saved)
    return saved


def _preference_ids(devices: Sequence[Device]) -> np.ndarray:
    """Query ids of every pairwise query with a recorded preference (ties included)."""
    return np.array(
        [q.query_id for d in devices for q in d.queries if q.preference is not None], np.int64
    )


def score(model_dir: Path, data: Path, out: Path) -> int:
    """Write ``query_ID,p_right`` for every labelled pairwise comparison in ``data``.

    "Labelled" here means any recorded preference, ties included (IFLLM has none; an evaluator
    can drop them by their label), so that no comparison an evaluator holds goes unscored.
    Queries whose traces are missing or unusable are scored from what the device has (their
    text features). Returns the number of rows written; p_right is the probability that the
    right (second) answer is preferred.
    """
    model = build_model(load_model(model_dir))
    dataset = load_ifllm(data)
    scored = [featurize_device(device, scoring=True) for device in dataset.devices]
    fm = concat_matrices(scored, N_SIDE_FEATURES)
    keep = np.isin(fm.query_ids, _preference_ids(dataset.devices))
    fm = FeatureMatrix(X=fm.X[keep], y=fm.y[keep], query_ids=fm.query_ids[keep])
    probs = predict_proba(model, fm.X) if len(fm.y) else np.empty(0)
    order = np.argsort(fm.query_ids, kind="stable")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["query_ID", "p_right"])
    for i in order:
        writer.writerow([int(fm.query_ids[i]), f"{float(probs[i]):.6f}"])
    write_bytes_atomic(out, buf.getvalue().encode())
    return len(order)
