"""Tests of the feature table engine on a small real subset (skipped without the real data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fedgaze.data.ifllm import labelled_comparison_counts, load_ifllm, query_counts
from fedgaze.data.ifllm_subset import write_subset
from fedgaze.data.schema import Device
from fedgaze.features import v2 as current
from fedgaze.features.table import (
    KEY_COLUMNS,
    FeatureTable,
    _device_rows,
    _empty_frame,
    compute_feature_table,
    feature_columns,
    plan_chunks,
    write_feature_table,
)
from shared_data import IFLLM_ROOT


@pytest.fixture(scope="module")
def subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An IFLLM-format folder with the 4 smallest workers that have labelled comparisons."""
    if not IFLLM_ROOT.is_dir():
        pytest.skip(f"real IFLLM data not found at {IFLLM_ROOT}")
    labelled = labelled_comparison_counts(IFLLM_ROOT)
    sizes = query_counts(IFLLM_ROOT)
    small = sorted((w for w, n in labelled.items() if n > 0), key=lambda w: (sizes[w], w))[:4]
    return write_subset(IFLLM_ROOT, small, tmp_path_factory.mktemp("subset"))


@pytest.fixture(scope="module")
def table(subset: Path) -> FeatureTable:
    return compute_feature_table(subset, jobs=1)


@pytest.mark.realdata
def test_columns_and_rows(subset: Path, table: FeatureTable) -> None:
    frame = table.frame
    assert frame.columns[0] == "query_ID"
    assert frame.columns == [*KEY_COLUMNS, *feature_columns(current.SIDE_FEATURE_NAMES)]
    assert frame.columns[4:6] == [
        f"left_{current.SIDE_FEATURE_NAMES[0]}",
        f"right_{current.SIDE_FEATURE_NAMES[0]}",
    ]
    ds = load_ifllm(subset)
    expected = {
        q.query_id: (d.device_id, q)
        for d in ds.devices
        for q in d.queries
        if q.pairwise and q.response_right is not None
    }
    assert frame["query_ID"].to_list() == sorted(expected)
    for row in frame.select(KEY_COLUMNS).iter_rows(named=True):
        worker, q = expected[row["query_ID"]]
        assert (row["worker"], row["task_id"]) == (worker, q.task_id)
        assert row["label_right"] == (q.label_right if q.is_labelled_comparison else None)
    assert frame["label_right"].null_count() < len(frame)
    # the features are the device's scoring matrix, left and right rows side by side
    device = ds.devices[0]
    matrix = current.featurize_device(device, scoring=True)
    mine = frame.filter(pl.col("worker") == device.device_id)
    assert np.array_equal(mine["query_ID"].to_numpy(), matrix.query_ids)
    for k, name in enumerate(current.SIDE_FEATURE_NAMES):
        assert np.array_equal(mine[f"left_{name}"].to_numpy(), matrix.X[:, 0, k])
        assert np.array_equal(mine[f"right_{name}"].to_numpy(), matrix.X[:, 1, k])
    assert table.samples == ds.stats["samples_gaze"] + ds.stats["samples_mouse"] > 0
    assert table.problems == ds.problems and dict(table.stats) == dict(ds.stats)


@pytest.mark.realdata
def test_jobs_do_not_change_the_table(subset: Path, table: FeatureTable) -> None:
    two = compute_feature_table(subset, jobs=2)
    assert two.frame.equals(table.frame)
    assert two.problems == table.problems and dict(two.stats) == dict(table.stats)
    chunks = plan_chunks(subset, sorted(table.frame["worker"].unique()), 2)
    assert len(chunks) == 2 and all(chunks)
    one = compute_feature_table(subset, jobs=1, workers=chunks[0])
    assert set(one.frame["worker"]) == set(chunks[0])
    assert one.frame.equals(table.frame.filter(pl.col("worker").is_in(chunks[0])))


@pytest.mark.realdata
def test_write_round_trips(table: FeatureTable, tmp_path: Path) -> None:
    parquet = write_feature_table(table, tmp_path / "features.parquet")
    assert pl.read_parquet(parquet).equals(table.frame)
    csv = write_feature_table(table, tmp_path / "features.csv")
    back = pl.read_csv(csv, schema=table.frame.schema)
    assert back.equals(table.frame)
    assert csv.read_text().split(",", 1)[0] == "query_ID"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.csv", "features.parquet"]


def test_device_without_comparisons() -> None:
    empty = _device_rows(Device(device_id="worker_none", queries=()))
    assert empty.height == 0 and empty.schema == _empty_frame().schema


def test_bad_arguments(tmp_path: Path) -> None:
    frame = pl.DataFrame({"query_ID": [1]})
    with pytest.raises(ValueError, match=r"\.parquet, \.csv"):
        write_feature_table(frame, tmp_path / "features.xlsx")
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="jobs"):
        compute_feature_table(tmp_path, jobs=0)


@pytest.mark.realdata
def test_unknown_worker(subset: Path) -> None:
    with pytest.raises(KeyError, match="worker_nobody"):
        compute_feature_table(subset, jobs=1, workers=["worker_nobody"])
