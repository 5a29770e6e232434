"""Feature set v2: the full on-device implicit-feedback feature set of one pairwise comparison.

Every query becomes a (2, F) block: row 0 the left answer (response 1), row 1 the right answer.
Per-side features describe that answer; query-level features (the same for both answers) are
duplicated on both rows, so swapping the two answers exactly swaps the rows, which the
antisymmetric reward model relies on. Every value is a fixed transform of the query's own data
(no fitted, server-side normalization), finite, and roughly of order 1; a missing or unusable
trace gives zeros with its ``*_present`` indicator at 0.

Families (``FAMILIES``), in column order, each computed by one module:

- ``text`` (:mod:`fedgaze.features.text`): length and Markdown structure of the answer.
- ``gaze_reading``, ``mouse_reading`` (:mod:`fedgaze.features.reading`): engaged time, shares,
  completion, caret position, entries, regressions, safe ratios, presence.
- ``profile`` (:mod:`fedgaze.features.reading`): per modality, the share of each of
  ``N_WINDOWS`` time windows spent on the side.
- ``sides`` (:mod:`fedgaze.features.sides`): first look, last look, switches.
- ``phases`` (:mod:`fedgaze.features.phases`): reviewing vs composing the next prompt.
- ``cross`` (:mod:`fedgaze.features.cross`): gaze-mouse distance, correlation and agreement.
- ``quality`` (:mod:`fedgaze.features.quality`): camera, calibration and sampling quality of
  the gaze trace and the usability verdict; an unusable gaze trace is dropped before every
  other family is computed (treated as missing), so only these features see it.

Calibration (WebGazer precision, percent) is not part of a query; callers pass it as a number,
as a mapping from task id to precision (``Device.calibration``), or not at all (unknown).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from fedgaze.data.schema import Device, Query, Samples
from fedgaze.features.cross import CROSS_NAMES, cross_features
from fedgaze.features.matrix import (
    FeatureMatrix,
    build_matrix,
    scoring_queries,
    training_queries,
)
from fedgaze.features.phases import PHASE_NAMES, find_phases, phase_features
from fedgaze.features.quality import QUALITY_NAMES, gaze_quality, gaze_usable, quality_features
from fedgaze.features.reading import (
    profile_names,
    reading_features,
    reading_names,
    window_profile,
)
from fedgaze.features.sides import sides_features, sides_names
from fedgaze.features.text import TEXT_NAMES, text_features
from fedgaze.features.trace import prepare, query_span, time_origin_ms

__all__ = [
    "FAMILIES",
    "FEATURE_SET",
    "N_SIDE_FEATURES",
    "SIDE_FEATURE_NAMES",
    "Calibration",
    "FeatureMatrix",
    "columns",
    "featurize",
    "featurize_device",
    "featurize_for_scoring",
    "side_features",
]

FEATURE_SET = "v2"

Calibration = float | Mapping[int, float] | None
"""Calibration precision (percent): one value for all queries, per task id, or unknown."""

FAMILIES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "text": TEXT_NAMES,
        "gaze_reading": reading_names("gaze"),
        "mouse_reading": reading_names("mouse"),
        "profile": (*profile_names("gaze"), *profile_names("mouse")),
        "sides": (*sides_names("gaze"), *sides_names("mouse")),
        "phases": PHASE_NAMES,
        "cross": CROSS_NAMES,
        "quality": QUALITY_NAMES,
    }
)
"""Feature families, in column order: family name -> its feature names."""

SIDE_FEATURE_NAMES: tuple[str, ...] = tuple(name for names in FAMILIES.values() for name in names)
"""Names of the per-side features, in column order; ``F = len(SIDE_FEATURE_NAMES)``."""

N_SIDE_FEATURES = len(SIDE_FEATURE_NAMES)
_INDEX = {name: i for i, name in enumerate(SIDE_FEATURE_NAMES)}


def columns(families: Iterable[str]) -> npt.NDArray[np.intp]:
    """Column indices of the given families' features, in column order (for ablations).

    Raises KeyError naming an unknown family.
    """
    chosen: set[int] = set()
    for family in families:
        if family not in FAMILIES:
            raise KeyError(f"unknown feature family {family!r}; known: {sorted(FAMILIES)}")
        chosen.update(_INDEX[name] for name in FAMILIES[family])
    return np.array(sorted(chosen), dtype=np.intp)


def side_features(query: Query, calibration: float | None = None) -> np.ndarray:
    """Feature rows of one query, shape (2, F) float32: row 0 the left answer, row 1 the right.

    ``calibration`` is the WebGazer precision (percent) of the query's task, None when unknown.
    A pointwise query (no right answer) gets a right row with no text or reading. Always finite.
    """
    texts = (query.response_left, query.response_right or "")
    lengths = np.array([len(t) for t in texts], dtype=np.float64)
    quality = gaze_quality(query.gaze, calibration)
    gaze_samples = query.gaze if gaze_usable(quality) else Samples.empty()
    with np.errstate(all="ignore"):
        origin = time_origin_ms(gaze_samples, query.mouse)
        gaze = prepare(gaze_samples, lengths, origin)
        mouse = prepare(query.mouse, lengths, origin)
        start, end = query_span(gaze, mouse)
        blocks = [
            np.stack([text_features(t) for t in texts]),
            reading_features(gaze),
            reading_features(mouse),
            window_profile(gaze, start, end),
            window_profile(mouse, start, end),
            sides_features(gaze),
            sides_features(mouse),
            phase_features(gaze, mouse, find_phases(gaze, mouse, start, end)),
            cross_features(gaze, mouse),
            np.broadcast_to(quality_features(quality), (2, len(QUALITY_NAMES))),
        ]
        out = np.concatenate(blocks, axis=1)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def _calibration_of(query: Query, calibration: Calibration) -> float | None:
    if calibration is None or isinstance(calibration, int | float):
        return None if calibration is None else float(calibration)
    return calibration.get(query.task_id)


def _matrix(queries: Iterable[Query], calibration: Calibration) -> FeatureMatrix:
    return build_matrix(
        queries, lambda q: side_features(q, _calibration_of(q, calibration)), N_SIDE_FEATURES
    )


def featurize(queries: Sequence[Query], calibration: Calibration = None) -> FeatureMatrix:
    """Training matrix: one row per labelled comparison (left or right preferred; no ties)."""
    return _matrix(training_queries(queries), calibration)


def featurize_for_scoring(
    queries: Sequence[Query], calibration: Calibration = None
) -> FeatureMatrix:
    """Scoring matrix: every pairwise query with a right answer; ``y`` is NaN when unlabelled."""
    return _matrix(scoring_queries(queries), calibration)


def featurize_device(device: Device, *, scoring: bool = False) -> FeatureMatrix:
    """The device's training (or, with ``scoring``, scoring) matrix, using its calibration."""
    chosen = featurize_for_scoring if scoring else featurize
    return chosen(device.queries, device.calibration)
