"""The synthetic cohort's parameter model and the packaged parameters fitted on IFLLM.

``scripts/estimate_synthetic_params.py`` estimates every field of :class:`SyntheticParams` from
IFLLM and stores them in ``synthetic_params.json`` next to this module; each parameter's
``description`` names the IFLLM statistic it was estimated from.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib import resources

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field
from scipy.special import ndtr

from fedgaze.data.synthetic.arrays import FloatArray, IntArray, sigmoid

PARAMS_RESOURCE = "synthetic_params.json"

#: Minimum on-side gaze samples with a caret offset for a reading-completion value.
COMPLETION_MIN_SAMPLES = 5
#: Quantile of the caret position (as a share of the answer) that defines reading completion.
COMPLETION_QUANTILE = 0.9


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
        return sigmoid(eta)


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
    """The packaged parameters fitted on IFLLM (``fedgaze/data/synthetic/synthetic_params.json``).

    Read through importlib.resources so it works from an installed wheel as well as a checkout;
    cached (the model is immutable).
    """
    text = resources.files("fedgaze.data.synthetic").joinpath(PARAMS_RESOURCE).read_text("utf-8")
    return SyntheticParams.model_validate_json(text)
