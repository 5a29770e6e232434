"""Features v2: each family pinned on hand-built traces, plus invariants and featurize semantics.

Expected values are worked out by hand in the comments next to each assertion.
"""

from __future__ import annotations

import importlib.util
import math
import statistics
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedgaze.data.schema import (
    PREF_LEFT,
    PREF_RIGHT,
    PREF_TIE,
    SIDE_LEFT,
    SIDE_NONE,
    SIDE_RIGHT,
    Device,
    Query,
    Samples,
)
from fedgaze.data.synthetic import generate_cohort
from fedgaze.features.cross import CROSS_NAMES, align, cross_features
from fedgaze.features.matrix import FeatureMatrix
from fedgaze.features.quality import (
    MIN_CALIBRATION,
    MIN_ON_ANSWER_SHARE,
    MIN_VALIDATE_RATIO,
    GazeQuality,
    gaze_quality,
    gaze_usable,
)
from fedgaze.features.reading import N_WINDOWS, REGRESSION_CHARS, reading_features
from fedgaze.features.text import TEXT_NAMES, text_features
from fedgaze.features.trace import GAP_CAP_S, prepare
from fedgaze.features.v2 import (
    FAMILIES,
    FEATURE_SET,
    SIDE_FEATURE_NAMES,
    columns,
    featurize,
    featurize_device,
    featurize_for_scoring,
    side_features,
)
from shared_data import IFLLM_ROOT

F = len(SIDE_FEATURE_NAMES)
COL = {name: i for i, name in enumerate(SIDE_FEATURE_NAMES)}
L, R, N = SIDE_LEFT, SIDE_RIGHT, SIDE_NONE
NAN = float("nan")


def samples(
    t_ms: Sequence[float],
    side: Sequence[int],
    char_index: Sequence[int] | None = None,
    x: Sequence[float] | None = None,
    y: Sequence[float] | None = None,
    validate: Sequence[int] | None = None,
) -> Samples:
    """Samples built by hand; x, y default to 0, carets to -1, validate to 1."""
    n = len(t_ms)
    return Samples(
        t_ms=np.asarray(t_ms, dtype=np.float64),
        x=np.zeros(n) if x is None else np.asarray(x, dtype=np.float64),
        y=np.zeros(n) if y is None else np.asarray(y, dtype=np.float64),
        side=np.asarray(side, dtype=np.int8),
        char_index=np.full(n, -1) if char_index is None else np.asarray(char_index),
        validate=np.ones(n, dtype=np.int8) if validate is None else np.asarray(validate),
    )


def query(
    qid: int = 1,
    left: str = "left answer",
    right: str | None = "the right answer\nhas two lines",
    preference: int | None = PREF_RIGHT,
    gaze: Samples | None = None,
    mouse: Samples | None = None,
    pairwise: bool = True,
    task_id: int = 1,
) -> Query:
    """A query built by hand; missing traces are empty."""
    return Query(
        query_id=qid,
        task_id=task_id,
        pairwise=pairwise,
        prompt="why?",
        response_left=left,
        response_right=right,
        preference=preference,
        likert_left=None,
        likert_right=None,
        shown_at_ms=0.0,
        gaze=gaze if gaze is not None else Samples.empty(),
        mouse=mouse if mouse is not None else Samples.empty(),
    )


def flip(s: Samples) -> Samples:
    """The same samples with left and right exchanged."""
    side = np.select([s.side == L, s.side == R], [R, L], N)
    return Samples(s.t_ms, s.x, s.y, side, s.char_index, s.validate)


def swapped(q: Query) -> Query:
    """The same query with the two answers (texts, traces, preference) exchanged."""
    pref = {PREF_LEFT: PREF_RIGHT, PREF_RIGHT: PREF_LEFT}.get(q.preference, q.preference)  # type: ignore[arg-type]
    return query(
        q.query_id,
        q.response_right or "",
        q.response_left,
        pref,
        flip(q.gaze),
        flip(q.mouse),
        task_id=q.task_id,
    )


def feats(f: np.ndarray, *names: str) -> dict[str, np.ndarray]:
    """Columns of a (2, F) block by name, each as a (2,) array (left, right)."""
    return {name: f[:, COL[name]] for name in names}


def close(actual: np.ndarray, expected: Sequence[float] | float) -> None:
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def _good_gaze(n: int = 20, step_ms: float = 100.0, **kw: Sequence[int]) -> Samples:
    t = [i * step_ms for i in range(n)]
    side = kw.get("side", [L if i % 2 == 0 else N for i in range(n)])
    validate = kw.get("validate", [1] * 15 + [0] * (n - 15))
    return samples(t, side, validate=validate)


