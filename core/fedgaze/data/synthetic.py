"""Synthetic cohort: devices with gaze/mouse traces, answers and preference labels.

The embedded default data source for demos and tests that must run without the IFLLM files. It
produces the same in-memory schema as the IFLLM loader (:class:`~fedgaze.data.schema.Device`
holding :class:`~fedgaze.data.schema.Query` objects with gaze and mouse
:class:`~fedgaze.data.schema.Samples`), with every distribution fitted to the real data by
``scripts/estimate_synthetic_params.py`` and stored in ``synthetic_params.json`` next to this
module. Each parameter's ``description`` names the IFLLM statistic it was estimated from.

Model, per device (one simulated person):

- Cohort shape: number of tasks (1 + negative binomial), pairwise tasks among them
  (beta-binomial), queries per task (categorical, separately for pairwise and pointwise). The
  number of labelled comparisons per device is therefore very non-IID (0 to > 100), as in IFLLM.
- Text: pair lengths as geometric mean and |log ratio| (Gaussian copula, as short pairs differ
  more), pointwise and prompt lengths from the real quantile tables; text is cut from a corpus
  built from an embedded word list (no downloads).
- Labels: P(right preferred) is logistic in the log length ratio (longer answers win, as in
  IFLLM); Likert ratings from the real preferred / non-preferred / pointwise frequencies.
- Behaviour: per query, Gaussian-copula mixed models (device random intercept + query noise on
  the normal-score scale, the real marginal on top) give the trace duration, the share of gaze
  and mouse on the answers, the left share of each, and how far each answer was read. Preference
  enters as a covariate with the strength fitted on IFLLM's labelled comparisons (small: the
  preferred side gets a few points more gaze), so behaviour predicts preference about as weakly
  as in the real data, and mostly through answer length.
- Traces: per-device sampling rate with the real within-device interval shape and rare gaps over
  1 s; gaze alternates between panels in geometric bouts, with a WebGazer-sized error per bout
  and jitter per sample; the caret offset under the gaze progresses through the answer over
  time (real curve); the mouse rests for runs of samples and glides between rest positions.
- Clock: realistic epoch ms; queries of a task back to back, tasks separated by idle gaps;
  every sample lies in [shown_at, next shown_at) of its query; gaze and mouse share instants.

All generation is vectorized over the whole cohort; only the final packing into ``Query``
objects loops (once per query).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from importlib import resources

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field
from scipy.special import ndtr

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

PARAMS_RESOURCE = "synthetic_params.json"

#: Minimum on-side gaze samples with a caret offset for a reading-completion value.
COMPLETION_MIN_SAMPLES = 5
#: Quantile of the caret position (as a share of the answer) that defines reading completion.
COMPLETION_QUANTILE = 0.9
#: Epoch-ms multiplier.
_MS = 1000.0

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


# --------------------------------------------------------------------------------------------
# Parameter model
# --------------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class QuantileTable(_Model):
    """An empirical distribution as inverse-CDF knots; sampled by linear interpolation."""

    probs: tuple[float, ...] = Field(description="Increasing probabilities from 0 to 1.")
    values: tuple[float, ...] = Field(description="The quantiles at ``probs``.")

    def ppf(self, u: npt.ArrayLike) -> FloatArray:
        """Quantile function: values at probabilities ``u``."""
        return np.interp(np.asarray(u, np.float64), self.probs, self.values)

    def sample(self, rng: np.random.Generator, size: int) -> FloatArray:
        """``size`` independent draws."""
        return self.ppf(rng.random(size))


class LogNormal(_Model):
    """exp(N(mu, sigma))."""

    mu: float
    sigma: float

    def sample(self, rng: np.random.Generator, size: int) -> FloatArray:
        """``size`` independent draws."""
        return np.exp(rng.normal(self.mu, self.sigma, size))


class BetaDist(_Model):
    """Beta(a, b)."""

    a: float
    b: float

    def sample(self, rng: np.random.Generator, size: int) -> FloatArray:
        """``size`` independent draws."""
        return rng.beta(self.a, self.b, size)


class Categorical(_Model):
    """A discrete distribution over ``values``."""

    values: tuple[float, ...]
    probs: tuple[float, ...]

    def sample(self, rng: np.random.Generator, size: int) -> FloatArray:
        """``size`` independent draws."""
        p = np.asarray(self.probs, np.float64)
        idx = np.searchsorted(np.cumsum(p / p.sum()), rng.random(size), side="right")
        return np.asarray(self.values, np.float64)[np.minimum(idx, len(p) - 1)]


class MixedEffect(_Model):
    """A per-query quantity with a device random effect, as a Gaussian copula.

    On the normal-score scale, z = intercept + coefs . x + u_device + e_query, with
    u ~ N(0, sd_device) shared by all queries of one device (people differ: the non-IID part)
    and e ~ N(0, sd_query) per query; the value is ``marginal.ppf(Phi(z))``. The model is
    fitted on the normal scores of the real values, so the generated marginal matches the real
    one while the covariate effects (e.g. preference) and the device clustering are kept.
    """

    intercept: float
    coefs: dict[str, float] = Field(default_factory=dict)
    sd_device: float
    sd_query: float
    marginal: QuantileTable = Field(description="The real values' distribution.")
    n: int = Field(description="Rows of IFLLM the model was fitted on.")

    def draw(
        self,
        rng: np.random.Generator,
        covariates: Mapping[str, FloatArray],
        device: IntArray,
        n_devices: int,
    ) -> FloatArray:
        """One value per row: ``covariates`` arrays and ``device`` (index per row) align."""
        z = self.intercept + rng.normal(0.0, self.sd_query, len(device))
        z = z + rng.normal(0.0, self.sd_device, n_devices)[device]
        for name, coef in self.coefs.items():
            z = z + coef * covariates[name]
        return self.marginal.ppf(ndtr(z))


class Logistic(_Model):
    """P(event) = sigmoid(intercept + coefs . x)."""

    intercept: float
    coefs: dict[str, float] = Field(default_factory=dict)
    n: int = Field(description="Rows of IFLLM the model was fitted on.")

    def prob(self, covariates: Mapping[str, FloatArray], size: int) -> FloatArray:
        """The event probability per row."""
        eta = np.full(size, self.intercept)
        for name, coef in self.coefs.items():
            eta = eta + coef * covariates[name]
        return _sigmoid(eta)


class Box(_Model):
    """An axis-aligned rectangle in viewport CSS pixels."""

    x0: float
    y0: float
    x1: float
    y1: float


class Gaussian2D(_Model):
    """Independent normal x and y, in viewport CSS pixels."""

    mean_x: float
    mean_y: float
    sd_x: float
    sd_y: float


class Provenance(_Model):
    """Where the parameters came from: the IFLLM copy and the statistics it had."""

    dataset: str
    estimated_at: str = Field(description="UTC date the estimation script ran.")
    script: str
    n_workers: int
    n_devices_with_traces: int
    n_queries: int
    n_pairwise_queries: int
    n_labelled_comparisons: int
    n_gaze_samples: int
    n_mouse_samples: int
    stats: dict[str, float] = Field(
        default_factory=dict, description="Headline real-data statistics, for reference."
    )


class SyntheticParams(_Model):
    """Every parameter of the synthetic cohort; each ``description`` names its IFLLM source."""

    provenance: Provenance

    # --- cohort shape ---------------------------------------------------------------------
    tasks_extra: tuple[float, float] = Field(
        description="Negative binomial (mean, dispersion k) of tasks per device minus one; MLE "
        "on the number of (worker, task) pairs per worker."
    )
    pairwise_task_share: BetaDist = Field(
        description="Beta-binomial: share of a device's tasks that are pairwise; MLE on the "
        "per-worker counts of pairwise tasks out of all tasks."
    )
    queries_per_pairwise_task: Categorical = Field(
        description="Queries in one pairwise task; frequencies over IFLLM pairwise tasks."
    )
    queries_per_pointwise_task: Categorical = Field(
        description="Queries in one pointwise task; frequencies over IFLLM pointwise tasks."
    )
    pairwise_outcome: tuple[float, float, float] = Field(
        description="Shares of pairwise queries that are (labelled, tie, unlabelled)."
    )
    # --- text ---------------------------------------------------------------------------------
    pointwise_chars: QuantileTable = Field(
        description="Pointwise answer length in characters; quantiles over pointwise answers."
    )
    pair_mean_chars: QuantileTable = Field(
        description="Pairwise: geometric mean sqrt(len_left * len_right); quantiles over pairs."
    )
    pair_abs_log_ratio: QuantileTable = Field(
        description="Pairwise: |log(len_right / len_left)|; quantiles over pairs."
    )
    pair_ratio_corr: float = Field(
        description="Correlation of the normal scores of the pair mean and |log ratio| "
        "(Gaussian copula: short pairs differ more)."
    )
    pair_right_longer_share: float = Field(
        description="Share of pairs whose right answer is the longer."
    )
    prompt_chars: QuantileTable = Field(description="Prompt length; quantiles over queries.")
    # --- labels ---------------------------------------------------------------------------------
    prefer_right: Logistic = Field(
        description="P(right preferred) ~ log(len_right/len_left) ('log_len_ratio_rl'); "
        "logistic MLE over labelled comparisons."
    )
    likert_preferred: Categorical = Field(
        description="Likert of the preferred answer in labelled comparisons."
    )
    likert_other: Categorical = Field(
        description="Likert of the non-preferred answer in labelled comparisons."
    )
    likert_pointwise: Categorical = Field(description="Likert of pointwise answers.")
    pointwise_better_share: float = Field(
        description="Share of pointwise follow-up queries rated better than the previous one."
    )
    calibration: QuantileTable = Field(
        description="WebGazer calibration precision (percent) per task; quantiles over tasks."
    )
    # --- timing -------------------------------------------------------------------------------
    first_epoch_ms: float = Field(description="Earliest IFLLM shown_at.")
    last_epoch_ms: float = Field(description="Latest IFLLM shown_at.")
    task_gap_s: LogNormal = Field(
        description="Idle time between a task's last sample and the next task's first query; "
        "lognormal fit."
    )
    duration_s: MixedEffect = Field(
        description="Per-query trace duration (first to last gaze sample, seconds); covariates "
        "pairwise and log_chars (log of displayed chars / 1000)."
    )
    median_interval_ms: QuantileTable = Field(
        description="Per-device median gaze sampling interval; quantiles over devices (real "
        "machines cluster at a few rates, e.g. 50 ms, which a lognormal smooths away)."
    )
    interval_shape: QuantileTable = Field(
        description="Sampling interval divided by its device's median, intervals <= 1 s."
    )
    gap_share: float = Field(description="Share of sampling intervals longer than 1 s.")
    gap_ms: LogNormal = Field(description="Length of sampling intervals longer than 1 s.")
    # --- gaze ---------------------------------------------------------------------------------
    gaze_jitter_px: float = Field(
        description="Sample-to-sample WebGazer jitter: robust SD (MAD) of successive gaze "
        "differences / sqrt(2), intervals < 200 ms."
    )
    gaze_offset_px: float = Field(
        description="SD of the slowly varying WebGazer error (one draw per gaze bout). Not "
        "identifiable from traces without ground truth: WebGazer's ~4 degree accuracy "
        "(~170-210 px) from the IFLLM README, not estimated."
    )
    gaze_on_answer: MixedEffect = Field(
        description="Per-query share of gaze samples on an answer panel; covariate pairwise."
    )
    gaze_left_share: MixedEffect = Field(
        description="Pairwise: left share of the on-answer gaze; covariates pref "
        "(+1 left preferred, -1 right, 0 none) and log_len_ratio (log len_left/len_right)."
    )
    gaze_bout_samples: float = Field(
        description="Mean run length (samples) of consecutive gaze samples on the same side."
    )
    completion: MixedEffect = Field(
        description="Reading completion of one answer: 90th percentile of caret offset / "
        "length over on-side gaze samples; covariates pairwise, log_chars (of that "
        "answer) and pref (+1 this answer preferred, -1 the other, 0 none)."
    )
    progression_mean: tuple[float, ...] = Field(
        description="Mean caret position / completion by decile of the sample's rank in time "
        "among that answer's on-side samples (reading moves down the answer)."
    )
    progression_sd: float = Field(description="Residual SD around progression_mean.")
    gaze_no_char_share: float = Field(
        description="Share of on-answer gaze samples without a caret offset (panel margins)."
    )
    panel_left: Box = Field(
        description="Left panel (pairwise): median over devices of the 1-99% gaze box."
    )
    panel_right: Box = Field(
        description="Right panel (pairwise): median over devices of the 1-99% gaze box."
    )
    panel_single: Box = Field(
        description="The one panel (pointwise): median over devices of the 1-99% gaze box."
    )
    gaze_off: Gaussian2D = Field(description="Mean and SD of off-panel gaze positions.")
    # --- camera validity ----------------------------------------------------------------------
    validate_unknown_share: float = Field(
        description="Share of devices whose files have no validate column (September 2025)."
    )
    validate_ratio: BetaDist = Field(
        description="Per-device share of gaze samples with validate=1; beta moment fit."
    )
    validate_bout_samples: float = Field(
        description="Mean run length of equal validate values (samples)."
    )
    # --- mouse ----------------------------------------------------------------------------------
    mouse_rest_samples: float = Field(
        description="Mean run length (samples) of a mouse at rest (position unchanged)."
    )
    mouse_move_samples: float = Field(
        description="Mean run length (samples) of a moving mouse (position changing)."
    )
    mouse_nan_start_share: float = Field(
        description="Share of task-first queries whose mouse starts unknown (no move yet)."
    )
    mouse_on_answer: MixedEffect = Field(
        description="Per-query share of mouse samples on an answer; covariate pairwise."
    )
    mouse_left_share: MixedEffect = Field(
        description="Pairwise: left share of on-answer mouse samples; covariates "
        "pref and log_len_ratio as for gaze."
    )
    mouse_no_char_share: float = Field(
        description="Share of on-answer mouse samples without a caret offset."
    )


@functools.cache
def load_default_params() -> SyntheticParams:
    """The packaged parameters fitted on IFLLM (``fedgaze/data/synthetic_params.json``).

    Read through importlib.resources so it works from an installed wheel as well as a checkout;
    cached (the model is immutable).
    """
    text = resources.files("fedgaze.data").joinpath(PARAMS_RESOURCE).read_text("utf-8")
    return SyntheticParams.model_validate_json(text)


# --------------------------------------------------------------------------------------------
# Small vectorized helpers
# --------------------------------------------------------------------------------------------


def _sigmoid(x: FloatArray) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), np.float64)


def _run_rank(keys: IntArray) -> tuple[IntArray, IntArray]:
    """For rows where equal keys are contiguous: (rank within the run, length of the run)."""
    n = len(keys)
    new = np.r_[True, keys[1:] != keys[:-1]] if n else np.zeros(0, bool)
    starts = np.flatnonzero(new)
    run = np.cumsum(new) - 1
    return np.arange(n) - starts[run], np.diff(np.r_[starts, n])[run]


def _rank_in_query(mask: BoolArray, q: IntArray, bounds: IntArray) -> tuple[IntArray, IntArray]:
    """For time-ordered rows of contiguous queries: rank among the query's ``mask`` rows, count.

    O(n) with cumulative sums (no sort); values on rows outside ``mask`` are meaningless.
    """
    c = np.cumsum(mask)
    before = np.r_[0, c][bounds[:-1]]
    count = np.bincount(q[mask], minlength=len(bounds) - 1)
    return c - 1 - before[q], count[q]


def _group_lower_quantile(values: FloatArray, keys: IntArray, q: float) -> FloatArray:
    """Per row, the ``q`` quantile of its key group's values, "lower" method (no interpolation).

    "lower" puts one sample exactly on the quantile and the rest above it, so scaling by it and
    clipping at the end of the answer keeps the measured (interpolated) quantile intact. One
    argsort of key + value squeezed into [0, 0.5) (keys are integers).
    """
    if len(values) == 0:
        return np.empty(0)
    lo, hi = float(values.min()), float(values.max())
    order = np.argsort(keys + 0.5 * (values - lo) / (hi - lo + 1e-12))
    sk = keys[order]
    new = np.r_[True, sk[1:] != sk[:-1]]
    starts = np.flatnonzero(new)
    sizes = np.diff(np.r_[starts, len(keys)])
    group_q = values[order][starts + np.floor(q * (sizes - 1)).astype(np.int64)]
    out = np.empty(len(values))
    out[order] = group_q[np.cumsum(new) - 1]
    return out


def _bouts(rng: np.random.Generator, n: int, mean_len: float, forced: BoolArray) -> IntArray:
    """Bout id per row: geometric bouts of mean ``mean_len`` rows, new bouts where ``forced``."""
    start = (rng.random(n) < 1.0 / max(mean_len, 1.0)) | forced
    if n:
        start[0] = True
    return np.cumsum(start) - 1


def _reflect(v: FloatArray, lo: FloatArray, hi: FloatArray) -> FloatArray:
    """Fold values into [lo, hi] by mirroring at the edges (keeps jitter inside a panel)."""
    width = np.maximum(hi - lo, 1e-9)
    r = np.mod(v - lo, 2 * width)
    return np.asarray(lo + np.where(r > width, 2 * width - r, r), np.float64)


def _pick_side(u: FloatArray, p_left: FloatArray, p_right: FloatArray) -> npt.NDArray[np.int8]:
    """Side codes from uniforms and per-row probabilities of left and right (rest: none)."""
    side = np.full(len(u), SIDE_NONE, np.int8)
    side[u < p_left] = SIDE_LEFT
    side[(u >= p_left) & (u < p_left + p_right)] = SIDE_RIGHT
    return side


#: Vocabulary of the synthetic answers (plain, topic-neutral English).
_WORD_TEXT = """
the model answer data time people system example value using first result often also
important different process simple common provide support include consider approach
method source energy water health history science language research design market
network program learning training quality feature number change level power local
public general specific practical better several however because while which when
where these those their other many most some each every small large high low new old
good best key main clear useful easy strong early recent typical popular modern classic
game player story city travel food recipe budget plan goal step option choice benefit
risk cost price service product customer team project skill practice habit routine
sleep exercise diet weather season culture music movie book author country region
economy policy law rule right question idea theory evidence study report analysis
factor effect cause growth rate range type form structure function role impact
"""


#: Words in the per-cohort text corpus (~270k characters: far more than the longest answer).
_CORPUS_WORDS = 40_000


def _corpus(rng: np.random.Generator, n_words: int) -> str:
    """Plausible answer-like text: capitalised sentences, some bullet lines and paragraphs."""
    vocab = _WORD_TEXT.split()
    words = np.asarray(vocab, dtype=object)[rng.integers(0, len(vocab), n_words)]
    sentence_end = rng.random(n_words) < 1.0 / 12.0
    starts = np.r_[True, sentence_end[:-1]]
    words[starts] = np.char.capitalize(words[starts].astype(str)).astype(object)
    kind = rng.random(n_words)
    # after a sentence end: mostly a space, sometimes a bullet line or a paragraph break
    sep = np.where(
        sentence_end,
        np.where(kind < 0.75, ". ", np.where(kind < 0.9, ".\n- ", ".\n\n")),
        np.where(kind < 0.04, ", ", " "),
    )
    return "".join((words + sep).tolist())


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


class _Plan:
    """Flat per-query arrays of the whole cohort (queries of a device contiguous, in order)."""

    def __init__(
        self,
        rng: np.random.Generator,
        p: SyntheticParams,
        n_devices: int,
        comparisons_per_device: int | None,
    ) -> None:
        mean_extra, k = p.tasks_extra
        n_tasks = 1 + rng.negative_binomial(k, k / (k + mean_extra), n_devices)
        share = p.pairwise_task_share.sample(rng, n_devices)
        n_pw = rng.binomial(n_tasks, share)
        n_pt = n_tasks - n_pw
        sizes_pt = self._task_sizes(rng, p.queries_per_pointwise_task, n_pt)
        if comparisons_per_device is None:
            sizes_pw = self._task_sizes(rng, p.queries_per_pairwise_task, n_pw)
        else:
            sizes_pw = self._exact_sizes(rng, p, n_devices, comparisons_per_device)
            n_pw = np.bincount(sizes_pw[0], minlength=n_devices)
        # tasks: pairwise and pointwise interleaved in random order within a device
        task_dev = np.r_[sizes_pw[0], sizes_pt[0]]
        task_pw = np.r_[np.ones(len(sizes_pw[0]), bool), np.zeros(len(sizes_pt[0]), bool)]
        task_size = np.r_[sizes_pw[1], sizes_pt[1]]
        order = np.lexsort((rng.random(len(task_dev)), task_dev))
        task_dev, task_pw, task_size = task_dev[order], task_pw[order], task_size[order]
        task_ord = _run_rank(task_dev)[0]
        self.task_id = np.where(task_pw, 2 * task_ord + 1, 2 * task_ord + 2)
        self.task_dev = task_dev
        self.task_pw = task_pw
        # queries
        q_task = np.repeat(np.arange(len(task_dev)), task_size)
        self.n = len(q_task)
        self.n_devices = n_devices
        self.task = q_task
        self.dev = task_dev[q_task]
        self.pw = task_pw[q_task]
        self.first_in_task = np.r_[True, q_task[1:] != q_task[:-1]]
        self.last_in_task = np.r_[q_task[1:] != q_task[:-1], True]
        self.ordinal = _run_rank(self.dev)[0]
        outcome = rng.choice(3, self.n, p=np.asarray(p.pairwise_outcome) / sum(p.pairwise_outcome))
        if comparisons_per_device is not None:
            outcome[:] = 0
        self.labelled = self.pw & (outcome == 0)
        self.tie = self.pw & (outcome == 1)

    @staticmethod
    def _task_sizes(
        rng: np.random.Generator, sizes: Categorical, n_per_device: IntArray
    ) -> tuple[IntArray, IntArray]:
        """(device, query count) of each task, for ``n_per_device`` tasks per device."""
        dev = np.repeat(np.arange(len(n_per_device)), n_per_device)
        return dev, sizes.sample(rng, len(dev)).astype(np.int64)

    @staticmethod
    def _exact_sizes(
        rng: np.random.Generator, p: SyntheticParams, n_devices: int, total: int
    ) -> tuple[IntArray, IntArray]:
        """Pairwise tasks holding exactly ``total`` queries per device (last task truncated)."""
        if total <= 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        dist = p.queries_per_pairwise_task
        per = total // max(int(min(dist.values)), 1) + 1
        sizes = dist.sample(rng, n_devices * per).astype(np.int64)
        sizes = sizes.reshape(n_devices, per)
        start = np.cumsum(sizes, axis=1) - sizes
        keep = start < total
        sizes = np.minimum(sizes, total - start)
        dev = np.broadcast_to(np.arange(n_devices)[:, None], sizes.shape)
        return dev[keep], sizes[keep]


class _Streams:
    """Sample instants of the whole cohort: one continuous stream per device in active time."""

    def __init__(
        self,
        rng: np.random.Generator,
        p: SyntheticParams,
        plan: _Plan,
        duration_ms: FloatArray,
        shown_at: FloatArray,
    ) -> None:
        median = p.median_interval_ms.sample(rng, plan.n_devices)
        active = np.bincount(plan.dev, weights=duration_ms, minlength=plan.n_devices)
        # queries of a device are contiguous and devices in order, so the exclusive cumulative
        # duration is each query's start on one global "active time" axis
        q_start = np.cumsum(duration_ms) - duration_ms
        dev_offset = np.cumsum(active) - active
        mean_shape = float(np.mean(p.interval_shape.ppf(np.linspace(0, 1, 201))))
        t_parts: list[FloatArray] = []
        d_parts: list[IntArray] = []
        reached = np.zeros(plan.n_devices)
        fresh = True
        while True:
            need = np.maximum(active - reached, 0.0)
            if not (need > 0).any():
                break
            count = np.where(need > 0, np.ceil(need / (median * mean_shape) * 1.1) + 16, 0)
            dev = np.repeat(np.arange(plan.n_devices), count.astype(np.int64))
            gap = rng.random(len(dev)) < p.gap_share
            step = np.where(
                gap,
                np.maximum(p.gap_ms.sample(rng, len(dev)), 1000.0),
                median[dev] * p.interval_shape.sample(rng, len(dev)),
            )
            first = np.r_[True, dev[1:] != dev[:-1]]
            if fresh:  # the first sample comes a fraction of an interval after the start
                step[first] *= rng.random(int(first.sum()))
                fresh = False
            csum = np.cumsum(step)
            starts = np.flatnonzero(first)
            within = csum - (csum[starts] - step[starts])[np.cumsum(first) - 1] + reached[dev]
            t_parts.append(within)
            d_parts.append(dev)
            last = np.r_[starts[1:] - 1, len(dev) - 1]  # times rise within a device
            reached = reached.copy()
            reached[dev[last]] = within[last]
        t_active = np.concatenate([np.empty(0), *t_parts])
        s_dev = np.concatenate([np.empty(0, np.int64), *d_parts])
        keep = t_active < active[s_dev]
        t_global = t_active[keep] + dev_offset[s_dev[keep]]
        if len(t_parts) > 1:  # top-up batches come after the first: restore time order
            t_global = np.sort(t_global, kind="stable")
        query = np.searchsorted(q_start, t_global, side="right") - 1
        self.query = query
        self.t_ms = shown_at[query] + (t_global - q_start[query])
        self.n = len(query)
        self.query_start = np.r_[True, query[1:] != query[:-1]][: len(query)]
        self.bounds = np.searchsorted(query, np.arange(plan.n + 1))


def _response_lengths(
    rng: np.random.Generator, p: SyntheticParams, pairwise: BoolArray
) -> tuple[IntArray, IntArray]:
    """Answer lengths (right is 0 for pointwise), from the real pair and pointwise tables.

    A pair is its geometric mean and |log ratio| (Gaussian copula with their real correlation)
    plus which side is longer; a pointwise answer is one draw from its own table.
    """
    n = len(pairwise)
    rho = p.pair_ratio_corr
    z1 = rng.standard_normal(n)
    z2 = rho * z1 + math.sqrt(max(1.0 - rho * rho, 0.0)) * rng.standard_normal(n)
    mean = p.pair_mean_chars.ppf(ndtr(z1))
    half = 0.5 * p.pair_abs_log_ratio.ppf(ndtr(z2))
    half = np.where(rng.random(n) < p.pair_right_longer_share, half, -half)
    left = np.where(pairwise, mean * np.exp(-half), p.pointwise_chars.sample(rng, n))
    right = np.where(pairwise, mean * np.exp(half), 0.0)
    as_int = np.maximum(np.rint(left), 1).astype(np.int64), np.rint(right).astype(np.int64)
    return as_int[0], np.where(pairwise, np.maximum(as_int[1], 1), 0)


def _sentence_starts(corpus: str) -> IntArray:
    """Offsets of the corpus's sentences (a capital letter after whitespace, or offset 0)."""
    b = np.frombuffer(corpus.encode("ascii"), np.uint8)
    upper = (b >= ord("A")) & (b <= ord("Z"))
    return np.flatnonzero(upper & np.r_[True, b[:-1] <= 32])


