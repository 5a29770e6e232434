"""Generation of a whole cohort: plan, text, labels, behaviour, clock and traces, packed.

- Labels: P(right preferred) is logistic in the log length ratio (longer answers win, as in
  IFLLM); Likert ratings from the real preferred / non-preferred / pointwise frequencies.
- Behaviour: per query, Gaussian-copula mixed models (device random intercept + query noise on
  the normal-score scale, the real marginal on top) give the trace duration, the share of gaze
  and mouse on the answers, the left share of each, and how far each answer was read. Preference
  enters as a covariate with the strength fitted on IFLLM's labelled comparisons (small: the
  preferred side gets a few points more gaze), so behaviour predicts preference about as weakly
  as in the real data, and mostly through answer length.
- Clock: realistic epoch ms; queries of a task back to back, tasks separated by idle gaps;
  every sample lies in [shown_at, next shown_at) of its query; gaze and mouse share instants.

All generation is vectorized over the whole cohort; only the final packing into ``Query``
objects loops (once per query).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedgaze.data.schema import (
    PREF_LEFT,
    PREF_RIGHT,
    PREF_TIE,
    Device,
    Query,
    Samples,
    ServedIds,
)
from fedgaze.data.synthetic.arrays import MS, FloatArray, IntArray, Trace
from fedgaze.data.synthetic.gaze import gaze_trace
from fedgaze.data.synthetic.mouse import mouse_trace
from fedgaze.data.synthetic.params import SyntheticParams, load_default_params
from fedgaze.data.synthetic.plan import Plan
from fedgaze.data.synthetic.streams import Streams
from fedgaze.data.synthetic.text import (
    CORPUS_WORDS,
    cut_texts,
    make_corpus,
    make_prompts,
    response_lengths,
    sentence_starts,
)
from fedgaze.data.synthetic.validity import camera_validity


def _likert(
    rng: np.random.Generator, p: SyntheticParams, plan: Plan, pref: IntArray
) -> tuple[FloatArray, FloatArray]:
    """Likert ratings: the preferred answer's from its real distribution, the other's likewise."""
    n = plan.n
    a = p.likert_preferred.sample(rng, n)
    b = p.likert_other.sample(rng, n)
    pointwise = p.likert_pointwise.sample(rng, n)
    left = np.where(pref == PREF_RIGHT, b, a)
    right = np.where(pref == PREF_RIGHT, a, b)
    unlabelled = plan.pw & ~plan.labelled & ~plan.tie
    left = np.where(plan.pw, left, pointwise)
    left[unlabelled] = np.nan
    right[unlabelled | ~plan.pw] = np.nan
    return left, right


def generate_cohort(
    n_devices: int,
    *,
    seed: int = 0,
    params: SyntheticParams | None = None,
    comparisons_per_device: int | None = None,
) -> tuple[Device, ...]:
    """Generate ``n_devices`` synthetic devices, deterministic given ``seed``.

    The cohort follows IFLLM's statistics (``params``, default :func:`load_default_params`):
    device sizes are very non-IID, behaviour is weakly and noisily linked to preference. With
    ``comparisons_per_device`` every device instead has exactly that many labelled pairwise
    comparisons (plus its pointwise tasks), for tests and demos that need balanced devices.
    Device ids are ``synth_000``, ``synth_001``, ...
    """
    if n_devices < 0:
        raise ValueError(f"n_devices must be >= 0, got {n_devices}")
    if comparisons_per_device is not None and comparisons_per_device < 0:
        raise ValueError(f"comparisons_per_device must be >= 0, got {comparisons_per_device}")
    p = params if params is not None else load_default_params()
    rng = np.random.default_rng(seed)
    if n_devices == 0:
        return ()
    plan = Plan(rng, p, n_devices, comparisons_per_device)
    n, dev = plan.n, plan.dev

    # text
    len_l, len_r = response_lengths(rng, p, plan.pw)
    len_prompt = np.maximum(np.rint(p.prompt_chars.sample(rng, n)), 3).astype(np.int64)
    corpus = make_corpus(rng, CORPUS_WORDS)
    sentences = sentence_starts(corpus)

    # labels
    log_ratio = np.log(len_l / np.maximum(len_r, 1))  # left over right
    p_right = p.prefer_right.prob({"log_len_ratio_rl": -log_ratio}, n)
    pref = np.where(rng.random(n) < p_right, PREF_RIGHT, PREF_LEFT)
    pref = np.where(plan.tie, PREF_TIE, pref)
    z_left = np.where(plan.labelled, np.where(pref == PREF_LEFT, 1.0, -1.0), 0.0)
    pref_pointwise = np.where(rng.random(n) < p.pointwise_better_share, 1, 0)
    likert_l, likert_r = _likert(rng, p, plan, pref)

    # behaviour per query
    pw_f = plan.pw.astype(np.float64)
    log_ratio_pw = np.where(plan.pw, log_ratio, 0.0)
    shown_chars = len_l + len_r
    dur_s = p.duration_s.draw(
        rng, {"pairwise": pw_f, "log_chars": np.log(shown_chars / 1000.0)}, dev, n_devices
    )
    dur_ms = np.rint(np.clip(dur_s, 2.0, 3600.0) * MS)
    gaze_on = p.gaze_on_answer.draw(rng, {"pairwise": pw_f}, dev, n_devices)
    gaze_left = np.where(
        plan.pw,
        p.gaze_left_share.draw(
            rng, {"pref": z_left, "log_len_ratio": log_ratio_pw}, dev, n_devices
        ),
        1.0,
    )
    comp = np.stack(
        [
            p.completion.draw(
                rng,
                {"pairwise": pw_f, "log_chars": np.log(np.maximum(ln, 1) / 1000.0), "pref": z},
                dev,
                n_devices,
            )
            for ln, z in ((len_l, z_left), (len_r, -z_left))
        ]
    )
    mouse_on = p.mouse_on_answer.draw(rng, {"pairwise": pw_f}, dev, n_devices)
    mouse_left = np.where(
        plan.pw,
        p.mouse_left_share.draw(
            rng, {"pref": z_left, "log_len_ratio": log_ratio_pw}, dev, n_devices
        ),
        1.0,
    )

    # clock: device start, tasks separated by idle gaps, queries of a task back to back
    # (whole milliseconds, so query windows tile exactly)
    span = max(p.last_epoch_ms, p.first_epoch_ms + 1)
    start = np.rint(rng.uniform(p.first_epoch_ms, span, n_devices))
    gap_after = np.where(plan.last_in_task, np.rint(p.task_gap_s.sample(rng, n) * MS), 0.0)
    step = dur_ms + gap_after
    csum = np.cumsum(step) - step
    dev_first = np.searchsorted(dev, np.arange(n_devices))
    shown_at = start[dev] + csum - csum[dev_first[dev]]

    streams = Streams(rng, p, plan, dur_ms, shown_at)
    gaze = gaze_trace(rng, p, plan, streams, gaze_on, gaze_left, comp, len_l, len_r)
    validate = camera_validity(rng, p, plan, streams)
    mouse = mouse_trace(rng, p, plan, streams, mouse_on, mouse_left, len_l, len_r)

    # packing
    texts_l = cut_texts(corpus, sentences, rng, len_l)
    texts_r = cut_texts(corpus, sentences, rng, np.maximum(len_r, 1))
    prompts = make_prompts(corpus, sentences, rng, len_prompt)
    calib = p.calibration.sample(rng, len(plan.task_dev))
    b = streams.bounds
    queries: list[list[Query]] = [[] for _ in range(n_devices)]
    for i in range(n):
        sl = slice(b[i], b[i + 1])
        pw = bool(plan.pw[i])
        if pw:
            preference: int | None = int(pref[i]) if (plan.labelled[i] or plan.tie[i]) else None
        else:
            preference = None if plan.first_in_task[i] else int(pref_pointwise[i])
        queries[dev[i]].append(
            Query(
                query_id=int(plan.ordinal[i]) + 1,
                task_id=int(plan.task_id[plan.task[i]]),
                pairwise=pw,
                prompt=prompts[i],
                response_left=texts_l[i],
                response_right=texts_r[i] if pw else None,
                preference=preference,
                likert_left=None if np.isnan(likert_l[i]) else float(likert_l[i]),
                likert_right=None if np.isnan(likert_r[i]) else float(likert_r[i]),
                shown_at_ms=float(shown_at[i]),
                gaze=_take(gaze, validate, streams.t_ms, sl),
                mouse=_take(mouse, validate, streams.t_ms, sl),
                served=synthetic_served_ids(int(dev[i]), int(plan.ordinal[i]) + 1, pw),
            )
        )
    calibration: list[dict[int, float]] = [{} for _ in range(n_devices)]
    for t_dev, t_id, c in zip(
        plan.task_dev.tolist(), plan.task_id.tolist(), calib.tolist(), strict=True
    ):
        calibration[t_dev][t_id] = round(c, 2)
    return tuple(
        Device(
            device_id=synthetic_device_id(d), queries=tuple(queries[d]), calibration=calibration[d]
        )
        for d in range(n_devices)
    )


def synthetic_device_id(index: int) -> str:
    """The id of the synthetic cohort's device number ``index``."""
    return f"synth_{index:03d}"


def synthetic_served_ids(device: int, query_id: int, pairwise: bool) -> ServedIds:
    """The ids a synthetic query's prompt and answers were served under (unique in a cohort)."""
    prompt = f"{synthetic_device_id(device)}/q{query_id}"
    return ServedIds(prompt, f"{prompt}/1", f"{prompt}/2" if pairwise else None)


def _take(trace: Trace, validate: npt.NDArray[np.int8], t_ms: FloatArray, sl: slice) -> Samples:
    x, y, side, char = trace
    return Samples(
        t_ms=t_ms[sl],
        x=x[sl],
        y=y[sl],
        side=side[sl],
        char_index=char[sl].astype(np.int32),
        validate=validate[sl],
    )
