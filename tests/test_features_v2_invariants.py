"""Features v2: invariants (swapping answers, query-level features, degenerate inputs),
featurize semantics, and the features of real data.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedgaze.data.schema import PREF_LEFT, PREF_RIGHT, PREF_TIE, Device, Query, Samples
from fedgaze.data.synthetic import generate_cohort
from fedgaze.features.matrix import FeatureMatrix
from fedgaze.features.v2 import (
    FAMILIES,
    SIDE_FEATURE_NAMES,
    columns,
    featurize,
    featurize_device,
    featurize_for_scoring,
    side_features,
)
from hand_traces import COL, FIVE, NAN, F, L, N, R, close, good_gaze, query, samples, swapped
from shared_data import IFLLM_ROOT

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


@pytest.mark.slow
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
        query(right=None, pairwise=False, gaze=good_gaze(), mouse=FIVE),  # pointwise
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
    pointwise = side_features(query(right=None, pairwise=False, gaze=good_gaze(), mouse=only_left))
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
        query(1, preference=PREF_RIGHT, gaze=good_gaze(), task_id=1),
        query(2, preference=PREF_TIE, task_id=1),
        query(3, preference=None, task_id=3),
        query(4, preference=PREF_LEFT, gaze=good_gaze(), task_id=3),
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