# ---------------------------------------------------------------------------------------------
# families


def test_family_partition_is_complete_and_ordered():
    assert FEATURE_SET == "v2"
    assert tuple(FAMILIES) == (
        "text",
        "gaze_reading",
        "mouse_reading",
        "profile",
        "sides",
        "phases",
        "cross",
        "quality",
    )
    listed = [name for names in FAMILIES.values() for name in names]
    assert tuple(listed) == SIDE_FEATURE_NAMES  # every name in exactly one family, in order
    assert len(set(listed)) == len(listed) == F
    for family, names in FAMILIES.items():
        np.testing.assert_array_equal(columns([family]), [COL[n] for n in names])
    np.testing.assert_array_equal(columns(FAMILIES), np.arange(F))
    np.testing.assert_array_equal(
        columns(["quality", "text"]), [*range(len(TEXT_NAMES)), *range(F - 7, F)]
    )
    assert columns([]).shape == (0,)
    with pytest.raises(KeyError, match="unknown feature family"):
        columns(["nope"])
    assert all(name.startswith("gaze_") for name in FAMILIES["gaze_reading"])
    assert all(name.startswith("mouse_") for name in FAMILIES["mouse_reading"])


# ---------------------------------------------------------------------------------------------
# reading, sides, profile, on the five-sample trace of the brief. Five gaze samples are too few
# to be usable (MIN_SAMPLES), so the hand-built traces are given as mouse traces, which have no
# usability rule; gaze and mouse run through the same functions (see the next test).


FIVE = samples([0, 100, 200, 1700, 1800], [L, L, R, R, L], [0, 30, 5, 40, 2])
LEFT_100 = "a" * 100
RIGHT_50 = "b" * 50


def test_gaze_and_mouse_blocks_are_computed_alike():
    gaze = _good_gaze(side=[L, L, R, N, R] * 4)
    f = side_features(query(gaze=gaze, mouse=gaze))
    for g_name in SIDE_FEATURE_NAMES:
        if g_name.startswith("gaze_") and g_name.replace("gaze_", "mouse_", 1) in COL:
            m_name = g_name.replace("gaze_", "mouse_", 1)
            np.testing.assert_array_equal(f[:, COL[g_name]], f[:, COL[m_name]], g_name)
    assert f[0, COL["gaze_present"]] == 1


def test_reading_features_by_hand():
    f = side_features(query(left=LEFT_100, right=RIGHT_50, mouse=FIVE))
    # Gaps to the next sample: 0.1, 0.1, 1.5 -> capped 1.0, 0.1, last adds 0.
    # Left samples 0, 1, 4 -> 0.1 + 0.1 + 0 = 0.2 s; right samples 2, 3 -> 1.0 + 0.1 = 1.1 s.
    assert GAP_CAP_S == 1.0
    m = feats(f, "mouse_time_log1p", "mouse_time_ratio", "mouse_time_rel")
    close(m["mouse_time_log1p"], np.log1p([0.2, 1.1]))
    close(m["mouse_time_ratio"], [0.2 / 1.3, 1.1 / 1.3])  # total engaged 1.3 s, none off-panel
    close(m["mouse_time_rel"], [0.2 / 1.3, 1.1 / 1.3])
    # 3 of 5 samples left, 2 right.
    close(f[:, COL["mouse_share"]], [3 / 5, 2 / 5])
    close(f[:, COL["mouse_count_log1p"]], np.log1p([3, 2]))
    close(f[:, COL["mouse_count_rel"]], [3 / 5, 2 / 5])
    # Left carets 0, 30, 2 of 100 -> 0, .3, .02; right 5, 40 of 50 -> .1, .8.
    close(f[:, COL["mouse_completion"]], [0.3, 0.8])
    close(f[:, COL["mouse_completion_rel"]], [0.3 / 1.1, 0.8 / 1.1])
    close(f[:, COL["mouse_pos_mean"]], [0.32 / 3, 0.45])
    left_var = statistics.pvariance([0.0, 0.3, 0.02])  # (0 + .09 + .0004)/3 - (.32/3)^2
    close(f[:, COL["mouse_pos_var"]], [left_var, 0.35**2])
    # Visits: left [0, 1] and [4] -> 2; right [2, 3] -> 1.
    close(f[:, COL["mouse_entries_log1p"]], np.log1p([2, 1]))
    # Left carets in order 0, 30, 2: 30 -> 2 jumps back 28 > 20 -> 1 regression; right 5 -> 40.
    assert REGRESSION_CHARS == 20
    close(f[:, COL["mouse_regressions_log1p"]], np.log1p([1, 0]))
    close(f[:, COL["mouse_regression_rate"]], [1 / 3, 0])
    close(f[:, COL["mouse_present"]], [1, 1])
    assert not f[:, columns(["gaze_reading"])].any()  # no gaze at all
    # The module function gives the same block.
    block = reading_features(prepare(FIVE, np.array([100.0, 50.0]), 0.0))
    close(f[:, columns(["mouse_reading"])], block)


