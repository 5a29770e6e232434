"""Camera validity of the samples: WebGazer's face box good or not, per device in runs."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedgaze.data.synthetic.arrays import bouts
from fedgaze.data.synthetic.params import SyntheticParams
from fedgaze.data.synthetic.plan import Plan
from fedgaze.data.synthetic.streams import Streams


def camera_validity(
    rng: np.random.Generator, p: SyntheticParams, plan: Plan, s: Streams
) -> npt.NDArray[np.int8]:
    """Camera face-box validity: per-device ratio, in runs; -1 for devices without the column."""
    ratio = p.validate_ratio.sample(rng, plan.n_devices)
    unknown = rng.random(plan.n_devices) < p.validate_unknown_share
    bout = bouts(rng, s.n, p.validate_bout_samples, s.query_start)
    n_bouts = int(bout[-1]) + 1 if s.n else 0
    dev = plan.dev[s.query]
    bout_dev = dev[np.searchsorted(bout, np.arange(n_bouts))]
    good = (rng.random(n_bouts) < ratio[bout_dev]).astype(np.int8)[bout]
    return np.where(unknown[dev], np.int8(-1), good).astype(np.int8)
