"""A device's training and held-out rows for a round, for either model kind.

Behaviour model: the v2 features of the device's labelled comparisons, split in time (earlier
ones train, later ones are held out). Text reward model: the frozen encoder's features of the
same comparisons' texts (:mod:`fedgaze.text.features`), embedded here on the device; the
held-out rows are the same later labelled comparisons, and the training targets follow the
plan's ``text_labels``: the person's choice (``explicit``), the behaviour model's inference as a
soft target P(right preferred) (``implicit``, for every pairwise comparison the device holds
except the held-out ones), or the choice where given and the inference elsewhere (``both``).
The inference uses the behaviour model the server sent (a DP release) and the comparison's own
traces only, so changing one comparison still changes one training row, as DP-SGD assumes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from fedgaze.client.device.data import load_node_device
from fedgaze.client.device.store import MANIFEST
from fedgaze.data.schema import Device, Query
from fedgaze.data.split import chronological_split
from fedgaze.features.v2 import featurize
from fedgaze.federation.settings import NodeSettings, RoundPlan


@dataclass(frozen=True, eq=False)
class LocalRows:
    """Training rows (``train_y`` probabilities when ``soft``) and held-out rows (0 or 1)."""

    train_X: np.ndarray
    train_y: np.ndarray
    test_X: np.ndarray
    test_y: np.ndarray
    soft: bool = False


Stamp = tuple[int, int, int] | None


def _stamp(node: NodeSettings) -> Stamp:
    """Changes whenever the device's data may have: a store's manifest is replaced atomically on
    every save (new inode), so its inode, size and mtime identify one version of the store."""
    if node.data_format != "store":
        return None
    try:
        st = (Path(node.data) / MANIFEST).stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=4)
def _load(node: NodeSettings, stamp: Stamp) -> Device:
    return load_node_device(node)


def _device(node: NodeSettings) -> Device:
    """The device's data, loaded once per version of its store (a warm trainer keeps it)."""
    return _load(node, _stamp(node))


def _split(node: NodeSettings, holdout: float) -> tuple[list[Query], list[Query]]:
    return chronological_split(_device(node).comparisons(), holdout)


@lru_cache(maxsize=8)
def _behaviour_rows(node: NodeSettings, holdout: float, stamp: Stamp) -> LocalRows:
    train, test = _split(node, holdout)
    calibration = _device(node).calibration
    train_fm, test_fm = featurize(train, calibration), featurize(test, calibration)
    return LocalRows(train_fm.X, train_fm.y, test_fm.X, test_fm.y)


def behaviour_rows(node: NodeSettings, holdout: float) -> LocalRows:
    """The behaviour model's rows: v2 features of the earlier and later labelled comparisons
    (featurized once per version of the device's store)."""
    return _behaviour_rows(node, holdout, _stamp(node))


def _text_matrix(encoder: str, queries: Sequence[Query]) -> np.ndarray:
    from fedgaze.text.encoder import load_encoder
    from fedgaze.text.features import comparison_features, n_text_features

    if not queries:
        return np.zeros((0, 2, n_text_features(load_encoder(encoder).dim)), dtype=np.float32)
    return comparison_features(
        load_encoder(encoder),
        [q.prompt for q in queries],
        [q.response_left for q in queries],
        [q.response_right or "" for q in queries],
    )


def text_rows(
    node: NodeSettings,
    plan: RoundPlan,
    behaviour: Mapping[str, np.ndarray] | None,
    held_out_only: bool = False,
) -> LocalRows:
    """The text reward model's rows for ``plan`` (``behaviour``: the model that infers labels,
    needed unless ``plan.text_labels`` is ``explicit``); with ``held_out_only`` (an evaluate
    message) no training rows."""
    device = _device(node)
    train, test = _split(node, plan.holdout)
    if held_out_only:
        train = []
    unlabelled = [
        q
        for q in device.queries
        if q.pairwise and q.response_right is not None and not q.is_labelled_comparison
    ]
    rows = train if plan.text_labels == "explicit" or held_out_only else [*train, *unlabelled]
    explicit = np.array([q.label_right for q in train], dtype=np.float64)
    if plan.text_labels == "explicit" or held_out_only:
        y = explicit
    else:
        if behaviour is None:
            raise ValueError(
                f"text-labels {plan.text_labels!r} needs the behaviour model, and the message "
                "carries none"
            )
        from fedgaze.labels.release import implicit_p_right

        y = implicit_p_right(rows, device.calibration, behaviour)
        if plan.text_labels == "both":
            y[: len(train)] = explicit
    test_y = np.array([q.label_right for q in test], dtype=np.float64)
    return LocalRows(
        _text_matrix(plan.encoder, rows),
        y,
        _text_matrix(plan.encoder, test),
        test_y,
        soft=True,
    )