def test_time_ratio_counts_off_panel_time():
    # Gaps 0.5, 0.5, 0: left 0.5 s, off-panel 0.5 s, right 0 s (last sample).
    mouse = samples([0, 500, 1000], [L, N, R])
    f = side_features(query(mouse=mouse))
    close(f[:, COL["mouse_time_ratio"]], [0.5 / 1.0, 0.0])
    close(f[:, COL["mouse_time_rel"]], [1.0, 0.0])  # 0.5 / (0.5 + 0)
    close(f[:, COL["mouse_share"]], [1 / 3, 1 / 3])
    # No carets anywhere: completion 0 on both sides, its safe ratio 0.5.
    close(f[:, COL["mouse_completion_rel"]], [0.5, 0.5])


def test_regression_threshold_and_interleaving():
    # Left carets 100, 79 (back 21 > 20: a regression), 59 (back 20: not), and between them a
    # visit to the right answer, which does not break the left sequence.
    mouse = samples([0, 100, 200, 300], [L, R, L, L], [100, 3, 79, 59])
    f = side_features(query(left="a" * 200, right="b" * 10, mouse=mouse))
    close(f[:, COL["mouse_regressions_log1p"]], np.log1p([1, 0]))
    close(f[:, COL["mouse_regression_rate"]], [1 / 3, 0])
    close(f[:, COL["mouse_entries_log1p"]], np.log1p([2, 1]))  # left [0], [2, 3]; right [1]


def test_sides_by_hand():
    f = side_features(query(left=LEFT_100, right=RIGHT_50, mouse=FIVE))
    # On-panel sides L L R R L: first left, last left, 2 changes (L->R, R->L).
    close(f[:, COL["mouse_first_look"]], [1, 0])
    close(f[:, COL["mouse_last_look"]], [1, 0])
    close(f[:, COL["mouse_switches_log1p"]], np.log1p([2, 2]))
    # Off-panel samples are skipped: N R N N L R -> R L R: first right, last right, 2 changes.
    mouse = samples([0, 1, 2, 3, 4, 5], [N, R, N, N, L, R])
    f = side_features(query(mouse=mouse))
    close(f[:, COL["mouse_first_look"]], [0, 1])
    close(f[:, COL["mouse_last_look"]], [0, 1])
    close(f[:, COL["mouse_switches_log1p"]], np.log1p([2, 2]))
    assert not f[:, COL["gaze_first_look"]].any()


def test_window_profile_by_hand():
    f = side_features(query(left=LEFT_100, right=RIGHT_50, mouse=FIVE))
    profile = np.stack([f[:, COL[f"mouse_window{k}_share"]] for k in range(N_WINDOWS)], axis=1)
    # Span 0..1.8 s in 10 windows of 0.18 s: t = 0, .1 -> window 0 (both left); .2 -> window 1
    # (right); 1.7 -> 9.44 -> window 9 (right); 1.8 -> the last window (left).
    expected = np.zeros((2, N_WINDOWS))
    expected[0, 0] = 1.0
    expected[1, 1] = 1.0
    expected[:, 9] = [0.5, 0.5]
    close(profile, expected)
    # An off-panel sample counts in its window's total.
    mouse = samples([0, 50, 1000], [L, N, R])
    f = side_features(query(mouse=mouse))
    close(f[:, COL["mouse_window0_share"]], [0.5, 0])  # t = 0, .05 -> window 0: 1 of 2 left
    close(f[:, COL["mouse_window9_share"]], [0, 1])


# ---------------------------------------------------------------------------------------------
# phases


def _every(start_ms: int, stop_ms: int, step_ms: int = 500) -> list[float]:
    return [float(t) for t in range(start_ms, stop_ms + 1, step_ms)]


