"""The text reward model's directory: safetensors weights plus a ``config.json`` to trust them.

A text model directory holds two files:

- ``model-<sha256 prefix>.safetensors``: the parameters (``score.*``, float32), named by the
  first 16 hex digits of the file's SHA-256;
- ``config.json``: format version, ``kind: "text"``, the feature set, ``n_features`` and
  ``hidden``, the frozen encoder it was trained with (``spec``, ``name``, ``version``,
  ``dim``), every parameter's name and shape, the weights file's name and full SHA-256, and
  ``provenance`` (how it was trained: central or federated, on what, with which labels, at which
  epsilon and delta; see :mod:`fedgaze.local.train_text` and the server's checkpoints).

Writes are crash-safe: the weights go under their content-addressed name first (synced, atomic
rename), then ``config.json`` is replaced atomically, and only then are older weights files
removed. A crash leaves the old config with its old weights, or the new config with the new
ones. Loading checks the SHA-256 and every parameter's name and shape against the config, and
that the architecture is the text reward model's for that encoder width.

No torch here (the ServerApp writes these directories and must not load the training stack).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError

from fedgaze.atomic import write_bytes_atomic, write_json_atomic
from fedgaze.text.encoder import TextEncoder
from fedgaze.text.features import TEXT_FEATURE_SET, n_text_features

TEXT_MODEL_FORMAT = 1
CONFIG = "config.json"
WEIGHTS_PREFIX = "model-"
WEIGHTS_SUFFIX = ".safetensors"
BEHAVIOUR_MANIFEST = "model.json"
"""The behaviour model's manifest (:mod:`fedgaze.model.store`): its directory is not ours."""


class TextModelDirError(ValueError):
    """A text model directory is missing, corrupt or inconsistent; the message names the file."""


@dataclass(frozen=True)
class EncoderInfo:
    """Which frozen encoder a text model was trained with: how to load it (``spec``) and what
    it must be (``name``, ``version``, ``dim``)."""

    spec: str
    name: str
    version: str
    dim: int


def encoder_info(encoder: TextEncoder, spec: str) -> EncoderInfo:
    """The record of ``encoder``, loaded from ``spec``."""
    return EncoderInfo(spec=spec, name=encoder.name, version=encoder.version, dim=int(encoder.dim))


@dataclass(frozen=True)
class SavedTextModel:
    """A text reward model as stored on disk: weights, encoder, architecture and provenance."""

    state: dict[str, np.ndarray]
    encoder: EncoderInfo
    hidden: int
    n_features: int
    provenance: dict[str, Any]


def text_parameter_shapes(n_features: int, hidden: int) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter of a ``TextRewardModel(n_features, hidden)``, in
    ``state_dict`` order (``hidden=0``: the linear model)."""
    if n_features < 1 or hidden < 0:
        raise ValueError(f"need n_features >= 1 and hidden >= 0, got {n_features} and {hidden}")
    if hidden == 0:
        return {"score.0.weight": (1, n_features), "score.0.bias": (1,)}
    return {
        "score.0.weight": (hidden, n_features),
        "score.0.bias": (hidden,),
        "score.2.weight": (1, hidden),
        "score.2.bias": (1,),
    }


def _shape_problems(
    given: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]]
) -> str | None:
    """What differs between two name -> shape maps, or None when they agree."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if missing or unexpected:
        return f"missing parameters {missing}, unexpected {unexpected}"
    bad = [
        f"{k}: {tuple(given[k])} != {tuple(expected[k])}"
        for k in expected
        if tuple(given[k]) != tuple(expected[k])
    ]
    return f"shape mismatch ({', '.join(bad)})" if bad else None


