"""Features v2: the phases and cross-modality families pinned on hand-built traces.

Expected values are worked out by hand in the comments next to each assertion.
"""

from __future__ import annotations

import statistics

import numpy as np

from fedgaze.data.schema import Samples
from fedgaze.features.cross import CROSS_NAMES, align, cross_features
from fedgaze.features.trace import prepare
from fedgaze.features.v2 import side_features
from hand_traces import COL, NAN, L, N, R, close, good_gaze, query, samples

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
    gaze = good_gaze(side=[L, R, N, L] * 5)
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