def test_phases_sustained_bout_then_composing_with_one_lookback():
    # Gaze every 0.5 s from 0 to 8 s (17 samples, usable): left until 3 s (a 3 s bout),
    # off-panel while typing, one look-back at the right answer at 6 and 6.5 s.
    t = _every(0, 8000)
    side = [L if ti <= 3000 else R if ti in (6000, 6500) else N for ti in t]
    f = side_features(query(gaze=samples(t, side)))
    assert f[0, COL["quality_gaze_usable"]] == 1
    # Bouts: [0, 3] (3 s >= 2 s, sustained) and [6, 6.5] -> reviewing 0..3 s, composing 3..8 s.
    close(f[:, COL["phase_review_log1p"]], np.log1p([3, 3]))
    close(f[:, COL["phase_compose_log1p"]], np.log1p([5, 5]))
    close(f[:, COL["phase_compose_share"]], [5 / 8, 5 / 8])
    # Left samples at 0..3 s: 7 gaps of 0.5 s = 3.5 s, all reviewing; right 6, 6.5 s: 1.0 s.
    close(f[:, COL["gaze_review_time_log1p"]], np.log1p([3.5, 0]))
    close(f[:, COL["gaze_compose_time_log1p"]], np.log1p([0, 1.0]))
    assert not f[:, COL["mouse_review_time_log1p"]].any()
    # One look-back, on the right, lasting 6.5 - 6 = 0.5 s.
    close(f[:, COL["lookback_count_log1p"]], np.log1p([0, 1]))
    close(f[:, COL["lookback_time_log1p"]], np.log1p([0, 0.5]))


def test_phases_combine_gaze_and_mouse():
    # Gaze on the left 0..1.5 s and mouse on the right 2..3 s: neither lasts 2 s alone, but on
    # the combined timeline the gap 1.5 -> 2 s is 0.5 s, so 0..3 s is one sustained bout.
    t = _every(0, 6000)
    gaze = samples(t, [L if ti <= 1500 else N for ti in t])  # 4 of 13 on the answers: usable
    mouse = samples(t, [R if 2000 <= ti <= 3000 else N for ti in t])
    f = side_features(query(gaze=gaze, mouse=mouse))
    close(f[:, COL["phase_review_log1p"]], np.log1p([3, 3]))
    close(f[:, COL["phase_compose_log1p"]], np.log1p([3, 3]))
    close(f[:, COL["lookback_count_log1p"]], [0, 0])
    # Gaze alone: its only bout lasts 1.5 s, not sustained, so everything (6 s) is reviewing.
    f = side_features(query(gaze=gaze))
    close(f[:, COL["phase_review_log1p"]], np.log1p([6, 6]))
    close(f[:, COL["phase_compose_log1p"]], [0, 0])
    close(f[:, COL["phase_compose_share"]], [0, 0])


def test_phases_gap_over_cap_breaks_a_bout():
    # Left at 0, 0.9, 1.8 s (gaps 0.9 s: one bout of 1.8 s), then 2.9 s after a 1.1 s gap (a new
    # bout). No bout reaches 2 s: everything is reviewing.
    mouse = samples([0, 900, 1800, 2900, 4000], [L, L, L, L, N])
    f = side_features(query(mouse=mouse))
    close(f[:, COL["phase_compose_log1p"]], [0, 0])
    # Left at 0, 0.9, 1.8, 2.7 s: one bout of 2.7 s, sustained; composing 2.7..4.0 s.
    mouse = samples([0, 900, 1800, 2700, 4000], [L, L, L, L, N])
    f = side_features(query(mouse=mouse))
    close(f[:, COL["phase_review_log1p"]], np.log1p([2.7, 2.7]))
    close(f[:, COL["phase_compose_log1p"]], np.log1p([1.3, 1.3]))
    close(f[:, COL["phase_compose_share"]], [1.3 / 4, 1.3 / 4])


# ---------------------------------------------------------------------------------------------
# cross-modality (module function on hand traces; too short for usable gaze in side_features)


def _cross(gaze: Samples, mouse: Samples) -> dict[str, np.ndarray]:
    lengths = np.array([10.0, 10.0])
    block = cross_features(prepare(gaze, lengths, 0.0), prepare(mouse, lengths, 0.0))
    return {name: block[:, i] for i, name in enumerate(CROSS_NAMES)}


