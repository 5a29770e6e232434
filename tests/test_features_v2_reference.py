"""Features v2: the vectorized modules against slow per-sample references written from their
docstrings, on random traces (gaps that are negative, NaN or over the cap; carets past the end;
empty texts)."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fedgaze.data.schema import SIDE_LEFT, SIDE_NONE, SIDE_RIGHT, Samples
from fedgaze.features.cross import ALIGN_S, align
from fedgaze.features.phases import SUSTAINED_S, find_phases, phase_features
from fedgaze.features.reading import (
    N_WINDOWS,
    REGRESSION_CHARS,
    reading_features,
    window_profile,
)
from fedgaze.features.sides import sides_features
from fedgaze.features.trace import GAP_CAP_S, Trace, prepare, query_span, time_origin_ms

SIDES = (SIDE_LEFT, SIDE_RIGHT)


@st.composite
def traces(draw: st.DrawFn) -> Samples:
    n = draw(st.integers(0, 40))
    gaps = draw(
        st.lists(
            st.one_of(st.floats(-300, 3000), st.sampled_from([math.nan, 0.0, 80.0, 500.0])),
            min_size=n,
            max_size=n,
        )
    )
    t = 1.7e12 + np.cumsum(np.asarray(gaps, dtype=np.float64)) if n else np.empty(0)
    side = draw(
        st.lists(st.sampled_from([SIDE_NONE, SIDE_LEFT, SIDE_RIGHT]), min_size=n, max_size=n)
    )
    caret = draw(st.lists(st.integers(-1, 80), min_size=n, max_size=n))
    return Samples(t, np.zeros(n), np.zeros(n), side, caret, np.ones(n))


lengths_st = st.tuples(st.integers(0, 60), st.integers(0, 60))


def _gaps(s: Samples) -> list[float]:
    out = []
    for i in range(len(s)):
        g = (s.t_ms[i + 1] - s.t_ms[i]) / 1000.0 if i + 1 < len(s) else 0.0
        out.append(min(max(g, 0.0), GAP_CAP_S) if math.isfinite(g) else 0.0)
    return out


def _rel(a: float, b: float) -> float:
    return a / (a + b) if a + b > 0 else 0.5


def slow_reading(s: Samples, lengths: tuple[int, int]) -> np.ndarray:
    n = len(s)
    if n == 0:
        return np.zeros((2, 14))
    gaps = _gaps(s)
    total = sum(gaps)
    sec, cnt, comp, mean, var, ent, reg = ([0.0, 0.0] for _ in range(7))
    for k, side in enumerate(SIDES):
        pos, carets = [], []
        for i in range(n):
            if s.side[i] != side:
                continue
            sec[k] += gaps[i]
            cnt[k] += 1
            if i == 0 or s.side[i - 1] != side:
                ent[k] += 1
            if s.char_index[i] >= 0:
                carets.append(int(s.char_index[i]))
                if lengths[k] > 0:
                    pos.append(min(max(s.char_index[i] / lengths[k], 0.0), 1.0))
        comp[k] = max(pos, default=0.0)
        mean[k] = statistics.fmean(pos) if pos else 0.0
        var[k] = statistics.pvariance(pos) if pos else 0.0
        reg[k] = sum(1 for a, b in itertools.pairwise(carets) if b - a < -REGRESSION_CHARS)
    rows = []
    for k in range(2):
        o = 1 - k
        rows.append(
            [
                math.log1p(sec[k]),
                sec[k] / total if total > 0 else 0.0,
                _rel(sec[k], sec[o]),
                cnt[k] / n,
                math.log1p(cnt[k]),
                _rel(cnt[k], cnt[o]),
                comp[k],
                _rel(comp[k], comp[o]),
                mean[k],
                var[k],
                math.log1p(ent[k]),
                math.log1p(reg[k]),
                reg[k] / cnt[k] if cnt[k] else 0.0,
                1.0,
            ]
        )
    return np.array(rows)


def slow_sides(s: Samples) -> np.ndarray:
    on = [int(v) for v in s.side if v != SIDE_NONE]
    out = np.zeros((2, 3))
    if on:
        out[SIDES.index(on[0]), 0] = 1
        out[SIDES.index(on[-1]), 1] = 1
        out[:, 2] = math.log1p(sum(1 for a, b in itertools.pairwise(on) if a != b))
    return out


def slow_profile(tr: Trace, start: float, end: float) -> np.ndarray:
    total = [0] * N_WINDOWS
    on = [[0] * N_WINDOWS for _ in range(2)]
    for t, row in zip(tr.t_s, tr.row, strict=True):
        if not math.isfinite(t):
            continue
        k = (
            min(max(int((t - start) / (end - start) * N_WINDOWS), 0), N_WINDOWS - 1)
            if end > start
            else 0
        )
        total[k] += 1
        if row >= 0:
            on[row][k] += 1
    return np.array(
        [[on[r][k] / total[k] if total[k] else 0.0 for k in range(N_WINDOWS)] for r in range(2)]
    )


def _bouts(times: list[float]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for t in sorted(times):
        if out and t - out[-1][1] <= GAP_CAP_S:
            out[-1] = (out[-1][0], t)
        else:
            out.append((t, t))
    return out


def slow_phases(g: Trace, m: Trace, start: float, end: float) -> np.ndarray:
    def on_times(side: int | None) -> list[float]:
        return [
            float(t)
            for tr in (g, m)
            for t, row in zip(tr.t_s, tr.row, strict=True)
            if math.isfinite(t) and row >= 0 and (side is None or row == side)
        ]

    sustained = [b for b in _bouts(on_times(None)) if b[1] - b[0] >= SUSTAINED_S]
    split = max(b[1] for b in sustained) if sustained else end
    review, compose = split - start, end - split
    out = np.zeros((2, 9))
    out[:, 0], out[:, 1] = math.log1p(review), math.log1p(compose)
    out[:, 2] = compose / (end - start) if end > start else 0.0
    for col, tr in ((3, g), (5, m)):
        for i in range(len(tr)):
            if tr.row[i] < 0:
                continue
            if tr.t_s[i] <= split:
                out[tr.row[i], col] += tr.gap_s[i]
            elif tr.t_s[i] > split:
                out[tr.row[i], col + 1] += tr.gap_s[i]
    out[:, 3:7] = np.log1p(out[:, 3:7])
    if compose > 0:
        for k in range(2):
            looks = _bouts([t for t in on_times(k) if t > split])
            out[k, 7] = math.log1p(len(looks))
            out[k, 8] = math.log1p(sum(b - a for a, b in looks))
    return out


@settings(max_examples=200, deadline=None)
@given(s=traces(), lengths=lengths_st)
def test_reading_and_sides_match_reference(s: Samples, lengths: tuple[int, int]):
    tr = prepare(s, np.array(lengths, dtype=np.float64), time_origin_ms(s))
    np.testing.assert_allclose(reading_features(tr), slow_reading(s, lengths), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(sides_features(tr), slow_sides(s), rtol=1e-12)


@settings(max_examples=200, deadline=None)
@given(g=traces(), m=traces(), lengths=lengths_st)
def test_profile_and_phases_match_reference(g: Samples, m: Samples, lengths: tuple[int, int]):
    ln = np.array(lengths, dtype=np.float64)
    origin = time_origin_ms(g, m)
    gt, mt = prepare(g, ln, origin), prepare(m, ln, origin)
    start, end = query_span(gt, mt)
    for tr in (gt, mt):
        np.testing.assert_allclose(window_profile(tr, start, end), slow_profile(tr, start, end))
    got = phase_features(gt, mt, find_phases(gt, mt, start, end))
    np.testing.assert_allclose(got, slow_phases(gt, mt, start, end), rtol=1e-9, atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(g=traces(), m=traces())
def test_align_pairs_each_gaze_sample_with_its_nearest_mouse_sample(g: Samples, m: Samples):
    origin = time_origin_ms(g, m)
    gt, mt = prepare(g, np.ones(2), origin), prepare(m, np.ones(2), origin)
    gi, mi = align(gt, mt)
    paired = dict(zip(gi.tolist(), mi.tolist(), strict=True))
    for i, t in enumerate(gt.t_s):
        dts = [abs(u - t) for u in mt.t_s if math.isfinite(u)]
        best = min(dts, default=math.inf) if math.isfinite(t) else math.inf
        if best <= ALIGN_S:
            assert i in paired and abs(mt.t_s[paired[i]] - t) == best
        else:
            assert i not in paired
