"""The in-memory schema that every data source (IFLLM loader, synthetic cohort, capture) produces.

One :class:`Device` is one person's machine (one IFLLM worker). It holds that person's queries;
each query carries the gaze and mouse samples recorded while its answers were on screen, as
columnar numpy arrays so that feature extraction is vectorized.

Sides: ``SIDE_LEFT`` is response 1 (left panel in pairwise tasks, the only panel in pointwise
tasks), ``SIDE_RIGHT`` is response 2 (right panel). ``SIDE_NONE`` means the point was not on any
answer panel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

SIDE_NONE = 0
SIDE_LEFT = 1
SIDE_RIGHT = 2

PREF_TIE = 0
PREF_LEFT = 1
PREF_RIGHT = 2

MODALITIES = ("gaze", "mouse")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int32]
ByteArray = npt.NDArray[np.int8]


def _frozen(a: npt.ArrayLike, dtype: npt.DTypeLike) -> np.ndarray:
    out = np.array(a, dtype=dtype, copy=True).reshape(-1)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class Samples:
    """Columnar, time-ordered samples of one modality (gaze or mouse) on one query.

    All arrays have the same length. Arrays are copied and made read-only on construction.

    - ``t_ms``: float64 epoch milliseconds on the device clock (UTC).
    - ``x``, ``y``: float64 viewport CSS pixels; NaN when unknown (mouse before its first move).
      Gaze may be negative or off-screen (WebGazer is unbounded).
    - ``side``: int8, one of SIDE_NONE / SIDE_LEFT / SIDE_RIGHT.
    - ``char_index``: int32 caret offset into that side's response text, -1 when none.
    - ``validate``: int8, 1 when the webcam face box was good, 0 when not, -1 unknown
      (older files and mouse-only capture).
    """

    t_ms: FloatArray
    x: FloatArray
    y: FloatArray
    side: ByteArray
    char_index: IntArray
    validate: ByteArray

    def __post_init__(self) -> None:
        cols = {
            "t_ms": _frozen(self.t_ms, np.float64),
            "x": _frozen(self.x, np.float64),
            "y": _frozen(self.y, np.float64),
            "side": _frozen(self.side, np.int8),
            "char_index": _frozen(self.char_index, np.int32),
            "validate": _frozen(self.validate, np.int8),
        }
        n = len(cols["t_ms"])
        for name, col in cols.items():
            if len(col) != n:
                raise ValueError(f"Samples.{name} has {len(col)} rows, t_ms has {n}")
            object.__setattr__(self, name, col)
        bad = ~np.isin(cols["side"], (SIDE_NONE, SIDE_LEFT, SIDE_RIGHT))
        if bad.any():
            raise ValueError(f"Samples.side has invalid value {cols['side'][bad][0]}")

    def __len__(self) -> int:
        return len(self.t_ms)

    @classmethod
    def empty(cls) -> Samples:
        """Samples with no rows (a query whose traces are missing)."""
        return cls(
            t_ms=np.empty(0),
            x=np.empty(0),
            y=np.empty(0),
            side=np.empty(0, np.int8),
            char_index=np.empty(0, np.int32),
            validate=np.empty(0, np.int8),
        )


@dataclass(frozen=True)
class ServedIds:
    """The ids the answering service gave a query's prompt and answers (left, then right).

    They identify a comparison outside the device: the service that served the answers logs
    the same ids with their texts, so a released preference can be joined back to them
    (``fedgaze alignment export``). IFLLM replay uses ``query_ID`` and the side
    (:func:`ifllm_served_ids`).
    """

    prompt_id: str
    response_left_id: str
    response_right_id: str | None = None

    def __post_init__(self) -> None:
        for name in ("prompt_id", "response_left_id", "response_right_id"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"ServedIds.{name} must be a non-empty string, got {value!r}")


def ifllm_served_ids(query_id: int, pairwise: bool = True) -> ServedIds:
    """IFLLM's ids: the prompt is ``query_ID``, its answers ``query_ID/1`` and ``query_ID/2``."""
    return ServedIds(str(query_id), f"{query_id}/1", f"{query_id}/2" if pairwise else None)


@dataclass(frozen=True)
class Query:
    """One query a person typed and the answer(s) they were shown, with their traces.

    ``preference`` for pairwise queries: PREF_LEFT (1), PREF_RIGHT (2), PREF_TIE (0) or None.
    For pointwise queries it compares with the previous answer (1 better, 0 worse) and is not a
    pairwise label. ``shown_at_ms`` is the corrected UTC epoch time (ms) the answers appeared,
    None when the log's timestamp was unusable. ``served`` holds the answering service's ids of
    the prompt and answers (None when the source recorded none).
    """

    query_id: int
    task_id: int
    pairwise: bool
    prompt: str
    response_left: str
    response_right: str | None
    preference: int | None
    likert_left: float | None
    likert_right: float | None
    shown_at_ms: float | None
    gaze: Samples = field(default_factory=Samples.empty)
    mouse: Samples = field(default_factory=Samples.empty)
    served: ServedIds | None = None

    @property
    def is_labelled_comparison(self) -> bool:
        """True for a pairwise query whose person preferred one side (ties are not labels)."""
        return self.pairwise and self.preference in (PREF_LEFT, PREF_RIGHT)

    @property
    def label_right(self) -> int:
        """1 if the right answer was preferred, 0 if the left; only for labelled comparisons."""
        if not self.is_labelled_comparison:
            raise ValueError(f"query {self.query_id} is not a labelled comparison")
        return int(self.preference == PREF_RIGHT)


@dataclass(frozen=True)
class Device:
    """Everything one device (one person) holds: its queries in time order and quality signals.

    ``calibration`` maps task_id to WebGazer calibration precision (percent) when known.
    """

    device_id: str
    queries: tuple[Query, ...]
    calibration: Mapping[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "calibration", MappingProxyType(dict(self.calibration)))

    def comparisons(self) -> tuple[Query, ...]:
        """The labelled pairwise comparisons, in time order: one training row each."""
        return tuple(q for q in self.queries if q.is_labelled_comparison)


@dataclass(frozen=True)
class Problem:
    """A row the data source could not use: where it is and why. Reported, never fatal."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"
