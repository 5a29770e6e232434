"""Statistics of a cohort, shared by the estimation script, its --check mode and the tests.

Per-query rows, sampling intervals and the marginals on which the synthetic cohort is judged
against IFLLM (two-sample KS), computed alike on real and synthetic devices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fedgaze.data.schema import PREF_LEFT, SIDE_LEFT, SIDE_NONE, SIDE_RIGHT, Device
from fedgaze.data.synthetic.arrays import MS, BoolArray, FloatArray, IntArray
from fedgaze.data.synthetic.params import COMPLETION_MIN_SAMPLES, COMPLETION_QUANTILE


def completion_of(char_index: IntArray, length: int) -> float:
    """Reading completion of one answer: the 90th percentile caret offset as a share of it.

    A high quantile rather than the maximum, because WebGazer jitter (~190 px) makes the
    maximum land near the end of most answers. NaN with too few on-text samples.
    """
    c = char_index[char_index >= 0]
    if len(c) < COMPLETION_MIN_SAMPLES or length <= 0:
        return math.nan
    return float(min(np.quantile(c, COMPLETION_QUANTILE) / length, 1.0))


def _share(mask: BoolArray) -> float:
    return float(mask.mean()) if len(mask) else math.nan


def query_rows(devices: Sequence[Device]) -> dict[str, FloatArray]:
    """One row per query (as float columns) with the per-query statistics the model uses.

    Columns: device, pairwise, labelled, label_right, pref_left (+1/-1/0), len_left, len_right,
    prompt_len, first_in_task, n_gaze, duration_s, gaze_on, gaze_left (of on-answer gaze),
    completion_left, completion_right, mouse_on, mouse_left, shown_at_ms, t_first_ms, t_last_ms.
    """
    rows: dict[str, list[float]] = {}

    def put(**kw: float) -> None:
        for k, v in kw.items():
            rows.setdefault(k, []).append(float(v))

    for d_i, device in enumerate(devices):
        prev_task: int | None = None
        for qr in device.queries:
            g, m = qr.gaze, qr.mouse
            g_on = g.side != SIDE_NONE
            m_on = m.side != SIDE_NONE
            len_l = len(qr.response_left)
            len_r = len(qr.response_right) if qr.response_right is not None else 0
            labelled = qr.is_labelled_comparison
            put(
                device=d_i,
                pairwise=qr.pairwise,
                labelled=labelled,
                label_right=qr.label_right if labelled else math.nan,
                pref_left=(1.0 if qr.preference == PREF_LEFT else -1.0) if labelled else 0.0,
                len_left=len_l,
                len_right=len_r,
                prompt_len=len(qr.prompt),
                first_in_task=qr.task_id != prev_task,
                n_gaze=len(g),
                duration_s=(g.t_ms[-1] - g.t_ms[0]) / MS if len(g) >= 2 else math.nan,
                gaze_on=_share(g_on),
                gaze_left=_share(g.side[g_on] == SIDE_LEFT) if qr.pairwise else math.nan,
                completion_left=completion_of(g.char_index[g.side == SIDE_LEFT], len_l),
                completion_right=completion_of(g.char_index[g.side == SIDE_RIGHT], len_r),
                mouse_on=_share(m_on),
                mouse_left=_share(m.side[m_on] == SIDE_LEFT) if qr.pairwise else math.nan,
                shown_at_ms=qr.shown_at_ms if qr.shown_at_ms is not None else math.nan,
                t_first_ms=g.t_ms[0] if len(g) else math.nan,
                t_last_ms=g.t_ms[-1] if len(g) else math.nan,
            )
            prev_task = qr.task_id
    return {k: np.asarray(v, np.float64) for k, v in rows.items()}


def sampling_intervals(devices: Sequence[Device]) -> FloatArray:
    """All gaze sampling intervals (ms) within queries, pooled over devices."""
    parts = [np.diff(q.gaze.t_ms) for d in devices for q in d.queries if len(q.gaze) > 1]
    return np.concatenate(parts) if parts else np.empty(0)


def _per_device_quantiles(devices: Sequence[Device], k: int = 100) -> FloatArray:
    """``k`` evenly spaced quantiles of each device's sampling intervals, concatenated."""
    probs = (np.arange(k) + 0.5) / k
    parts = [np.quantile(iv, probs) for d in devices if len(iv := sampling_intervals([d]))]
    return np.concatenate(parts) if parts else np.empty(0)


MARGINALS = (
    "sampling_interval_ms",
    "query_samples",
    "query_duration_s",
    "gaze_on_answer_share",
    "reading_completion",
    "response_chars",
    "comparisons_per_device",
)


def marginals(devices: Sequence[Device]) -> dict[str, FloatArray]:
    """The marginal distributions compared between IFLLM and the synthetic cohort (KS tests).

    Queries without gaze samples are left out of the per-query marginals (missing traces are a
    loader matter, not behaviour); comparisons per device counts every device. Sampling
    intervals weigh devices equally (100 quantiles of each device's intervals): pooled raw,
    the few people with 40 tasks would decide the distribution, and that is a fact about who
    worked longest, not about machines.
    """
    r = query_rows(devices)
    traced = r["n_gaze"] > 0
    comp = np.r_[r["completion_left"], r["completion_right"]]
    lengths = np.r_[r["len_left"], r["len_right"][r["pairwise"] > 0]]
    return {
        "sampling_interval_ms": _per_device_quantiles(devices),
        "query_samples": r["n_gaze"][traced],
        "query_duration_s": r["duration_s"][traced & np.isfinite(r["duration_s"])],
        "gaze_on_answer_share": r["gaze_on"][traced],
        "reading_completion": comp[np.isfinite(comp)],
        "response_chars": lengths,
        "comparisons_per_device": np.asarray([len(d.comparisons()) for d in devices], np.float64),
    }


def label_right_share(devices: Sequence[Device]) -> float:
    """Share of labelled comparisons where the right answer was preferred."""
    labels = [q.label_right for d in devices for q in d.comparisons()]
    return float(np.mean(labels)) if labels else math.nan


def compare_marginals(
    real: Sequence[Device], synthetic: Sequence[Device]
) -> dict[str, tuple[float, int, int]]:
    """Two-sample KS statistic per marginal (see :data:`MARGINALS`): (statistic, n_real, n_synth).

    The one place that defines how the synthetic cohort is judged against IFLLM, shared by the
    estimation script's ``--check`` table and the real-data test.
    """
    from scipy.stats import ks_2samp

    a, b = marginals(real), marginals(synthetic)
    out: dict[str, tuple[float, int, int]] = {}
    for name in MARGINALS:
        if len(a[name]) and len(b[name]):
            stat = float(ks_2samp(a[name], b[name]).statistic)
        else:
            stat = math.nan
        out[name] = (stat, len(a[name]), len(b[name]))
    return out