def _cut(
    corpus: str, starts_at: IntArray, rng: np.random.Generator, lengths: IntArray
) -> list[str]:
    """Texts of exactly the given lengths, cut from the corpus at random ``starts_at`` offsets."""
    lengths = np.minimum(lengths, len(corpus))
    last = np.searchsorted(starts_at, len(corpus) - lengths, side="right")
    starts = starts_at[(rng.random(len(lengths)) * np.maximum(last, 1)).astype(np.int64)]
    return [corpus[s : s + n] for s, n in zip(starts.tolist(), lengths.tolist(), strict=True)]


_QUESTION_STARTS = (
    "What is",
    "How do I",
    "Why does",
    "Can you explain",
    "What are the best",
    "How to improve",
    "Tell me about",
    "Compare",
)


def _prompts(
    corpus: str, starts_at: IntArray, rng: np.random.Generator, lengths: IntArray
) -> list[str]:
    """Question-like prompts of about the given lengths: an opener, corpus words, '?'."""
    openers = rng.integers(0, len(_QUESTION_STARTS), len(lengths)).tolist()
    out = []
    for k, text in zip(openers, _cut(corpus, starts_at, rng, lengths), strict=True):
        opener = _QUESTION_STARTS[k]
        words = "".join(c for c in text.lower() if c.isalpha() or c.isspace()).split()
        ends = np.cumsum([len(w) + 1 for w in words]) - 1  # length of the first k+1 words
        body = " ".join(words[: int(np.searchsorted(ends, len(text) - len(opener) - 2, "right"))])
        out.append(f"{opener} {body}?" if body else f"{opener}?")
    return out


