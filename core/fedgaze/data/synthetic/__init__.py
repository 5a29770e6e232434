"""Synthetic cohort: devices with gaze/mouse traces, answers and preference labels.

The embedded default data source for demos and tests that must run without the IFLLM files. It
produces the same in-memory schema as the IFLLM loader (:class:`~fedgaze.data.schema.Device`
holding :class:`~fedgaze.data.schema.Query` objects with gaze and mouse
:class:`~fedgaze.data.schema.Samples`), with every distribution fitted to the real data by
``scripts/estimate_synthetic_params.py`` and stored in ``synthetic_params.json`` in this
package. Each parameter's ``description`` names the IFLLM statistic it was estimated from.

Model, per device (one simulated person); each module's docstring gives the details:

- Cohort shape (``plan``): tasks, pairwise tasks among them and queries per task, so the number
  of labelled comparisons per device is very non-IID, as in IFLLM.
- Text (``text``): answer and prompt lengths from the real tables, text cut from a corpus.
- Labels and behaviour (``cohort``): longer answers win; per-query Gaussian-copula mixed models
  give durations, answer shares and reading completion, weakly linked to preference.
- Traces: sample instants (``streams``), gaze (``gaze``), camera validity (``validity``) and
  mouse (``mouse``) over the answer panels (``panels``), on a realistic epoch-ms clock.

The parameter model and the packaged parameters are in ``params``; ``stats`` holds the
statistics shared by the estimation script, its ``--check`` mode and the tests, and ``fit`` the
script's fitting helpers (not imported here: it loads scipy.optimize). All generation is
vectorized over the whole cohort; only the final packing into ``Query`` objects loops (once
per query).
"""

from fedgaze.data.synthetic.arrays import BoolArray, FloatArray, IntArray
from fedgaze.data.synthetic.cohort import generate_cohort
from fedgaze.data.synthetic.params import (
    COMPLETION_MIN_SAMPLES,
    COMPLETION_QUANTILE,
    PARAMS_RESOURCE,
    BetaDist,
    Box,
    Categorical,
    Gaussian2D,
    Logistic,
    LogNormal,
    MixedEffect,
    Provenance,
    QuantileTable,
    SyntheticParams,
    load_default_params,
)
from fedgaze.data.synthetic.stats import (
    MARGINALS,
    compare_marginals,
    completion_of,
    label_right_share,
    marginals,
    query_rows,
    sampling_intervals,
)

__all__ = [
    "COMPLETION_MIN_SAMPLES",
    "COMPLETION_QUANTILE",
    "MARGINALS",
    "PARAMS_RESOURCE",
    "BetaDist",
    "BoolArray",
    "Box",
    "Categorical",
    "FloatArray",
    "Gaussian2D",
    "IntArray",
    "LogNormal",
    "Logistic",
    "MixedEffect",
    "Provenance",
    "QuantileTable",
    "SyntheticParams",
    "compare_marginals",
    "completion_of",
    "generate_cohort",
    "label_right_share",
    "load_default_params",
    "marginals",
    "query_rows",
    "sampling_intervals",
]