def _checked_state(
    state: Mapping[str, np.ndarray], n_features: int, hidden: int
) -> dict[str, np.ndarray]:
    """``state`` as contiguous float32 arrays in parameter order; ValueError when it is not a
    finite text model of this architecture."""
    expected = text_parameter_shapes(n_features, hidden)
    problem = _shape_problems({k: tuple(np.shape(v)) for k, v in state.items()}, expected)
    if problem:
        raise ValueError(
            f"not the state of a text reward model with {n_features} features and hidden "
            f"{hidden}: {problem}"
        )
    arrays = {k: np.ascontiguousarray(state[k], dtype=np.float32) for k in expected}
    for name, arr in arrays.items():
        if not np.isfinite(arr).all():
            raise ValueError(f"parameter {name} has non-finite values")
    return arrays


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _plain_json(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """``provenance`` as plain JSON values (numpy scalars and paths converted)."""
    try:
        text = json.dumps(dict(provenance), allow_nan=False, default=_jsonable)
    except (TypeError, ValueError) as err:
        raise ValueError(f"provenance cannot be stored as JSON: {err}") from None
    plain: dict[str, Any] = json.loads(text)
    return plain


def _ours(name: str) -> bool:
    """A file a text model directory may hold: its config, weights, or a temporary write."""
    return (
        name == CONFIG
        or (name.startswith(WEIGHTS_PREFIX) and name.endswith(WEIGHTS_SUFFIX))
        or (name.startswith(".") and name.endswith(".tmp"))
    )


def _check_target(root: Path) -> None:
    """Refuse to write into a directory that holds anything but a text model."""
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root} exists and is not a directory; not writing a model there")
    if not root.is_dir():
        return
    foreign = sorted(p.name for p in root.iterdir() if not _ours(p.name))
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise ValueError(
            f"{root} holds files that are not a text model's ({shown}); not writing a model there"
        )


def save_text_model(
    directory: str | Path,
    state: Mapping[str, np.ndarray],
    *,
    encoder: EncoderInfo,
    hidden: int,
    provenance: dict[str, Any],
) -> None:
    """Write a text reward model into ``directory`` (created), crash-safely.

    ``state`` must be a ``TextRewardModel``'s (``score.*``) for ``encoder.dim``'s feature width
    and ``hidden``, with finite values; ``provenance`` must be JSON (numpy scalars and paths
    are converted). A directory holding other files than a text model's is refused.
    """
    root = Path(directory)
    n_features = n_text_features(encoder.dim)
    arrays = _checked_state(state, n_features, hidden)
    plain = _plain_json(provenance)
    _check_target(root)
    blob = safetensors.numpy.save(arrays, metadata={"fedgaze": "text-reward-model"})
    digest = hashlib.sha256(blob).hexdigest()
    name = f"{WEIGHTS_PREFIX}{digest[:16]}{WEIGHTS_SUFFIX}"
    config = {
        "format": TEXT_MODEL_FORMAT,
        "kind": "text",
        "feature_set": TEXT_FEATURE_SET,
        "n_features": n_features,
        "hidden": hidden,
        "encoder": {
            "spec": encoder.spec,
            "name": encoder.name,
            "version": encoder.version,
            "dim": encoder.dim,
        },
        "parameters": {k: list(v.shape) for k, v in arrays.items()},
        "weights": {"file": name, "sha256": digest, "dtype": "float32"},
        "provenance": plain,
    }
    write_bytes_atomic(root / name, blob)
    write_json_atomic(root / CONFIG, config)
    for old in root.glob(f"{WEIGHTS_PREFIX}*{WEIGHTS_SUFFIX}"):
        if old.name != name:
            old.unlink(missing_ok=True)


