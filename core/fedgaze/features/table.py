"""The feature table of an IFLLM-format directory: one row per pairwise comparison.

``compute_feature_table`` featurizes every pairwise query with a right answer (labelled or not)
of every worker, the way a device does before scoring, and returns them as one table:
``query_ID`` first, then ``worker``, ``task_id``, ``label_right`` (1 when the right answer was
preferred, 0 the left, null when unlabelled or a tie), then ``left_<f>`` and ``right_<f>`` for
each per-side feature ``f`` of the current feature set.  Rows are sorted by ``query_ID``, so
the table does not depend on how the work was split.

Work is split by worker (device) over ``jobs`` processes (``spawn`` context), each loading its
workers one device at a time with :func:`fedgaze.data.ifllm.iter_devices`, so memory per
process is bounded by its largest device.  Workers are assigned to processes greedily by their
query counts (loading cost) and labelled comparisons (featurization cost) from the query table.
``jobs=1`` runs in this process.  Callers that use ``jobs > 1`` from a script need the usual
``if __name__ == "__main__":`` guard (spawned processes import the main module).
"""

from __future__ import annotations

import io
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from types import MappingProxyType

import numpy as np
import polars as pl

from fedgaze.atomic import write_bytes_atomic
from fedgaze.data.ifllm import (
    iter_devices,
    labelled_comparison_counts,
    list_workers,
    query_counts,
)
from fedgaze.data.schema import Device, Problem
from fedgaze.features import v2 as current  # the feature set of the table

__all__ = [
    "KEY_COLUMNS",
    "SUFFIXES",
    "FeatureTable",
    "compute_feature_table",
    "feature_columns",
    "plan_chunks",
    "write_feature_table",
]

SUFFIXES = (".parquet", ".csv")
"""File suffixes :func:`write_feature_table` writes."""

KEY_COLUMNS = ("query_ID", "worker", "task_id", "label_right")
"""The columns before the features, in order."""


@dataclass(frozen=True)
class FeatureTable:
    """Per-comparison features of a directory, plus what loading it reported.

    ``frame`` has the columns described in the module docstring; ``problems`` lists the
    problems of the tables, then of each worker in id order; ``stats`` sums the loader's
    counters over all workers (``samples_gaze`` + ``samples_mouse`` = samples processed).
    """

    frame: pl.DataFrame
    problems: tuple[Problem, ...]
    stats: Mapping[str, int] = field(default_factory=dict)
    feature_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "stats", MappingProxyType(dict(self.stats)))

    def __len__(self) -> int:
        return self.frame.height

    @property
    def samples(self) -> int:
        """Gaze plus mouse samples attributed to queries while loading."""
        return int(self.stats.get("samples_gaze", 0) + self.stats.get("samples_mouse", 0))


def feature_columns(names: Sequence[str]) -> list[str]:
    """The feature column names, in table order: ``left_<f>``, ``right_<f>`` per feature."""
    return [f"{side}_{name}" for name in names for side in ("left", "right")]


