"""Features v1: vectorized extraction against a slow per-sample reference, and its invariants."""

from __future__ import annotations

import importlib.util
import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shared_data import IFLLM_ROOT

from fedgaze.data.schema import (
    MODALITIES,
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
from fedgaze.features.v1 import (
    GAP_CAP_S,
    SIDE_FEATURE_NAMES,
    featurize,
    featurize_for_scoring,
    side_features,
)

F = len(SIDE_FEATURE_NAMES)
COL = {name: i for i, name in enumerate(SIDE_FEATURE_NAMES)}
DATA_ROOT = IFLLM_ROOT


def samples(t_ms, side, char_index=None) -> Samples:
    """Samples with the given times, sides and carets; x, y and validate are filler."""
    n = len(t_ms)
    return Samples(
        t_ms=np.asarray(t_ms, dtype=np.float64),
        x=np.zeros(n),
        y=np.zeros(n),
        side=np.asarray(side, dtype=np.int8),
        char_index=np.full(n, -1) if char_index is None else np.asarray(char_index),
        validate=np.ones(n, dtype=np.int8),
    )


def query(
    qid: int = 1,
    left: str = "left answer",
    right: str | None = "the right answer\nhas two lines",
    preference: int | None = PREF_RIGHT,
    gaze: Samples | None = None,
    mouse: Samples | None = None,
    pairwise: bool = True,
) -> Query:
    """A query built by hand; missing traces are empty."""
    return Query(
        query_id=qid,
        task_id=1,
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


def swapped(q: Query) -> Query:
    """The same query with the two answers (texts, traces, preference) exchanged."""

    def flip(s: Samples) -> Samples:
        side = np.select([s.side == SIDE_LEFT, s.side == SIDE_RIGHT], [SIDE_RIGHT, SIDE_LEFT], 0)
        return Samples(s.t_ms, s.x, s.y, side, s.char_index, s.validate)

    pref = {PREF_LEFT: PREF_RIGHT, PREF_RIGHT: PREF_LEFT}.get(q.preference, q.preference)  # type: ignore[arg-type]
    return query(
        q.query_id, q.response_right or "", q.response_left, pref, flip(q.gaze), flip(q.mouse)
    )


def slow_side_features(q: Query) -> np.ndarray:
    """Reference implementation: one Python loop per sample, written from the module docstring."""
    rows = []
    for side, text in ((SIDE_LEFT, q.response_left), (SIDE_RIGHT, q.response_right or "")):
        row: list[float] = []
        for modality in MODALITIES:
            s: Samples = getattr(q, modality)
            n = len(s)
            if n == 0:
                row += [0.0] * 7
                continue
            seconds, count, pos = 0.0, 0, []
            for i in range(n):
                if s.side[i] != side:
                    continue
                count += 1
                if i + 1 < n:
                    gap = (s.t_ms[i + 1] - s.t_ms[i]) / 1000.0
                    if math.isfinite(gap):
                        seconds += min(max(gap, 0.0), GAP_CAP_S)
                if s.char_index[i] >= 0 and text:
                    pos.append(min(max(s.char_index[i] / len(text), 0.0), 1.0))
            mean = statistics.fmean(pos) if pos else 0.0
            var = statistics.pvariance(pos) if pos else 0.0
            completion = max(pos, default=0.0)
            row += [math.log1p(seconds), count / n, completion, mean, var, math.log1p(count), 1.0]
        lines = text.count("\n") + 1 if text else 0
        row += [math.log1p(len(text)), math.log1p(lines), math.log1p(len(text.split()))]
        rows.append(row)
    return np.array(rows)


@st.composite
def traces(draw: st.DrawFn, max_len: int = 12) -> Samples:
    n = draw(st.integers(0, 25))
    gaps = draw(
        st.lists(st.one_of(st.floats(-300, 3000), st.just(float("nan"))), min_size=n, max_size=n)
    )
    t = 1.7e12 + np.cumsum(np.asarray(gaps, dtype=np.float64)) if n else np.empty(0)
    side = draw(
        st.lists(st.sampled_from([SIDE_NONE, SIDE_LEFT, SIDE_RIGHT]), min_size=n, max_size=n)
    )
    caret = draw(st.lists(st.integers(-1, max_len + 5), min_size=n, max_size=n))
    return samples(t, side, caret)


texts = st.text(alphabet="ab \n.", max_size=12)


@settings(max_examples=150, deadline=None)
@given(gaze=traces(), mouse=traces(), left=texts, right=texts)
def test_vectorized_matches_slow_reference(gaze: Samples, mouse: Samples, left: str, right: str):
    q = query(left=left, right=right, gaze=gaze, mouse=mouse)
    fast = side_features(q)
    assert fast.shape == (2, F) and fast.dtype == np.float32
    assert np.isfinite(fast).all()
    np.testing.assert_allclose(fast, slow_side_features(q), rtol=1e-5, atol=1e-6)


def test_hand_computed_values():
    # Gaps: 0.1 s, 0.1 s, 2.0 s (capped to 1.0), 0.1 s, last sample adds nothing.
    gaze = samples([0, 100, 200, 2200, 2300], [1, 1, 2, 2, 0], [0, 5, 2, 8, -1])
    q = query(left="0123456789", right="abcd", gaze=gaze)
    f = side_features(q)
    g = {name: f[:, COL[f"gaze_{name}"]] for name in ("time_log1p", "share", "completion")}
    np.testing.assert_allclose(g["time_log1p"], np.log1p([0.2, 1.1]), rtol=1e-6)
    np.testing.assert_allclose(g["share"], [0.4, 0.4])
    np.testing.assert_allclose(g["completion"], [0.5, 1.0])  # 8 / 4 is clipped to 1
    np.testing.assert_allclose(f[:, COL["gaze_pos_mean"]], [0.25, 0.75])
    np.testing.assert_allclose(f[:, COL["gaze_pos_var"]], [0.0625, 0.0625])
    np.testing.assert_allclose(f[:, COL["gaze_count_log1p"]], np.log1p([2, 2]))
    np.testing.assert_array_equal(f[:, COL["gaze_present"]], [1, 1])
    np.testing.assert_array_equal(f[:, COL["mouse_present"]], [0, 0])


def test_names_are_unique_and_match_width():
    assert len(set(SIDE_FEATURE_NAMES)) == F
    assert side_features(query()).shape == (2, F)


def test_swapping_sides_swaps_rows():
    gaze = samples([0, 80, 160, 240, 320], [1, 2, 2, 0, 1], [3, 4, -1, -1, 9])
    mouse = samples([0, 80, 160, 240, 320], [2, 2, 2, 1, 0], [0, 1, 2, 3, -1])
    q = query(gaze=gaze, mouse=mouse)
    np.testing.assert_array_equal(side_features(swapped(q)), side_features(q)[::-1])
    fm, fm_swapped = featurize([q]), featurize([swapped(q)])
    np.testing.assert_array_equal(fm_swapped.X, fm.X[:, ::-1])
    np.testing.assert_array_equal(fm_swapped.y, 1 - fm.y)


def test_missing_traces_give_finite_vectors():
    for q in (
        query(),
        query(left="", right=""),
        query(right=None, pairwise=False),
        query(gaze=samples([0.0], [SIDE_NONE])),
        query(gaze=samples([np.nan, np.nan], [1, 2], [0, 0]), left=""),
    ):
        f = side_features(q)
        assert f.shape == (2, F) and np.isfinite(f).all()
    f = side_features(query())
    trace_cols = [i for name, i in COL.items() if not name.startswith("text_")]
    assert not f[:, trace_cols].any()
    assert (f[:, COL["text_chars_log1p"]] > 0).all()
    pointwise = side_features(query(right=None, pairwise=False))
    assert not pointwise[1].any()


def test_featurize_keeps_labelled_comparisons_only():
    qs = [
        query(1, preference=PREF_RIGHT),
        query(2, preference=PREF_TIE),
        query(3, preference=None),
        query(4, preference=PREF_LEFT),
        query(5, right=None, preference=1, pairwise=False),
    ]
    device = Device("d1", tuple(qs))
    fm = featurize(device.comparisons())
    assert fm.X.shape == (2, 2, F) and fm.X.dtype == np.float32
    assert fm.y.dtype == np.float32 and fm.query_ids.dtype == np.int64
    np.testing.assert_array_equal(fm.query_ids, [1, 4])
    np.testing.assert_array_equal(fm.y, [1, 0])
    assert len(featurize(qs)) == 2

    scoring = featurize_for_scoring(qs)
    np.testing.assert_array_equal(scoring.query_ids, [1, 2, 3, 4])
    np.testing.assert_array_equal(scoring.y, [1, np.nan, np.nan, 0])


def test_empty_input_gives_empty_matrix():
    for fm in (featurize([]), featurize_for_scoring([])):
        assert fm.X.shape == (0, 2, F) and fm.y.shape == (0,) and fm.query_ids.shape == (0,)


@pytest.mark.realdata
def test_real_data_features_are_finite():
    if importlib.util.find_spec("fedgaze.data.ifllm") is None or not DATA_ROOT.is_dir():
        pytest.skip("fedgaze.data.ifllm or the IFLLM data is not available")
    from fedgaze.data.ifllm import load_ifllm

    workers = sorted(p.name for p in (DATA_ROOT / "user_behavior").iterdir())[:3]
    dataset = load_ifllm(DATA_ROOT, workers=workers)
    queries = [q for d in dataset.devices for q in d.queries]
    fm = featurize_for_scoring(queries)
    assert len(fm) > 0 and np.isfinite(fm.X).all()
    assert fm.X[:, :, COL["gaze_present"]].any()
