"""``fedgaze train --kind text --mode central``: the text reward model on a pooled IFLLM folder.

Every pairwise comparison with both answers is a candidate example, with a target P(right
preferred) chosen by ``labels``:

- ``explicit``: the person's left/right choice (1 or 0); comparisons without one are skipped;
- ``implicit``: the behaviour model's inference from the comparison's own gaze and mouse traces
  (:func:`fedgaze.labels.release.implicit_p_right`), a soft target, for every comparison;
- ``both``: the explicit choice where given, else the inference.

The behaviour model comes from ``behaviour_model`` (a behaviour model directory) or, when none
is given, is trained here first with the shipped central recipe on the same data's explicit
choices (at the same ``epsilon`` when DP). The text model is then trained on the frozen
encoder's features (:mod:`fedgaze.text.features`) and saved as a text model directory
(:mod:`fedgaze.text.model_dir`) whose provenance states both guarantees and their basic
composition (``epsilon_total``): the implicit labels depend on the behaviour model, which saw
the same people's data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from fedgaze import defaults
from fedgaze.data.ifllm import load_ifllm
from fedgaze.data.schema import Device, Query
from fedgaze.features.matrix import concat_matrices, scoring_queries
from fedgaze.features.v2 import FEATURE_SET, N_SIDE_FEATURES, featurize_device
from fedgaze.labels.release import implicit_p_right
from fedgaze.model.kind import TEXT_LABELS, TextLabels
from fedgaze.model.store import MANIFEST, ModelDirError, load_model
from fedgaze.model.weights import ModelState
from fedgaze.privacy.dp_train import DPConfig, train_central
from fedgaze.text.encoder import load_encoder
from fedgaze.text.features import comparison_features
from fedgaze.text.model_dir import (
    CONFIG,
    SavedTextModel,
    encoder_info,
    load_text_model,
    save_text_model,
)

TEXT_UNIT = "one pairwise comparison (its prompt, two answers and label)"
BEHAVIOUR_UNIT = "one labelled comparison"
ENCODE_CHUNK = 1024


@dataclass(frozen=True)
class BehaviourSource:
    """The behaviour model that infers implicit labels, and what the provenance says of it."""

    state: ModelState
    epsilon: float | None
    delta: float | None
    record: dict[str, Any]


@dataclass(frozen=True)
class TextTargets:
    """Which comparisons train the text model and with which targets (P(right preferred))."""

    keep: np.ndarray
    y: np.ndarray
    explicit: int
    implicit: int


def state_sha256(state: Mapping[str, np.ndarray]) -> str:
    """A digest of a model state (names, dtypes, shapes and bytes), for the provenance."""
    h = hashlib.sha256()
    for name, arr in state.items():
        a = np.ascontiguousarray(arr)
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def needs_inference(labels: TextLabels, queries: Sequence[Query]) -> list[bool]:
    """Per comparison: whether its target is the behaviour model's inference."""
    if labels == "explicit":
        return [False] * len(queries)
    if labels == "implicit":
        return [True] * len(queries)
    return [not q.is_labelled_comparison for q in queries]


def text_targets(
    labels: TextLabels, queries: Sequence[Query], inferred: Mapping[int, float]
) -> TextTargets:
    """The targets of ``queries`` under ``labels``; ``inferred`` maps the position of each
    comparison that :func:`needs_inference` to its inferred P(right)."""
    keep = np.zeros(len(queries), dtype=bool)
    y = np.zeros(len(queries), dtype=np.float64)
    explicit = implicit = 0
    for i, (query, infer) in enumerate(zip(queries, needs_inference(labels, queries), strict=True)):
        if infer:
            keep[i], y[i] = True, inferred[i]
            implicit += 1
        elif query.is_labelled_comparison:
            keep[i], y[i] = True, float(query.label_right)
            explicit += 1
    return TextTargets(keep=keep, y=y[keep], explicit=explicit, implicit=implicit)