class _Config:
    """Typed access to a parsed ``config.json``; every error names the file and the field."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    def error(self, field: str, rule: str, value: Any) -> TextModelDirError:
        return TextModelDirError(f"{self.path}: field {field!r} {rule}, got {value!r}")

    def get(self, field: str) -> Any:
        node: Any = self.data
        for part in field.split("."):
            if not isinstance(node, dict) or part not in node:
                raise TextModelDirError(f"{self.path}: missing field {field!r}")
            node = node[part]
        return node

    def string(self, field: str) -> str:
        value = self.get(field)
        if not isinstance(value, str) or not value:
            raise self.error(field, "must be a non-empty string", value)
        return value

    def integer(self, field: str, minimum: int) -> int:
        value = self.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(field, f"must be an integer >= {minimum}", value)
        return value

    def shapes(self, field: str) -> dict[str, tuple[int, ...]]:
        value = self.get(field)
        ok = isinstance(value, dict) and all(
            isinstance(s, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in s)
            for s in value.values()
        )
        if not ok:
            raise self.error(field, "must map parameter names to lists of integers", value)
        return {str(k): tuple(s) for k, s in value.items()}


def _read_config(root: Path) -> _Config:
    path = root / CONFIG
    if not root.is_dir():
        raise TextModelDirError(f"{root}: no such model directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        hint = (
            f"{root / BEHAVIOUR_MANIFEST} is a behaviour model's manifest, not a text model"
            if (root / BEHAVIOUR_MANIFEST).is_file()
            else f"is {root} a fedgaze text model directory?"
        )
        raise TextModelDirError(f"{path}: missing ({hint})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TextModelDirError(f"{path}: corrupt JSON ({err})") from None
    except OSError as err:
        raise TextModelDirError(f"{path}: cannot read ({err.strerror or err})") from None
    if not isinstance(data, dict):
        raise TextModelDirError(f"{path}: expected a JSON object")
    return _Config(path, data)


def _read_weights(root: Path, cfg: _Config) -> tuple[Path, dict[str, np.ndarray]]:
    """The weights file named by ``cfg``, checked against its SHA-256, decoded."""
    name = cfg.string("weights.file")
    digest = cfg.string("weights.sha256")
    if Path(name).name != name or not (
        name.startswith(WEIGHTS_PREFIX) and name.endswith(WEIGHTS_SUFFIX)
    ):
        raise cfg.error("weights.file", "must be a weights file name in the directory", name)
    path = root / name
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise TextModelDirError(f"{path}: missing (named by {cfg.path})") from None
    except OSError as err:
        raise TextModelDirError(f"{path}: cannot read ({err.strerror or err})") from None
    if hashlib.sha256(blob).hexdigest() != digest:
        raise TextModelDirError(
            f"{path}: content does not match the SHA-256 in {cfg.path} (altered or corrupt)"
        )
    try:
        return path, safetensors.numpy.load(blob)
    except SafetensorError as err:
        raise TextModelDirError(f"{path}: corrupt safetensors file ({err})") from None


def load_text_model(directory: str | Path) -> SavedTextModel:
    """Read a text model directory written by :func:`save_text_model`.

    Raises :class:`TextModelDirError` naming the file when the directory or its config is
    missing or corrupt, the weights are missing, altered (SHA-256) or corrupt, or a parameter's
    name or shape differs from the config or from the text model's architecture.
    """
    root = Path(directory)
    cfg = _read_config(root)
    fmt = cfg.get("format")
    if fmt != TEXT_MODEL_FORMAT:
        raise cfg.error("format", f"must be {TEXT_MODEL_FORMAT}", fmt)
    if cfg.get("kind") != "text":
        raise cfg.error("kind", "must be 'text'", cfg.get("kind"))
    if cfg.get("feature_set") != TEXT_FEATURE_SET:
        raise cfg.error("feature_set", f"must be {TEXT_FEATURE_SET!r}", cfg.get("feature_set"))
    encoder = EncoderInfo(
        spec=cfg.string("encoder.spec"),
        name=cfg.string("encoder.name"),
        version=cfg.string("encoder.version"),
        dim=cfg.integer("encoder.dim", 1),
    )
    n_features = cfg.integer("n_features", 1)
    if n_features != n_text_features(encoder.dim):
        raise cfg.error(
            "n_features",
            f"must be {n_text_features(encoder.dim)} for dim {encoder.dim}",
            n_features,
        )
    hidden = cfg.integer("hidden", 0)
    declared = cfg.shapes("parameters")
    problem = _shape_problems(declared, text_parameter_shapes(n_features, hidden))
    if problem:
        raise TextModelDirError(f"{cfg.path}: 'parameters' are not the text model's: {problem}")
    provenance = cfg.get("provenance")
    if not isinstance(provenance, dict):
        raise cfg.error("provenance", "must be an object", provenance)
    path, arrays = _read_weights(root, cfg)
    problem = _shape_problems({k: tuple(v.shape) for k, v in arrays.items()}, declared)
    if problem:
        raise TextModelDirError(f"{path}: parameters do not match {cfg.path}: {problem}")
    state = {k: arrays[k] for k in declared}
    for name, arr in state.items():
        if arr.dtype != np.float32 or not np.isfinite(arr).all():
            raise TextModelDirError(f"{path}: parameter {name} is not finite float32")
    return SavedTextModel(
        state=state, encoder=encoder, hidden=hidden, n_features=n_features, provenance=provenance
    )
