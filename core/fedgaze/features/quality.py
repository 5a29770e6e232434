"""Quality of a query's gaze trace, and the on-device rule that decides whether it is usable.

WebGazer gaze is only as good as the webcam's view of the face and the calibration; a bad trace
is worse than none, because the model would read noise as attention. :func:`gaze_quality`
measures the trace, :func:`gaze_usable` applies a fixed rule (no fitting, so every device
decides alone and identically), and :func:`quality_features` exposes the measurements to the
model. When the rule says unusable, the feature set drops the gaze trace (every gaze-derived
feature becomes 0 and ``gaze_present`` 0, as if it were missing); these quality features stay.

The rule (each threshold set by looking at its distribution over IFLLM's 1,399 queries, not
at labels): gaze is unusable when

- it has fewer than ``MIN_SAMPLES`` samples (141 queries have none at all; 3 more have 1-9);
- its sampling rate is under ``MIN_RATE_HZ``: most gaps then exceed ``GAP_CAP_S`` and engaged
  time means nothing (2 queries; the median query runs at 12 Hz);
- the camera's face box was good (``validate == 1``) on less than ``MIN_VALIDATE_RATIO`` of the
  samples whose ``validate`` is known: the ratio is >= 0.95 on about 90% of the queries where it
  is known, with a thin tail down to 0 (27 queries under 0.5); unknown ``validate`` (older
  capture) never fails;
- less than ``MIN_ON_ANSWER_SHARE`` of the samples fall on the answers (44 queries). Below
  that the mouse is usually off the answers too, so a low share may be behaviour (not reading)
  rather than a bad tracker, which is why the cut is at 10% and not higher;
- the WebGazer calibration precision is known and under ``MIN_CALIBRATION``. IFLLM's task pages
  only let people through at 71% or more, so this never fires there; it guards other captures.

Together: 215 of 1,399 IFLLM queries (44 of the 638 labelled comparisons) lose their gaze; the
8 workers left without any usable gaze are those who have no gaze samples at all.

Features (query-level, on both rows): ``quality_validate_ratio`` (1.0 when unknown, matching the
rule's benefit of the doubt), ``quality_validate_known``, ``quality_gaze_on_share``,
``quality_calibration`` (precision as a fraction, 0 unknown), ``quality_calibration_known``,
``quality_gaze_rate_log1p`` (``log1p`` of Hz: samples per second of the gaze span) and
``quality_gaze_usable`` (the rule's verdict).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedgaze.data.schema import SIDE_NONE, Samples

__all__ = [
    "MIN_CALIBRATION",
    "MIN_ON_ANSWER_SHARE",
    "MIN_RATE_HZ",
    "MIN_SAMPLES",
    "MIN_VALIDATE_RATIO",
    "QUALITY_NAMES",
    "GazeQuality",
    "gaze_quality",
    "gaze_usable",
    "quality_features",
]

F64 = npt.NDArray[np.float64]

MIN_SAMPLES = 10
MIN_RATE_HZ = 1.0
MIN_VALIDATE_RATIO = 0.5
MIN_ON_ANSWER_SHARE = 0.10
MIN_CALIBRATION = 0.5

QUALITY_NAMES = (
    "quality_validate_ratio",
    "quality_validate_known",
    "quality_gaze_on_share",
    "quality_calibration",
    "quality_calibration_known",
    "quality_gaze_rate_log1p",
    "quality_gaze_usable",
)


@dataclass(frozen=True)
class GazeQuality:
    """Measurements of one query's gaze trace.

    ``validate_ratio`` and ``calibration`` (a fraction in [0, 1]) are None when unknown;
    ``rate_hz`` is ``(samples with a finite time - 1) / span`` (0 when the span is 0).
    """

    n_samples: int
    rate_hz: float
    validate_ratio: float | None
    on_answer_share: float
    calibration: float | None


def gaze_quality(gaze: Samples, calibration_percent: float | None = None) -> GazeQuality:
    """Measure one query's gaze samples; ``calibration_percent`` is WebGazer's precision (%)."""
    n = len(gaze)
    t = gaze.t_ms[np.isfinite(gaze.t_ms)]
    span_s = (float(t.max()) - float(t.min())) / 1000.0 if len(t) else 0.0
    rate = (len(t) - 1) / span_s if span_s > 0 else 0.0
    known = gaze.validate >= 0
    n_known = int(np.count_nonzero(known))
    ratio = float(np.count_nonzero(gaze.validate == 1)) / n_known if n_known else None
    on = float(np.count_nonzero(gaze.side != SIDE_NONE)) / n if n else 0.0
    return GazeQuality(
        n_samples=n,
        rate_hz=rate,
        validate_ratio=ratio,
        on_answer_share=on,
        calibration=_fraction(calibration_percent),
    )


def _fraction(percent: float | None) -> float | None:
    """A precision in percent as a fraction in (0, 1]; None when unknown, not finite or <= 0."""
    if percent is None or not math.isfinite(percent) or percent <= 0:
        return None
    return min(percent / 100.0, 1.0)


def gaze_usable(q: GazeQuality) -> bool:
    """Whether the gaze trace is good enough to use; the rule is in the module docstring."""
    return not (
        q.n_samples < MIN_SAMPLES
        or q.rate_hz < MIN_RATE_HZ
        or (q.validate_ratio is not None and q.validate_ratio < MIN_VALIDATE_RATIO)
        or q.on_answer_share < MIN_ON_ANSWER_SHARE
        or (q.calibration is not None and q.calibration < MIN_CALIBRATION)
    )


def quality_features(q: GazeQuality) -> F64:
    """The quality features, shape (len(QUALITY_NAMES),); the same for both sides."""
    return np.array(
        [
            1.0 if q.validate_ratio is None else q.validate_ratio,
            float(q.validate_ratio is not None),
            q.on_answer_share,
            0.0 if q.calibration is None else q.calibration,
            float(q.calibration is not None),
            math.log1p(q.rate_hz),
            float(gaze_usable(q)),
        ]
    )
