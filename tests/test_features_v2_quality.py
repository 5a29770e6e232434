"""Features v2: the gaze quality features and the usability rule, on hand-built traces.

Expected values are worked out by hand in the comments next to each assertion.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedgaze.data.schema import Samples
from fedgaze.features.quality import (
    MIN_CALIBRATION,
    MIN_ON_ANSWER_SHARE,
    MIN_VALIDATE_RATIO,
    QUALITY_NAMES,
    GazeQuality,
    gaze_quality,
    gaze_usable,
)
from fedgaze.features.v2 import SIDE_FEATURE_NAMES, columns, side_features
from hand_traces import COL, L, N, R, close, feats, good_gaze, query, samples

# ---------------------------------------------------------------------------------------------
# quality and the usability rule


def test_quality_features_by_hand():
    f = side_features(query(gaze=good_gaze()), calibration=80.0)
    q = feats(f, *QUALITY_NAMES)
    close(q["quality_validate_ratio"], [0.75, 0.75])  # 15 of 20 good face boxes
    close(q["quality_validate_known"], [1, 1])
    close(q["quality_gaze_on_share"], [0.5, 0.5])  # every other sample on the left
    close(q["quality_calibration"], [0.8, 0.8])
    close(q["quality_calibration_known"], [1, 1])
    close(q["quality_gaze_rate_log1p"], np.log1p([10, 10]))  # 19 intervals over 1.9 s
    close(q["quality_gaze_usable"], [1, 1])
    assert f[0, COL["gaze_present"]] == 1

    # Unknown validate (older capture) and unknown calibration: 1.0 and 0, both flagged.
    f = side_features(query(gaze=good_gaze(validate=[-1] * 20)))
    close(f[:, COL["quality_validate_ratio"]], [1, 1])
    close(f[:, COL["quality_validate_known"]], [0, 0])
    close(f[:, COL["quality_calibration"]], [0, 0])
    close(f[:, COL["quality_calibration_known"]], [0, 0])
    close(f[:, COL["quality_gaze_usable"]], [1, 1])


@pytest.mark.parametrize(
    ("gaze", "calibration", "why"),
    [
        (good_gaze(validate=[1] * 9 + [0] * 11), None, "validate 9/20 = 0.45 < 0.5"),
        (good_gaze(side=[L] + [N] * 19), None, "on answers 1/20 = 0.05 < 0.10"),
        (good_gaze(), 40.0, "calibration 0.40 < 0.50"),
        (good_gaze(n=9, validate=[1] * 9), None, "9 samples < 10"),
        (good_gaze(step_ms=2000.0), None, "19 intervals over 38 s = 0.5 Hz < 1 Hz"),
    ],
)
def test_unusable_gaze_is_dropped_but_quality_stays(
    gaze: Samples, calibration: float | None, why: str
):
    mouse = samples(gaze.t_ms, [R] * len(gaze))
    f = side_features(query(gaze=gaze, mouse=mouse), calibration=calibration)
    assert f[0, COL["quality_gaze_usable"]] == 0, why
    gaze_cols = [
        *columns(["gaze_reading"]),
        *(COL[n] for n in SIDE_FEATURE_NAMES if n.startswith("gaze_")),
        *columns(["cross"]),
    ]
    assert not f[:, gaze_cols].any(), why  # gaze_present is 0 as well
    # The rest is computed as if the query had no gaze at all, quality features aside.
    without = side_features(query(mouse=mouse), calibration=calibration)
    others = [i for n, i in COL.items() if not n.startswith("quality_")]
    np.testing.assert_array_equal(f[:, others], without[:, others])
    assert f[0, COL["quality_gaze_on_share"]] == pytest.approx(np.mean(gaze.side != N), rel=1e-6)


def test_gaze_usable_rule_boundaries():
    ok = GazeQuality(
        n_samples=10, rate_hz=1.0, validate_ratio=0.5, on_answer_share=0.1, calibration=0.5
    )
    assert gaze_usable(ok)  # every threshold is inclusive
    assert (MIN_VALIDATE_RATIO, MIN_ON_ANSWER_SHARE, MIN_CALIBRATION) == (0.5, 0.1, 0.5)
    assert gaze_usable(GazeQuality(10, 1.0, None, 0.1, None))  # unknowns never fail
    assert not gaze_usable(GazeQuality(9, 1.0, 0.5, 0.1, 0.5))
    assert not gaze_usable(GazeQuality(10, 0.99, 0.5, 0.1, 0.5))
    assert not gaze_usable(GazeQuality(10, 1.0, 0.49, 0.1, 0.5))
    assert not gaze_usable(GazeQuality(10, 1.0, 0.5, 0.09, 0.5))
    assert not gaze_usable(GazeQuality(10, 1.0, 0.5, 0.1, 0.49))
    assert gaze_quality(good_gaze(), float("nan")).calibration is None
    assert gaze_quality(good_gaze(), 0.0).calibration is None
    assert gaze_quality(good_gaze(), 150.0).calibration == 1.0
    empty = gaze_quality(Samples.empty(), None)
    assert (empty.n_samples, empty.rate_hz, empty.on_answer_share) == (0, 0.0, 0.0)
    assert empty.validate_ratio is None and not gaze_usable(empty)