def _likert(
    rng: np.random.Generator, p: SyntheticParams, plan: _Plan, pref: IntArray
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
    plan = _Plan(rng, p, n_devices, comparisons_per_device)
    n, dev = plan.n, plan.dev

    # text
    len_l, len_r = _response_lengths(rng, p, plan.pw)
    len_prompt = np.maximum(np.rint(p.prompt_chars.sample(rng, n)), 3).astype(np.int64)
    corpus = _corpus(rng, _CORPUS_WORDS)
    sentences = _sentence_starts(corpus)

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
    dur_ms = np.rint(np.clip(dur_s, 2.0, 3600.0) * _MS)
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
    gap_after = np.where(plan.last_in_task, np.rint(p.task_gap_s.sample(rng, n) * _MS), 0.0)
    step = dur_ms + gap_after
    csum = np.cumsum(step) - step
    dev_first = np.searchsorted(dev, np.arange(n_devices))
    shown_at = start[dev] + csum - csum[dev_first[dev]]

    streams = _Streams(rng, p, plan, dur_ms, shown_at)
    gaze = _gaze(rng, p, plan, streams, gaze_on, gaze_left, comp, len_l, len_r)
    validate = _validate(rng, p, plan, streams)
    mouse = _mouse(rng, p, plan, streams, mouse_on, mouse_left, len_l, len_r)

    # packing
    texts_l = _cut(corpus, sentences, rng, len_l)
    texts_r = _cut(corpus, sentences, rng, np.maximum(len_r, 1))
    prompts = _prompts(corpus, sentences, rng, len_prompt)
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
            )
        )
    calibration: list[dict[int, float]] = [{} for _ in range(n_devices)]
    for t_dev, t_id, c in zip(
        plan.task_dev.tolist(), plan.task_id.tolist(), calib.tolist(), strict=True
    ):
        calibration[t_dev][t_id] = round(c, 2)
    return tuple(
        Device(device_id=f"synth_{d:03d}", queries=tuple(queries[d]), calibration=calibration[d])
        for d in range(n_devices)
    )