def test_cross_modality_by_hand():
    gaze = samples(
        [0, 100, 200, 300, 400], [L, L, L, R, N], x=[0, 0, 0, 0, 0], y=[0, 10, 20, 30, 40]
    )
    mouse = samples(
        [10, 90, 210, 290, 1000],
        [L, L, N, R, R],
        x=[3, 6, NAN, 0, 0],
        y=[4, 18, NAN, 30, 0],
    )
    # Nearest mouse sample of each gaze sample: 0->10, 100->90, 200->210, 300->290 (all within
    # 100 ms); 400 -> 290 is 110 ms away: unpaired. Four pairs.
    lengths = np.array([10.0, 10.0])
    g, m = align(prepare(gaze, lengths, 0.0), prepare(mouse, lengths, 0.0))
    np.testing.assert_array_equal(g, [0, 1, 2, 3])
    np.testing.assert_array_equal(m, [0, 1, 2, 3])
    c = _cross(gaze, mouse)
    # Distances where both are finite: (0,0)-(3,4) = 5, (0,10)-(6,18) = 10, (0,30)-(0,30) = 0.
    close(c["cross_dist_log1p"], np.log1p([5, 5]))
    r = statistics.correlation([0, 10, 30], [4, 18, 30])  # gaze y vs mouse y, same pairs
    close(c["cross_y_corr"], [r, r])
    # Pairs both on a side: (L, L), (L, L) -> left 2 of 4; (R, R) -> right 1 of 4.
    close(c["cross_both_on_share"], [2 / 4, 1 / 4])
    # Gaze favors left (0.3 s vs 0.1 s); mouse favors right (0.08 + 0.12 = 0.2 s left vs
    # 0.71 s right): no agreement.
    close(c["cross_agree"], [0, 0])


def test_cross_agreement_and_undefined_correlation():
    # Both modalities longer on the right (0.1 s left vs 0.2 s right): they agree on the right.
    t = [0, 100, 200, 300]
    gaze = samples(t, [L, R, R, N], y=[5, 5, 5, 5])
    mouse = samples(t, [L, R, R, N], y=[1, 2, 3, 4])
    c = _cross(gaze, mouse)
    close(c["cross_agree"], [0, 1])
    close(c["cross_y_corr"], [0, 0])  # gaze y is constant: correlation undefined
    close(c["cross_dist_log1p"], np.log1p([2.5, 2.5]))  # mean of |5-1|, |5-2|, |5-3|, |5-4|


def test_cross_features_in_side_features():
    gaze = _good_gaze(side=[L, R, N, L] * 5)
    y = np.arange(20.0)
    gaze = samples(gaze.t_ms + 7, gaze.side, x=np.zeros(20), y=y)
    mouse = samples(gaze.t_ms - 7 + 30, [R] * 20, x=np.full(20, 3.0), y=y * 2 + 4)
    f = side_features(query(gaze=gaze, mouse=mouse))
    # Each gaze sample pairs with the mouse sample 23 ms later; y is linear -> correlation 1.
    close(f[:, COL["cross_y_corr"]], [1, 1])
    dist = np.hypot(3.0, y + 4).mean()
    close(f[:, COL["cross_dist_log1p"]], np.log1p([dist, dist]))
    close(f[:, COL["cross_both_on_share"]], [0, 5 / 20])  # gaze right 5 times, mouse always
    close(f[:, COL["cross_agree"]], [0, 0])  # gaze: left 0.9 s vs right 0.5 s; mouse: right


def test_align_uses_time_not_index():
    # Mouse stored out of time order and at different instants than gaze.
    gaze = prepare(samples([0, 100, 200], [N, N, N]), np.ones(2), 0.0)
    mouse = prepare(samples([205, 1, 500, 97], [N, N, N, N]), np.ones(2), 0.0)
    g, m = align(gaze, mouse)
    np.testing.assert_array_equal(g, [0, 1, 2])
    np.testing.assert_array_equal(m, [1, 3, 0])  # t = 1, 97, 205
    g, m = align(gaze, prepare(Samples.empty(), np.ones(2), 0.0))
    assert len(g) == len(m) == 0


# ---------------------------------------------------------------------------------------------
# quality and the usability rule