def compute_feature_table(
    data_dir: str | Path, *, jobs: int, workers: Sequence[str] | None = None
) -> FeatureTable:
    """Featurize every pairwise comparison with a right answer of ``data_dir`` (an
    IFLLM-format directory), for all workers or only ``workers``, over ``jobs`` processes.

    Raises ValueError for ``jobs < 1``, KeyError naming workers not in the query log, and
    whatever :func:`fedgaze.data.ifllm.iter_devices` raises for a bad directory.  The result
    does not depend on ``jobs``.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    root = Path(data_dir)
    known = list_workers(root)
    chosen = known if workers is None else sorted(set(workers))
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise KeyError(f"unknown worker(s) {unknown} (not in the query log of {root})")
    chunks = plan_chunks(root, chosen, jobs)
    if len(chunks) <= 1:
        parts = [_featurize_chunk(str(root), chunks[0] if chunks else [])]
    else:
        with (
            _child_threads(len(chunks)),
            ProcessPoolExecutor(max_workers=len(chunks), mp_context=get_context("spawn")) as pool,
        ):
            parts = list(pool.map(_featurize_chunk, [str(root)] * len(chunks), chunks))
    return _merge(parts)


def plan_chunks(root: str | Path, workers: Sequence[str], jobs: int) -> list[list[str]]:
    """Split ``workers`` into at most ``jobs`` non-empty chunks of about equal cost.

    Cost of a worker: its queries (loading) plus its labelled comparisons (featurization),
    from the query table; greedy, largest first, onto the cheapest chunk so far.
    """
    if not workers:
        return []
    totals, labelled = query_counts(root), labelled_comparison_counts(root)
    cost = {w: totals.get(w, 0) + labelled.get(w, 0) for w in workers}
    n = min(jobs, len(workers))
    chunks: list[list[str]] = [[] for _ in range(n)]
    load = [0] * n
    for worker in sorted(workers, key=lambda w: (-cost[w], w)):
        target = min(range(n), key=lambda i: (load[i], i))
        chunks[target].append(worker)
        load[target] += cost[worker]
    return [sorted(chunk) for chunk in chunks]


@dataclass(frozen=True)
class _Chunk:
    """What one process computed for its workers."""

    frame: pl.DataFrame
    table_problems: tuple[Problem, ...]
    problems: dict[str, list[Problem]]
    stats: dict[str, int]


def _featurize_chunk(root: str, workers: Sequence[str]) -> _Chunk:
    """Load ``workers`` one device at a time and featurize their comparisons."""
    stats: Counter[str] = Counter()
    stream = iter_devices(root, workers, stats=stats)
    frames: list[pl.DataFrame] = []
    problems: dict[str, list[Problem]] = {}
    for device, found in stream:
        frames.append(_device_rows(device))
        problems[device.device_id] = found
    frame = pl.concat(frames) if frames else _empty_frame()
    return _Chunk(frame, stream.table_problems, problems, dict(stats))


def _device_rows(device: Device) -> pl.DataFrame:
    """The table rows of one device's comparisons."""
    matrix = current.featurize_device(device, scoring=True)
    task = {q.query_id: q.task_id for q in device.queries}
    ids = np.asarray(matrix.query_ids, dtype=np.int64)
    y = np.asarray(matrix.y, dtype=np.float64)
    x = np.asarray(matrix.X, dtype=np.float64).reshape(len(ids), 2, current.N_SIDE_FEATURES)
    columns: dict[str, pl.Series] = {
        "query_ID": pl.Series(ids, dtype=pl.Int64),
        "worker": pl.Series([device.device_id] * len(ids), dtype=pl.String),
        "task_id": pl.Series([task[int(i)] for i in ids], dtype=pl.Int64),
        "label_right": pl.Series(
            [None if np.isnan(v) else int(v) for v in y.tolist()], dtype=pl.Int64
        ),
    }
    for k, name in enumerate(current.SIDE_FEATURE_NAMES):
        columns[f"left_{name}"] = pl.Series(x[:, 0, k], dtype=pl.Float64)
        columns[f"right_{name}"] = pl.Series(x[:, 1, k], dtype=pl.Float64)
    return pl.DataFrame(columns)


def _empty_frame() -> pl.DataFrame:
    schema: dict[str, type[pl.DataType]] = {
        "query_ID": pl.Int64,
        "worker": pl.String,
        "task_id": pl.Int64,
        "label_right": pl.Int64,
    }
    schema.update(dict.fromkeys(feature_columns(current.SIDE_FEATURE_NAMES), pl.Float64))
    return pl.DataFrame(schema=schema)


def _merge(parts: Sequence[_Chunk]) -> FeatureTable:
    """One table from the chunks: rows by query_ID, table problems once, then per worker."""
    frame = pl.concat([p.frame for p in parts]) if parts else _empty_frame()
    problems: list[Problem] = list(parts[0].table_problems) if parts else []
    by_worker = {w: found for p in parts for w, found in p.problems.items()}
    for worker in sorted(by_worker):
        problems += by_worker[worker]
    stats: Counter[str] = Counter()
    for p in parts:
        stats.update(p.stats)
    return FeatureTable(
        frame=frame.sort("query_ID"),
        problems=tuple(problems),
        stats=dict(stats),
        feature_names=tuple(current.SIDE_FEATURE_NAMES),
    )


@contextmanager
def _child_threads(processes: int) -> Iterator[None]:
    """Let each spawned process's polars use its share of the cores (unless the caller chose
    ``POLARS_MAX_THREADS``), instead of every process using all of them."""
    key = "POLARS_MAX_THREADS"
    if key in os.environ:
        yield
        return
    os.environ[key] = str(max(1, (os.cpu_count() or 1) // processes))
    try:
        yield
    finally:
        os.environ.pop(key, None)


def write_feature_table(table: FeatureTable | pl.DataFrame, path: str | Path) -> Path:
    """Write the table to ``path`` atomically: Parquet for ``.parquet``, CSV for ``.csv``.

    Any other suffix raises ValueError naming the supported ones.  Returns the path.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"cannot write a feature table to {target}: unsupported suffix {target.suffix!r}; "
            f"use one of {', '.join(SUFFIXES)}"
        )
    frame = table.frame if isinstance(table, FeatureTable) else table
    buffer = io.BytesIO()
    if suffix == ".parquet":
        frame.write_parquet(buffer)
    else:
        frame.write_csv(buffer)
    write_bytes_atomic(target, buffer.getvalue())
    return target
