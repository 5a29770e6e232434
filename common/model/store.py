"""Model directories: the reward model's weights plus what is needed to rebuild and trust it.

A model directory holds ``weights.npz`` (parameter name -> array) and ``model.json`` (feature
set, architecture, provenance such as the run and its privacy parameters). ``fedgaze score``
and the federation's checkpoints use the same format.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedgaze.atomic import write_bytes_atomic, write_json_atomic

MODEL_FORMAT = 1


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
    """Write ``model`` into ``directory``: weights first, then the manifest, each atomically."""
    root = Path(directory)
    buf = io.BytesIO()
    np.savez(buf, **model.state)  # type: ignore[arg-type]
    write_bytes_atomic(root / "weights.npz", buf.getvalue())
    write_json_atomic(
        root / "model.json",
        {
            "format": MODEL_FORMAT,
            "feature_set": model.feature_set,
            "n_features": model.n_features,
            "hidden": model.hidden,
            "parameters": {k: list(v.shape) for k, v in model.state.items()},
            "provenance": model.provenance,
        },
    )


def load_model(directory: str | Path) -> SavedModel:
    """Read a model directory written by :func:`save_model`, checking weights match manifest."""
    root = Path(directory)
    manifest = root / "model.json"
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelDirError(f"{manifest}: missing (is {root} a fedgaze model directory?)") from None
    except json.JSONDecodeError as err:
        raise ModelDirError(f"{manifest}: corrupt JSON ({err})") from None
    if meta.get("format") != MODEL_FORMAT:
        raise ModelDirError(f"{manifest}: unsupported format {meta.get('format')!r}")
    weights = root / "weights.npz"
    try:
        with np.load(weights, allow_pickle=False) as npz:
            state = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise ModelDirError(f"{weights}: missing") from None
    except Exception as err:
        raise ModelDirError(f"{weights}: corrupt ({err})") from None
    shapes = {k: list(v.shape) for k, v in state.items()}
    if shapes != meta["parameters"]:
        raise ModelDirError(f"{weights}: parameters do not match {manifest}")
    return SavedModel(
        state=state,
        feature_set=str(meta["feature_set"]),
        n_features=int(meta["n_features"]),
        hidden=int(meta["hidden"]),
        provenance=dict(meta.get("provenance", {})),
    )