def test_quality_features_by_hand():
    f = side_features(query(gaze=_good_gaze()), calibration=80.0)
    q = feats(
        f,
        "quality_validate_ratio",
        "quality_validate_known",
        "quality_gaze_on_share",
        "quality_calibration",
        "quality_calibration_known",
        "quality_gaze_rate_log1p",
        "quality_gaze_usable",
    )
    close(q["quality_validate_ratio"], [0.75, 0.75])  # 15 of 20 good face boxes
    close(q["quality_validate_known"], [1, 1])
    close(q["quality_gaze_on_share"], [0.5, 0.5])  # every other sample on the left
    close(q["quality_calibration"], [0.8, 0.8])
    close(q["quality_calibration_known"], [1, 1])
    close(q["quality_gaze_rate_log1p"], np.log1p([10, 10]))  # 19 intervals over 1.9 s
    close(q["quality_gaze_usable"], [1, 1])
    assert f[0, COL["gaze_present"]] == 1

    # Unknown validate (older capture) and unknown calibration: 1.0 and 0, both flagged.
    f = side_features(query(gaze=_good_gaze(validate=[-1] * 20)))
    close(f[:, COL["quality_validate_ratio"]], [1, 1])
    close(f[:, COL["quality_validate_known"]], [0, 0])
    close(f[:, COL["quality_calibration"]], [0, 0])
    close(f[:, COL["quality_calibration_known"]], [0, 0])
    close(f[:, COL["quality_gaze_usable"]], [1, 1])


