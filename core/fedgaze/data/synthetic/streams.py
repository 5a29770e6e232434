"""Sample instants: one sampling stream per device in active time, cut into query windows.

Per-device sampling rate with the real within-device interval shape and rare gaps over 1 s.
Every sample lies in [shown_at, next shown_at) of its query; gaze and mouse share instants.
"""

from __future__ import annotations

import numpy as np

from fedgaze.data.synthetic.arrays import FloatArray, IntArray
from fedgaze.data.synthetic.params import SyntheticParams
from fedgaze.data.synthetic.plan import Plan


class Streams:
    """Sample instants of the whole cohort: one continuous stream per device in active time."""

    def __init__(
        self,
        rng: np.random.Generator,
        p: SyntheticParams,
        plan: Plan,
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
