"""Tests of the synthetic cohort (fedgaze.data.synthetic).

The real-data test compares the synthetic marginals with IFLLM by two-sample KS statistics.
Thresholds: over 8 seeds of a 200-device cohort against all IFLLM workers (2026-11-27 params),
the largest KS seen per marginal, plus about 50% margin (rounded up), so that a re-estimation or a
loader change that keeps the fit as good still passes while a real regression (e.g. a marginal
drawn from the wrong table, typically KS > 0.3) fails. Measured maxima in parentheses.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from fedgaze.data.schema import (
    PREF_LEFT,
    PREF_RIGHT,
    PREF_TIE,
    SIDE_LEFT,
    SIDE_NONE,
    SIDE_RIGHT,
    Device,
)
from fedgaze.data.synthetic import (
    MARGINALS,
    SyntheticParams,
    compare_marginals,
    generate_cohort,
    label_right_share,
    load_default_params,
    query_rows,
)
from shared_data import IFLLM_ROOT

#: KS thresholds per marginal (measured max over 8 seeds in the comment).
KS_MAX = {
    "sampling_interval_ms": 0.13,  # 0.084 (device-weighted: 100 quantiles per device)
    "query_samples": 0.11,  # 0.071
    "query_duration_s": 0.08,  # 0.047
    "gaze_on_answer_share": 0.16,  # 0.105 (heavy devices' random effects dominate)
    "reading_completion": 0.07,  # 0.042
    "response_chars": 0.06,  # 0.034
    "comparisons_per_device": 0.22,  # 0.148 (only 73 real devices)
}
#: Label balance (share of right preferred) within this many points of IFLLM's (max seen 0.043).
LABEL_SHARE_TOL = 0.06
N_SYNTH = 200


@pytest.fixture(scope="module")
def cohort() -> tuple[Device, ...]:
    return generate_cohort(12, seed=3)


def test_default_params_load_from_package() -> None:
    p = load_default_params()
    assert p.provenance.n_workers > 0
    assert p.provenance.n_labelled_comparisons > 0
    assert 0 < p.prefer_right.n <= p.provenance.n_labelled_comparisons
    assert SyntheticParams.model_validate_json(p.model_dump_json()) == p


def _assert_same_samples(a: Device, b: Device) -> None:
    assert a.device_id == b.device_id
    assert a.calibration == b.calibration
    assert len(a.queries) == len(b.queries)
    for qa, qb in zip(a.queries, b.queries, strict=True):
        assert (qa.prompt, qa.response_left, qa.response_right) == (
            qb.prompt,
            qb.response_left,
            qb.response_right,
        )
        assert (qa.preference, qa.likert_left, qa.likert_right, qa.shown_at_ms) == (
            qb.preference,
            qb.likert_left,
            qb.likert_right,
            qb.shown_at_ms,
        )
        for sa, sb in ((qa.gaze, qb.gaze), (qa.mouse, qb.mouse)):
            for col in ("t_ms", "x", "y", "side", "char_index", "validate"):
                np.testing.assert_array_equal(getattr(sa, col), getattr(sb, col))


def test_deterministic_given_seed(cohort: tuple[Device, ...]) -> None:
    again = generate_cohort(12, seed=3)
    for a, b in zip(cohort, again, strict=True):
        _assert_same_samples(a, b)
    other = generate_cohort(12, seed=4)
    assert [len(d.queries) for d in other] != [len(d.queries) for d in cohort]


def test_schema_valid(cohort: tuple[Device, ...]) -> None:
    assert [d.device_id for d in cohort] == [f"synth_{i:03d}" for i in range(len(cohort))]
    for device in cohort:
        assert re.fullmatch(r"synth_\d{3}", device.device_id)
        shown = [q.shown_at_ms for q in device.queries]
        assert all(s is not None for s in shown)
        assert shown == sorted(shown), "queries must be in time order"
        assert len({q.query_id for q in device.queries}) == len(device.queries)
        assert set(device.calibration) == {q.task_id for q in device.queries}
        ends = [*shown[1:], math.inf]
        for q, end in zip(device.queries, ends, strict=True):
            assert q.pairwise == (q.task_id % 2 == 1)
            assert q.pairwise == (q.response_right is not None)
            assert q.prompt.endswith("?")
            if q.pairwise:
                assert q.preference in (None, PREF_TIE, PREF_LEFT, PREF_RIGHT)
            else:
                assert q.preference in (None, 0, 1) and q.likert_right is None
            for s in (q.gaze, q.mouse):
                assert len(s) > 0
                assert np.all(np.diff(s.t_ms) > 0), "samples must be strictly time-ordered"
                assert s.t_ms[0] >= q.shown_at_ms and s.t_ms[-1] < end
                assert set(np.unique(s.side)) <= {SIDE_NONE, SIDE_LEFT, SIDE_RIGHT}
                if not q.pairwise:
                    assert not (s.side == SIDE_RIGHT).any()
                assert set(np.unique(s.validate)) <= {-1, 0, 1}
                assert (s.char_index[s.side == SIDE_NONE] == -1).all()
                for side, text in ((SIDE_LEFT, q.response_left), (SIDE_RIGHT, q.response_right)):
                    ci = s.char_index[s.side == side]
                    assert ((ci >= -1) & (ci <= len(text or ""))).all()
                on = s.side != SIDE_NONE
                assert np.isfinite(s.x[on]).all() and np.isfinite(s.y[on]).all()
            np.testing.assert_array_equal(q.gaze.t_ms, q.mouse.t_ms)


def test_exact_comparisons_per_device() -> None:
    devices = generate_cohort(6, seed=1, comparisons_per_device=7)
    assert [len(d.comparisons()) for d in devices] == [7] * 6
    assert all(len(d.comparisons()) == 0 for d in generate_cohort(3, comparisons_per_device=0))
    assert generate_cohort(0) == ()
    with pytest.raises(ValueError):
        generate_cohort(2, comparisons_per_device=-1)


def test_devices_are_non_iid() -> None:
    counts = sorted(len(d.comparisons()) for d in generate_cohort(60, seed=0))
    assert counts[0] == 0, "some people never do a pairwise task"
    assert counts[-1] >= 20 * max(np.median(counts), 1) or counts[-1] >= 40


def test_behaviour_weakly_predicts_preference() -> None:
    """The preferred side gets a little more gaze: learnable, far from deterministic."""
    rows = query_rows(generate_cohort(40, seed=5, comparisons_per_device=30))
    lab = rows["labelled"] > 0
    left_pref = lab & (rows["label_right"] == 0)
    right_pref = lab & (rows["label_right"] == 1)
    gap = np.nanmean(rows["gaze_left"][left_pref]) - np.nanmean(rows["gaze_left"][right_pref])
    assert 0.005 < gap < 0.15
    # longer answers are preferred, as in IFLLM (logistic slope on the log length ratio)
    longer_right = rows["len_right"] > rows["len_left"]
    agree = np.mean(longer_right[lab] == (rows["label_right"][lab] == 1))
    assert 0.52 < agree < 0.75


@pytest.mark.realdata
def test_marginals_close_to_ifllm() -> None:
    if not IFLLM_ROOT.is_dir():
        pytest.skip(f"IFLLM not found at {IFLLM_ROOT}")
    ifllm = pytest.importorskip("fedgaze.data.ifllm")
    real = ifllm.load_ifllm(IFLLM_ROOT).devices
    synth = generate_cohort(N_SYNTH, seed=0, params=load_default_params())
    table = compare_marginals(real, synth)
    assert set(table) == set(MARGINALS) == set(KS_MAX)
    report = {name: round(stat, 3) for name, (stat, _, _) in table.items()}
    for name, (stat, n_real, n_synth) in table.items():
        assert n_real > 0 and n_synth > 0, name
        assert stat < KS_MAX[name], f"{name}: KS {stat:.3f} >= {KS_MAX[name]} ({report})"
    real_share, synth_share = label_right_share(real), label_right_share(synth)
    assert abs(real_share - synth_share) < LABEL_SHARE_TOL, (real_share, synth_share)
