"""The cohort plan: each device's tasks and queries, as flat per-query arrays.

Cohort shape: number of tasks (1 + negative binomial), pairwise tasks among them
(beta-binomial), queries per task (categorical, separately for pairwise and pointwise). The
number of labelled comparisons per device is therefore very non-IID (0 to > 100), as in IFLLM.
"""

from __future__ import annotations

import numpy as np

from fedgaze.data.synthetic.arrays import IntArray, run_rank
from fedgaze.data.synthetic.params import Categorical, SyntheticParams


class Plan:
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
        task_ord = run_rank(task_dev)[0]
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
        self.ordinal = run_rank(self.dev)[0]
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
