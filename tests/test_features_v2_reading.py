"""Features v2: the family partition, and the reading, sides and profile blocks pinned on
hand-built traces.

Expected values are worked out by hand in the comments next to each assertion.
"""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from fedgaze.features.reading import N_WINDOWS, REGRESSION_CHARS, reading_features
from fedgaze.features.text import TEXT_NAMES
from fedgaze.features.trace import GAP_CAP_S, prepare
from fedgaze.features.v2 import FAMILIES, FEATURE_SET, SIDE_FEATURE_NAMES, columns, side_features
from hand_traces import COL, FIVE, F, L, N, R, close, feats, good_gaze, query, samples

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


LEFT_100 = "a" * 100
RIGHT_50 = "b" * 50


def test_gaze_and_mouse_blocks_are_computed_alike():
    gaze = good_gaze(side=[L, L, R, N, R] * 4)
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