def composed_privacy(
    epsilon: float | None, delta: float | None, behaviour: BehaviourSource | None
) -> dict[str, Any]:
    """``epsilon_total``, ``delta_total`` and a sentence on how they were obtained."""
    if epsilon is None:
        return {
            "epsilon_total": None,
            "delta_total": None,
            "composition": "non-private training: no differential privacy guarantee",
        }
    if behaviour is None:
        return {
            "epsilon_total": epsilon,
            "delta_total": delta,
            "composition": "the text model's DP-SGD alone (no behaviour model was used)",
        }
    if behaviour.epsilon is None:
        return {
            "epsilon_total": None,
            "delta_total": None,
            "composition": "the implicit labels come from a behaviour model that states no DP "
            "guarantee: no end-to-end guarantee for the people whose data trained it",
        }
    return {
        "epsilon_total": epsilon + behaviour.epsilon,
        "delta_total": (delta or 0.0) + (behaviour.delta or 0.0),
        "composition": "basic composition: the implicit labels come from a behaviour model "
        "trained with DP on the same people's data, so the guarantees add "
        "(epsilon_total = epsilon + behaviour_model.epsilon, likewise delta; an upper bound "
        "if the behaviour model saw other data)",
    }


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def load_behaviour(directory: Path) -> BehaviourSource:
    """A behaviour model directory's state and stated privacy (ValueError naming it)."""
    if (directory / CONFIG).is_file() and not (directory / MANIFEST).is_file():
        raise ValueError(
            f"behaviour model {directory}: this is a text model directory ({CONFIG}), not a "
            f"behaviour model ({MANIFEST}); train one with `fedgaze train --kind behaviour`"
        )
    try:
        saved = load_model(directory)
    except ModelDirError as err:
        raise ValueError(f"behaviour model: {err}") from None
    if saved.feature_set != FEATURE_SET or saved.n_features != N_SIDE_FEATURES:
        raise ValueError(
            f"behaviour model {directory}: feature set {saved.feature_set!r} with "
            f"{saved.n_features} features, need {FEATURE_SET!r} with {N_SIDE_FEATURES} "
            "(is it a text model?)"
        )
    epsilon, delta = (
        _number(saved.provenance.get("epsilon")),
        _number(saved.provenance.get("delta")),
    )
    return BehaviourSource(
        state=saved.state,
        epsilon=epsilon,
        delta=delta if epsilon is not None else None,
        record={
            "source": "directory",
            "path": str(directory.resolve()),
            "trained": saved.provenance.get("kind"),
            "data": saved.provenance.get("data"),
            "feature_set": saved.feature_set,
            "state_sha256": state_sha256(saved.state),
            "epsilon": epsilon,
            "delta": delta if epsilon is not None else None,
        },
    )


def train_behaviour(
    devices: Sequence[Device], *, epsilon: float | None, delta: float, seed: int
) -> BehaviourSource:
    """The behaviour model trained here with the shipped central recipe on the explicit
    choices of ``devices`` (as ``fedgaze train --kind behaviour --mode central`` does)."""
    fm = concat_matrices([featurize_device(d) for d in devices], N_SIDE_FEATURES)
    if len(fm.y) == 0:
        raise ValueError(
            "no labelled comparisons to train the behaviour model that infers implicit labels "
            "on; pass a behaviour model directory (--behaviour-model) or use labels 'explicit'"
        )
    lr = defaults.CENTRAL_LR
    dp = None if epsilon is None else DPConfig(epsilon_budget=epsilon, delta=delta, lr=lr)
    state, spent = train_central(
        fm.X, fm.y, epochs=defaults.CENTRAL_EPOCHS, lr=lr, seed=seed, dp=dp, hidden=defaults.HIDDEN
    )
    return BehaviourSource(
        state=state,
        epsilon=spent,
        delta=delta if spent is not None else None,
        record={
            "source": "trained here",
            "note": "trained first on the same data's explicit choices with the shipped "
            "central recipe (fedgaze train --kind behaviour --mode central)",
            "recipe": {
                "epochs": defaults.CENTRAL_EPOCHS,
                "lr": lr,
                "hidden": defaults.HIDDEN,
                "seed": seed,
            },
            "feature_set": FEATURE_SET,
            "examples": len(fm.y),
            "state_sha256": state_sha256(state),
            "epsilon": spent,
            "delta": delta if spent is not None else None,
            "unit": BEHAVIOUR_UNIT if spent is not None else None,
        },
    )