@pytest.mark.parametrize(
    ("gaze", "calibration", "why"),
    [
        (_good_gaze(validate=[1] * 9 + [0] * 11), None, "validate 9/20 = 0.45 < 0.5"),
        (_good_gaze(side=[L] + [N] * 19), None, "on answers 1/20 = 0.05 < 0.10"),
        (_good_gaze(), 40.0, "calibration 0.40 < 0.50"),
        (_good_gaze(n=9, validate=[1] * 9), None, "9 samples < 10"),
        (_good_gaze(step_ms=2000.0), None, "19 intervals over 38 s = 0.5 Hz < 1 Hz"),
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
    assert gaze_quality(_good_gaze(), float("nan")).calibration is None
    assert gaze_quality(_good_gaze(), 0.0).calibration is None
    assert gaze_quality(_good_gaze(), 150.0).calibration == 1.0
    empty = gaze_quality(Samples.empty(), None)
    assert (empty.n_samples, empty.rate_hz, empty.on_answer_share) == (0, 0.0, 0.0)
    assert empty.validate_ratio is None and not gaze_usable(empty)


# ---------------------------------------------------------------------------------------------
# text


def test_text_features_by_hand():
    text = (
        "# Title\n"  # heading
        "Some **bold** and `code` here.\n"  # prose line, 1 bold, 1 inline code
        "- a\n"  # list item
        "-b is not a list item\n"  # prose line (no space after the dash)
        "1. one\n"  # list item
        "  * nested\n"  # list item
        "```python\n"  # fence 1: the block's content is not counted below
        "# not a heading\n"
        "- not a list item\n"
        "x = `y` **z**\n"
        "```\n"  # fence 2: one code block
        "\n"
        "Para **x** **y**\n"  # prose line, 2 bold
        "## Sub"  # heading
    )
    got = dict(zip(TEXT_NAMES, np.expm1(text_features(text)), strict=True))
    expected = {
        "text_chars_log1p": len(text),
        "text_lines_log1p": 14,  # 13 newlines + 1
        "text_words_log1p": len(text.split()),
        "text_list_items_log1p": 3,
        "text_code_blocks_log1p": 1,
        "text_inline_code_log1p": 1,
        "text_headings_log1p": 2,
        "text_bold_log1p": 3,
        "text_paragraphs_log1p": 3,
    }
    assert got == pytest.approx(expected)
    assert not text_features("").any()
    # An unclosed fence still opens a block, and hides the rest from the prose counts.
    got = dict(zip(TEXT_NAMES, np.expm1(text_features("intro\n```\n# x\n- y")), strict=True))
    assert got["text_code_blocks_log1p"] == pytest.approx(1)
    assert got["text_headings_log1p"] == got["text_list_items_log1p"] == 0
    assert got["text_paragraphs_log1p"] == pytest.approx(1)
    f = side_features(query(left=text, right=""))
    close(f[:, COL["text_headings_log1p"]], np.log1p([2, 0]))


# ---------------------------------------------------------------------------------------------
# invariants


@st.composite
def traces(draw: st.DrawFn) -> Samples:
    n = draw(st.integers(0, 30))
    gaps = draw(
        st.lists(
            st.one_of(st.floats(-200, 2500), st.sampled_from([NAN, 0.0, 80.0])),
            min_size=n,
            max_size=n,
        )
    )
    t = 1.7e12 + np.cumsum(np.asarray(gaps, dtype=np.float64)) if n else np.empty(0)
    coords = st.one_of(st.floats(-500, 2500), st.just(NAN))
    return samples(
        t,
        draw(st.lists(st.sampled_from([N, L, R]), min_size=n, max_size=n)),
        draw(st.lists(st.integers(-1, 60), min_size=n, max_size=n)),
        draw(st.lists(coords, min_size=n, max_size=n)),
        draw(st.lists(coords, min_size=n, max_size=n)),
        draw(st.lists(st.sampled_from([-1, 0, 1, 1, 1]), min_size=n, max_size=n)),
    )


texts = st.text(alphabet="ab *#-`\n.1", max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    gaze=traces(),
    mouse=traces(),
    left=texts,
    right=texts,
    calibration=st.one_of(st.none(), st.floats(0, 100)),
)
def test_swapping_answers_swaps_rows_exactly(
    gaze: Samples, mouse: Samples, left: str, right: str, calibration: float | None
):
    q = query(left=left, right=right, gaze=gaze, mouse=mouse)
    f = side_features(q, calibration)
    assert f.shape == (2, F) and f.dtype == np.float32 and np.isfinite(f).all()
    np.testing.assert_array_equal(side_features(swapped(q), calibration), f[::-1])


def _dense_query(rng: np.random.Generator) -> Query:
    """A long random query with reading first and sparse glances later, so that every family
    (composing phase and look-backs included) is active."""
    n = int(rng.integers(80, 400))
    t = np.cumsum(rng.exponential(120.0, n))
    late = t > 0.7 * t[-1]

    def trace() -> Samples:
        side = np.where(
            late,
            rng.choice([N, L, R], n, p=[0.94, 0.03, 0.03]),
            rng.choice([N, L, R], n, p=[0.2, 0.4, 0.4]),
        )
        return samples(
            t,
            side,
            rng.integers(-1, 300, n),
            rng.normal(600, 300, n),
            rng.normal(400, 200, n),
            rng.choice([0, 1], n, p=[0.1, 0.9]),
        )

    return query(left="x" * 250, right="y" * 120, gaze=trace(), mouse=trace())


def test_swapping_dense_traces_swaps_rows_exactly():
    # The property test's traces are short; these make every family non-trivial.
    rng = np.random.default_rng(7)
    lookbacks = 0
    for _ in range(30):
        q = _dense_query(rng)
        f = side_features(q, 80.0)
        assert f[0, COL["quality_gaze_usable"]] == 1
        lookbacks += bool(f[:, COL["lookback_count_log1p"]].any())
        np.testing.assert_array_equal(side_features(swapped(q), 80.0), f[::-1])
    assert lookbacks >= 10


def test_query_level_features_are_equal_on_both_rows():
    f = side_features(_dense_query(np.random.default_rng(3)), 75.0)
    query_level = [
        *(n for n in SIDE_FEATURE_NAMES if n.endswith("_present") or n.endswith("switches_log1p")),
        "phase_review_log1p",
        "phase_compose_log1p",
        "phase_compose_share",
        "cross_dist_log1p",
        "cross_y_corr",
        *FAMILIES["quality"],
    ]
    for name in query_level:
        assert f[0, COL[name]] == f[1, COL[name]], name
    assert f[0, COL["phase_compose_log1p"]] > 0 and f[0, COL["cross_y_corr"]] != 0


def test_degenerate_inputs_give_finite_vectors():
    t12 = [100.0 * i for i in range(12)]
    for q in (
        query(),  # no samples
        query(left="", right=""),  # empty texts
        query(right=None, pairwise=False, gaze=_good_gaze(), mouse=FIVE),  # pointwise
        query(gaze=samples([0.0], [N])),  # one sample
        query(gaze=samples([NAN, NAN], [L, R], [0, 0]), left=""),  # no finite time
        query(gaze=samples([5.0] * 12, [L] * 12, [3] * 12)),  # zero span
        query(mouse=samples([5.0] * 12, [L] * 12, [3] * 12)),  # zero span, mouse
        query(gaze=samples(t12, [L] * 12, x=[NAN] * 12, y=[NAN] * 12)),  # unknown positions
        query(  # extreme and infinite positions on a usable gaze trace
            gaze=samples(t12, [L, R] * 6, x=[0] * 12, y=[1e308, -1e308, 1e308] * 4),
            mouse=samples(t12, [L] * 12, x=[np.inf] * 12, y=[1e308, 0, -1e308] * 4),
        ),
    ):
        for cal in (None, 0.0, 70.0, float("nan"), float("inf")):
            f = side_features(q, cal)
            assert f.shape == (2, F) and f.dtype == np.float32 and np.isfinite(f).all()
    f = side_features(query())
    assert not f[:, columns(["gaze_reading", "mouse_reading", "profile", "sides", "phases"])].any()
    assert not f[:, columns(["cross"])].any()
    only_left = samples(FIVE.t_ms, [L] * 5)
    pointwise = side_features(query(right=None, pairwise=False, gaze=_good_gaze(), mouse=only_left))
    assert not pointwise[1, columns(["text"])].any()
    for m in ("gaze", "mouse"):  # nothing on the missing right answer; presence is query-level
        assert pointwise[1, COL[f"{m}_time_log1p"]] == pointwise[1, COL[f"{m}_count_log1p"]] == 0
        assert pointwise[0, COL[f"{m}_time_log1p"]] > 0 and pointwise[1, COL[f"{m}_present"]] == 1


def test_synthetic_cohort_gives_finite_features():
    devices = generate_cohort(3, seed=1, comparisons_per_device=4)
    for device in devices:
        fm = featurize_device(device, scoring=True)
        assert np.isfinite(fm.X).all() and fm.X.shape[1:] == (2, F)


# ---------------------------------------------------------------------------------------------
# featurize semantics


def _cohort() -> list[Query]:
    return [
        query(1, preference=PREF_RIGHT, gaze=_good_gaze(), task_id=1),
        query(2, preference=PREF_TIE, task_id=1),
        query(3, preference=None, task_id=3),
        query(4, preference=PREF_LEFT, gaze=_good_gaze(), task_id=3),
        query(5, right=None, preference=1, pairwise=False, task_id=2),
    ]


def test_featurize_keeps_labelled_comparisons_only():
    qs = _cohort()
    fm = featurize(qs)
    assert isinstance(fm, FeatureMatrix)
    assert fm.X.shape == (2, 2, F) and fm.X.dtype == np.float32
    assert fm.y.dtype == np.float32 and fm.query_ids.dtype == np.int64
    np.testing.assert_array_equal(fm.query_ids, [1, 4])
    np.testing.assert_array_equal(fm.y, [1, 0])
    np.testing.assert_array_equal(fm.X[0], side_features(qs[0]))

    scoring = featurize_for_scoring(qs)
    np.testing.assert_array_equal(scoring.query_ids, [1, 2, 3, 4])
    np.testing.assert_array_equal(scoring.y, [1, np.nan, np.nan, 0])
    for fm in (featurize([]), featurize_for_scoring([])):
        assert fm.X.shape == (0, 2, F) and fm.y.shape == (0,) and fm.query_ids.shape == (0,)


def test_calibration_as_number_mapping_or_device():
    qs = _cohort()
    cal_col = COL["quality_calibration"]
    close(featurize(qs).X[:, 0, cal_col], [0, 0])
    close(featurize(qs, 90.0).X[:, 0, cal_col], [0.9, 0.9])
    close(featurize(qs, {1: 80.0}).X[:, 0, cal_col], [0.8, 0])  # task 3 unknown
    # A calibration under 50% makes the gaze of that task unusable.
    fm = featurize(qs, {1: 80.0, 3: 30.0})
    close(fm.X[:, 0, COL["gaze_present"]], [1, 0])

    device = Device("d1", tuple(qs), calibration={1: 80.0, 3: 30.0})
    for scoring in (False, True):
        got = featurize_device(device, scoring=scoring)
        want = (featurize_for_scoring if scoring else featurize)(qs, {1: 80.0, 3: 30.0})
        np.testing.assert_array_equal(got.X, want.X)
        np.testing.assert_array_equal(got.y, want.y)
        np.testing.assert_array_equal(got.query_ids, want.query_ids)


# ---------------------------------------------------------------------------------------------
# real data


@pytest.mark.realdata
def test_real_data_features_are_finite_and_mostly_usable():
    if not IFLLM_ROOT.is_dir() or importlib.util.find_spec("fedgaze.data.ifllm") is None:
        pytest.skip("the IFLLM data is not available")
    from fedgaze.data.ifllm import load_ifllm

    workers = sorted(p.name for p in (IFLLM_ROOT / "user_behavior").iterdir())[:3]
    dataset = load_ifllm(IFLLM_ROOT, workers=workers)
    blocks = [featurize_device(d, scoring=True) for d in dataset.devices]
    X = np.concatenate([b.X for b in blocks])
    assert len(X) > 0 and np.isfinite(X).all()
    usable = X[:, 0, COL["quality_gaze_usable"]]
    assert usable.any()
    np.testing.assert_array_equal(X[:, 0, COL["gaze_present"]], usable)
    assert math.isclose(float(X[:, :, COL["quality_calibration_known"]].min()), 1.0)
