"""Model directories: the reward model's weights plus what is needed to rebuild and trust it.

A model directory holds ``weights-<hash>.npz`` (parameter name -> array) and ``model.json``
(feature set, architecture, provenance such as the run and its privacy parameters, and the
weights file's name and SHA-256; see ``fedgaze.atomic.commit_blob_with_manifest``).
``fedgaze score`` and the federation's checkpoints use the same format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedgaze.atomic import commit_arrays, load_arrays

MODEL_FORMAT = 1
MANIFEST = "model.json"


class ModelDirError(ValueError):
    """A model directory is missing or corrupt; the message names the file."""


@dataclass(frozen=True)
class SavedModel:
    """A reward model as stored on disk: weights, architecture and provenance."""

    state: dict[str, np.ndarray]
    feature_set: str
    n_features: int
    hidden: int
    provenance: dict[str, Any] = field(default_factory=dict)


def save_model(directory: str | Path, model: SavedModel) -> None:
    """Write ``model`` into ``directory``: a new weights file, then the manifest, atomically."""
    manifest = {
        "format": MODEL_FORMAT,
        "feature_set": model.feature_set,
        "n_features": model.n_features,
        "hidden": model.hidden,
        "parameters": {k: list(v.shape) for k, v in model.state.items()},
        "provenance": model.provenance,
    }
    commit_arrays(directory, "weights", model.state, MANIFEST, manifest)


def load_model(directory: str | Path) -> SavedModel:
    """Read a model directory written by :func:`save_model`, checking weights match manifest."""
    root = Path(directory)
    manifest = root / MANIFEST
    try:
        meta, state = load_arrays(root, MANIFEST)
    except FileNotFoundError:
        raise ModelDirError(f"{manifest}: missing (is {root} a fedgaze model directory?)") from None
    except ValueError as err:
        raise ModelDirError(str(err)) from None
    if meta.get("format") != MODEL_FORMAT:
        raise ModelDirError(f"{manifest}: unsupported format {meta.get('format')!r}")
    shapes = {k: list(v.shape) for k, v in state.items()}
    if shapes != meta.get("parameters"):
        raise ModelDirError(f"{root / meta['blob']}: parameters do not match {manifest}")
    return SavedModel(
        state=state,
        feature_set=str(meta["feature_set"]),
        n_features=int(meta["n_features"]),
        hidden=int(meta["hidden"]),
        provenance=dict(meta.get("provenance", {})),
    )