def _inferred(
    devices: Sequence[Device],
    per_device: Sequence[list[Query]],
    labels: TextLabels,
    state: ModelState,
) -> dict[int, float]:
    """Position (in the flat list of comparisons) -> inferred P(right), where needed."""
    inferred: dict[int, float] = {}
    offset = 0
    for device, queries in zip(devices, per_device, strict=True):
        wanted = [i for i, need in enumerate(needs_inference(labels, queries)) if need]
        if wanted:
            p = implicit_p_right([queries[i] for i in wanted], device.calibration, state)
            inferred.update({offset + i: float(v) for i, v in zip(wanted, p, strict=True)})
        offset += len(queries)
    return inferred


def _features(encoder_spec: str, queries: Sequence[Query]) -> np.ndarray:
    encoder = load_encoder(encoder_spec)
    parts = [
        comparison_features(
            encoder,
            [q.prompt for q in chunk],
            [q.response_left for q in chunk],
            [q.response_right or "" for q in chunk],
        )
        for chunk in (queries[i : i + ENCODE_CHUNK] for i in range(0, len(queries), ENCODE_CHUNK))
    ]
    return np.concatenate(parts, axis=0)


def train_text_model(
    data: Path,
    out: Path,
    *,
    labels: TextLabels = defaults.TEXT_LABELS,
    epsilon: float | None = None,
    delta: float = defaults.DELTA,
    epochs: int = defaults.CENTRAL_EPOCHS,
    lr: float = defaults.CENTRAL_LR,
    hidden: int = defaults.HIDDEN,
    seed: int = defaults.SEED,
    encoder_spec: str = defaults.TEXT_ENCODER,
    behaviour_model: Path | None = None,
) -> SavedTextModel:
    """Train the text reward model on every comparison of ``data`` and save it to ``out``.

    ``epsilon``: target epsilon of DP-SGD (at ``delta``; one comparison is the unit), None for
    non-private training; a behaviour model trained here uses the same. Raises ValueError when
    nothing can be trained on or the behaviour model does not fit.
    """
    if labels not in TEXT_LABELS:
        raise ValueError(f"labels must be one of {TEXT_LABELS}, got {labels!r}")
    if labels == "explicit" and behaviour_model is not None:
        raise ValueError("a behaviour model is only used with labels 'implicit' or 'both'")
    dataset = load_ifllm(data)
    devices = list(dataset.devices)
    per_device = [scoring_queries(d.queries) for d in devices]
    queries = [q for qs in per_device for q in qs]
    behaviour: BehaviourSource | None = None
    if any(needs_inference(labels, queries)):
        behaviour = (
            load_behaviour(behaviour_model)
            if behaviour_model is not None
            else train_behaviour(devices, epsilon=epsilon, delta=delta, seed=seed)
        )
    inferred = _inferred(devices, per_device, labels, behaviour.state) if behaviour else {}
    targets = text_targets(labels, queries, inferred)
    if len(targets.y) == 0:
        raise ValueError(f"{data}: no pairwise comparisons with {labels} labels to train on")
    kept = [q for q, k in zip(queries, targets.keep, strict=True) if k]
    X = _features(encoder_spec, kept)
    dp = None if epsilon is None else DPConfig(epsilon_budget=epsilon, delta=delta, lr=lr)
    state, spent = train_central(
        X,
        targets.y,
        epochs=epochs,
        lr=lr,
        seed=seed,
        dp=dp,
        hidden=hidden,
        kind="text",
        soft_labels=True,
    )
    bounds = np.cumsum([0, *(len(qs) for qs in per_device)])
    contributing = sum(bool(targets.keep[a:b].any()) for a, b in pairwise(bounds))
    provenance: dict[str, Any] = {
        "mode": "central",
        "data": str(data.resolve()),
        "devices": contributing,
        "examples": len(kept),
        "labels": labels,
        "label_sources": {"explicit": targets.explicit, "implicit": targets.implicit},
        "skipped": len(queries) - len(kept),
        "epochs": epochs,
        "lr": lr,
        "seed": seed,
        "epsilon": spent,
        "delta": delta if spent is not None else None,
        "unit": TEXT_UNIT if spent is not None else None,
        "behaviour_model": behaviour.record if behaviour else None,
        **composed_privacy(spent, delta if spent is not None else None, behaviour),
        "problems": len(dataset.problems),
    }
    encoder = encoder_info(load_encoder(encoder_spec), encoder_spec)
    save_text_model(out, state, encoder=encoder, hidden=hidden, provenance=provenance)
    return load_text_model(out)