_Trace = tuple[FloatArray, FloatArray, npt.NDArray[np.int8], IntArray]


def _take(trace: _Trace, validate: npt.NDArray[np.int8], t_ms: FloatArray, sl: slice) -> Samples:
    x, y, side, char = trace
    return Samples(
        t_ms=t_ms[sl],
        x=x[sl],
        y=y[sl],
        side=side[sl],
        char_index=char[sl].astype(np.int32),
        validate=validate[sl],
    )


def _boxes(p: SyntheticParams) -> FloatArray:
    """Panel boxes as rows (x0, y0, x1, y1): 0 left, 1 right (pairwise), 2 single (pointwise)."""
    return np.array(
        [[b.x0, b.y0, b.x1, b.y1] for b in (p.panel_left, p.panel_right, p.panel_single)]
    )


def _panel_of(side: npt.NDArray[np.int8], pairwise: BoolArray) -> IntArray:
    """Row of :func:`_boxes` for each row's side, -1 off the answers."""
    panel = np.where(side == SIDE_RIGHT, 1, np.where(pairwise, 0, 2))
    return np.where(side == SIDE_NONE, -1, panel)


def _panel_xy(
    p: SyntheticParams, panel: IntArray, fx: FloatArray, fy: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Positions from relative coordinates (0-1) inside each row's panel (off: NaN)."""
    box = _boxes(p)[np.maximum(panel, 0)]
    x = box[:, 0] + fx * (box[:, 2] - box[:, 0])
    y = box[:, 1] + fy * (box[:, 3] - box[:, 1])
    off = panel < 0
    x[off], y[off] = np.nan, np.nan
    return x, y


def _inside(p: SyntheticParams, x: FloatArray, y: FloatArray, pairwise: BoolArray) -> IntArray:
    """Which panel (row of :func:`_boxes`) each point is in, -1 none; left wins an overlap."""
    panel = np.full(len(x), -1)
    for k in (1, 0, 2):
        x0, y0, x1, y1 = _boxes(p)[k]
        which = pairwise if k < 2 else ~pairwise
        panel[which & (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)] = k
    return panel


def _off_panel(
    rng: np.random.Generator, p: SyntheticParams, pairwise: BoolArray
) -> tuple[FloatArray, FloatArray]:
    """Off-panel positions: the real off-panel spread, mirrored above a panel when inside one."""
    g = p.gaze_off
    x = rng.normal(g.mean_x, g.sd_x, len(pairwise))
    y = rng.normal(g.mean_y, g.sd_y, len(pairwise))
    panel = _inside(p, x, y, pairwise)
    top = _boxes(p)[np.maximum(panel, 0), 1]
    return x, np.where(panel >= 0, 2 * top - y - 1.0, y)


def _gaze(
    rng: np.random.Generator,
    p: SyntheticParams,
    plan: _Plan,
    s: _Streams,
    on_share: FloatArray,
    left_share: FloatArray,
    completion: FloatArray,
    len_l: IntArray,
    len_r: IntArray,
) -> _Trace:
    """Gaze: side bouts, caret offsets progressing through the answer, jittered positions."""
    q = s.query
    bout = _bouts(rng, s.n, p.gaze_bout_samples, s.query_start)
    n_bouts = int(bout[-1]) + 1 if s.n else 0
    bout_q = q[np.searchsorted(bout, np.arange(n_bouts))]
    on, lft = on_share[bout_q], left_share[bout_q]
    side = _pick_side(rng.random(n_bouts), on * lft, on * (1 - lft))[bout]
    is_on = side != SIDE_NONE
    # caret offset: the position progresses through the answer over the time-ordered samples
    # on it (the real curve), scaled so each answer's 90th percentile is its drawn completion
    has_char = is_on & (rng.random(s.n) >= p.gaze_no_char_share)
    right = side == SIDE_RIGHT
    tau = np.zeros(s.n)
    for mask in (has_char & right, has_char & ~right):
        rank, size = _rank_in_query(mask, q, s.bounds)
        tau[mask] = (rank / np.maximum(size - 1, 1))[mask]
    deciles = (np.arange(len(p.progression_mean)) + 0.5) / len(p.progression_mean)
    v = np.interp(tau, deciles, p.progression_mean) + rng.normal(0, p.progression_sd, s.n)
    key = q[has_char] * 3 + side[has_char]
    v[has_char] /= np.maximum(_group_lower_quantile(v[has_char], key, COMPLETION_QUANTILE), 1e-6)
    comp = np.where(right, completion[1][q], completion[0][q])
    length = np.where(right, len_r[q], len_l[q])
    frac = np.clip(comp * v, 0.0, 1.0)
    char = np.rint(frac * length).astype(np.int64)  # the caret may sit after the last char
    char[~has_char] = -1
    # positions: bout centre across the panel, height following the reading position; on an
    # answer add a per-bout WebGazer error and per-sample jitter, folded back into the panel
    pw = plan.pw[q]
    panel = _panel_of(side, pw)
    x, y = _panel_xy(p, panel, rng.random(n_bouts)[bout], frac)
    off_x, off_y = _off_panel(rng, p, plan.pw[bout_q])
    err = rng.normal(0, p.gaze_offset_px, (2, n_bouts))[:, bout] * is_on
    x = np.where(is_on, x, off_x[bout]) + err[0] + rng.normal(0, p.gaze_jitter_px, s.n)
    y = np.where(is_on, y, off_y[bout]) + err[1] + rng.normal(0, p.gaze_jitter_px, s.n)
    box = _boxes(p)[panel[is_on]]
    x[is_on] = _reflect(x[is_on], box[:, 0], box[:, 2])
    y[is_on] = _reflect(y[is_on], box[:, 1], box[:, 3])
    return x, y, side, char


def _validate(
    rng: np.random.Generator, p: SyntheticParams, plan: _Plan, s: _Streams
) -> npt.NDArray[np.int8]:
    """Camera face-box validity: per-device ratio, in runs; -1 for devices without the column."""
    ratio = p.validate_ratio.sample(rng, plan.n_devices)
    unknown = rng.random(plan.n_devices) < p.validate_unknown_share
    bout = _bouts(rng, s.n, p.validate_bout_samples, s.query_start)
    n_bouts = int(bout[-1]) + 1 if s.n else 0
    dev = plan.dev[s.query]
    bout_dev = dev[np.searchsorted(bout, np.arange(n_bouts))]
    good = (rng.random(n_bouts) < ratio[bout_dev]).astype(np.int8)[bout]
    return np.where(unknown[dev], np.int8(-1), good).astype(np.int8)


def _alternating_runs(rng: np.random.Generator, n: int, mean_a: float, mean_b: float) -> BoolArray:
    """Per row, whether it is in a "b" run of an a/b/a/b... sequence of geometric runs."""
    pairs = int(n / max(mean_a + mean_b, 1.0)) + 16
    while True:
        runs = np.empty(2 * pairs, np.int64)
        runs[0::2] = rng.geometric(1.0 / max(mean_a, 1.0), pairs)
        runs[1::2] = rng.geometric(1.0 / max(mean_b, 1.0), pairs)
        ends = np.cumsum(runs)
        if ends[-1] >= n:
            break
        pairs *= 2
    offset = rng.integers(0, runs[0] + runs[1])  # start at a random point of the cycle
    run = np.searchsorted(ends, np.arange(n) + offset, side="right")
    return np.asarray(run % 2 == 1)


def _mouse(
    rng: np.random.Generator,
    p: SyntheticParams,
    plan: _Plan,
    s: _Streams,
    on_share: FloatArray,
    left_share: FloatArray,
    len_l: IntArray,
    len_r: IntArray,
) -> _Trace:
    """Mouse: rests in place, moves in short bursts; unknown (NaN) before the first move.

    Rest positions are drawn per query (on an answer with the query's mouse shares); a move
    glides linearly from the previous rest position to the next one, and its side is the panel
    it passes over. Segments break at every query start (the person clicks the input box).
    """
    q = s.query
    moving = _alternating_runs(rng, s.n, p.mouse_rest_samples, p.mouse_move_samples)
    seg_start = s.query_start | np.r_[True, moving[1:] != moving[:-1]]
    seg = np.cumsum(seg_start) - 1
    first_row = np.flatnonzero(seg_start)
    n_seg = len(first_row)
    seg_q = q[first_row]
    seg_move = moving[first_row]
    seg_pw = plan.pw[seg_q]
    on, lft = on_share[seg_q], left_share[seg_q]
    seg_side = _pick_side(rng.random(n_seg), on * lft, on * (1 - lft))
    x, y = _panel_xy(p, _panel_of(seg_side, seg_pw), rng.random(n_seg), rng.random(n_seg))
    off_x, off_y = _off_panel(rng, p, seg_pw)
    off = seg_side == SIDE_NONE
    x[off], y[off] = off_x[off], off_y[off]
    # moves: glide between the neighbouring rest positions of the same query
    j = np.arange(n_seg)
    prev = np.where((j > 0) & (seg_q[np.maximum(j - 1, 0)] == seg_q), j - 1, j)
    nxt = np.where((j < n_seg - 1) & (seg_q[np.minimum(j + 1, n_seg - 1)] == seg_q), j + 1, j)
    prev = np.where(prev == j, nxt, prev)
    rank, size = _run_rank(seg)
    frac = (rank + 1) / (size + 1)
    row_move = seg_move[seg]
    sx = np.where(row_move, x[prev][seg] + (x[nxt][seg] - x[prev][seg]) * frac, x[seg])
    sy = np.where(row_move, y[prev][seg] + (y[nxt][seg] - y[prev][seg]) * frac, y[seg])
    pw = plan.pw[q]
    panel = np.where(row_move, _inside(p, sx, sy, pw), _panel_of(seg_side, seg_pw)[seg])
    side = np.where(panel == 1, SIDE_RIGHT, np.where(panel >= 0, SIDE_LEFT, SIDE_NONE))
    side = side.astype(np.int8)
    # caret offset under the mouse: its height in the panel
    box = _boxes(p)[np.maximum(panel, 0)]
    length = np.maximum(np.where(panel == 1, len_r[q], len_l[q]), 1)
    rel = np.clip((sy - box[:, 1]) / (box[:, 3] - box[:, 1]), 0.0, 1.0)
    char = np.rint(rel * length).astype(np.int64)
    seg_no_char = rng.random(n_seg) < p.mouse_no_char_share
    char[(panel < 0) | seg_no_char[seg]] = -1
    # the first segment of a task page may come before any move: position unknown
    unknown_seg = (
        s.query_start[first_row]
        & plan.first_in_task[seg_q]
        & (rng.random(n_seg) < p.mouse_nan_start_share)
    )
    unknown = unknown_seg[seg]
    sx[unknown], sy[unknown], side[unknown], char[unknown] = np.nan, np.nan, SIDE_NONE, -1
    return sx, sy, side, char


# --------------------------------------------------------------------------------------------
# Statistics shared by the estimation script, its --check mode and the tests
# --------------------------------------------------------------------------------------------


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
                duration_s=(g.t_ms[-1] - g.t_ms[0]) / _MS if len(g) >= 2 else math.nan,
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
