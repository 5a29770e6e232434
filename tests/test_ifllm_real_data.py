"""IFLLM loader on the real data set (skipped when ``../shared/datasets/ifllm`` is absent)."""

from __future__ import annotations

import csv
import gzip
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from fedgaze.data.ifllm import BEHAVIOR_DIR, IfllmDataset, load_ifllm
from fedgaze.data.ifllm.context import _Sink
from fedgaze.data.ifllm.layouts import _REL6, _REL7
from fedgaze.data.ifllm.traces import _read_trace
from fedgaze.data.schema import SIDE_LEFT, SIDE_NONE, SIDE_RIGHT
from ifllm_builders import HOUR_MS
from shared_data import IFLLM_ROOT

DATA = IFLLM_ROOT


@pytest.fixture(scope="module")
def ifllm_root() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real IFLLM data not found at {DATA}")
    return DATA


@pytest.fixture(scope="module")
def full(ifllm_root: Path) -> IfllmDataset:
    return load_ifllm(ifllm_root)


def lines_of(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        return fh.read().split("\n")[:-1]


def page_samples(ds: IfllmDataset, worker: str, task: int, kind: str) -> np.ndarray:
    return np.concatenate(
        [getattr(q, kind).validate for q in ds.device(worker).queries if q.task_id == task]
    )


@pytest.mark.realdata
def test_real_full_load_counts(full: IfllmDataset) -> None:
    assert len(full.devices) == 73
    assert [d.device_id for d in full.devices] == sorted(d.device_id for d in full.devices)
    assert sum(len(d.queries) for d in full.devices) == 1399
    assert sum(len(d.comparisons()) for d in full.devices) == 638
    assert full.stats["samples_gaze"] == full.stats["samples_mouse"] > 1_000_000
    assert full.problem_counts() == {"bad timestamp": 2, "unaligned rows": 4, "orphan folder": 4}
    shown = [q.shown_at_ms for d in full.devices for q in d.queries]
    assert sum(s is None for s in shown) == 2


@pytest.mark.realdata
def test_real_attribution_sanity(full: IfllmDataset) -> None:
    consistent = total = 0
    for q in (q for d in full.devices for q in d.queries):
        for s in (q.gaze, q.mouse):
            lens = np.select(
                [s.side == SIDE_LEFT, s.side == SIDE_RIGHT],
                [len(q.response_left), len(q.response_right or "")],
                -1,
            )
            has = (s.char_index >= 0) & (s.side != SIDE_NONE)
            total += int(has.sum())
            consistent += int((s.char_index[has] <= lens[has]).sum())
            assert np.all(np.diff(s.t_ms) >= 0)
    assert total > 1_000_000 and consistent / total >= 0.99
    stats = full.stats
    assert stats["evidence_contradicts_time"] / stats["evidence_samples"] < 0.02
    assert stats["evidence_contradicts_final"] < stats["evidence_contradicts_time"]


def raw_timestamps(root: Path) -> dict[int, float]:
    """query_ID -> query_timestamp as logged (UTC ms), read independently of the loader."""
    with gzip.open(root / "query_logs_table.csv.gz", "rt", encoding="utf-8", newline="") as fh:
        return {
            int(r["query_ID"]): datetime.strptime(r["query_timestamp"], "%Y-%m-%d %H:%M:%S")
            .replace(tzinfo=UTC)
            .timestamp()
            * 1000
            for r in csv.DictReader(fh)
            if not r["query_timestamp"].startswith("0000")
        }


@pytest.mark.realdata
def test_real_four_hour_offset(full: IfllmDataset, ifllm_root: Path) -> None:
    raw = raw_timestamps(ifllm_root)
    device = full.device("worker_6129fc84")
    for task, offset in ((85, 4 * HOUR_MS), (73, 4 * HOUR_MS), (82, 0), (67, 0)):
        queries = [q for q in device.queries if q.task_id == task]
        first_epoch = float(
            lines_of(
                ifllm_root / BEHAVIOR_DIR / "worker_6129fc84" / str(task) / "abs_mouse.csv.gz"
            )[0].split(",")[3]
        )
        for q in queries:
            assert q.shown_at_ms is not None
            assert raw[q.query_id] - q.shown_at_ms == offset
            # corrected timestamps fall inside the traces, each answer gets its own samples
            assert 0 < q.shown_at_ms - first_epoch < 10 * 60_000
            assert q.shown_at_ms <= q.gaze.t_ms.min() < q.shown_at_ms + 5_000
    assert full.stats["pages_offset_corrected"] == 42


@pytest.mark.realdata
def test_real_six_and_seven_column_files(ifllm_root: Path) -> None:
    ds = load_ifllm(ifllm_root, workers=["worker_191ee47f", "worker_f972316e"])
    six = page_samples(ds, "worker_191ee47f", 83, "gaze")  # September 2025: no validate
    seven = page_samples(ds, "worker_f972316e", 183, "gaze")
    assert len(six) > 3000 and np.all(six == -1)
    assert len(seven) > 1000 and set(np.unique(seven)) <= {0, 1}
    first = lines_of(ifllm_root / BEHAVIOR_DIR / "worker_191ee47f/83/rel_gaze_one.csv.gz")[0]
    assert first.count(",") == 5


@pytest.mark.realdata
def test_real_quirky_snippets(ifllm_root: Path) -> None:
    path = ifllm_root / BEHAVIOR_DIR / "worker_61e55ed0/208/rel_gaze.csv.gz"
    sink = _Sink(ifllm_root)
    frame, layout = _read_trace(path, [_REL7, _REL6], sink)
    assert layout is _REL7 and sink.problems == []
    assert len(frame) == len(lines_of(path))
    rows = {int(r["line"]): r for r in frame.iter_rows(named=True)}
    assert rows[937]["snip"] == 'hip-hop, EDM with "' and rows[937]["e"] == 1763445796598
    assert rows[937]["ci"] == 443
    assert rows[1065]["snip"] == '"s**: DDU-DU DDU-DU",' and rows[1065]["ci"] == 565
    assert rows[1186]["snip"] == "019, 2023)" and rows[1186]["ci"] == 780


@pytest.mark.realdata
def test_real_duplicated_abs_gaze_and_sentinels(full: IfllmDataset, ifllm_root: Path) -> None:
    folder = ifllm_root / BEHAVIOR_DIR / "worker_f972316e/183"
    n_mouse = len(lines_of(folder / "abs_mouse.csv.gz"))
    assert len(lines_of(folder / "abs_gaze.csv.gz")) == 2 * n_mouse
    queries = [q for q in full.device("worker_f972316e").queries if q.task_id == 183]
    assert [len(q.gaze) for q in queries] == [len(q.mouse) for q in queries]
    for q in queries:  # same instants: the two abs files differ by a few ms at most
        assert np.abs(q.gaze.t_ms - q.mouse.t_ms).max() < 50
    assert full.stats["abs_gaze_duplicate_rows_dropped"] > 800_000
    assert full.stats["abs_mouse_duplicate_rows_dropped"] == 0
    # -1,-1 mouse rows exist (before the first move) but never reach Samples as coordinates
    raw = lines_of(ifllm_root / BEHAVIOR_DIR / "worker_0ddfe023/200/abs_mouse.csv.gz")
    assert sum(r.startswith("-1,-1,") for r in raw) > 0
    mouse = [q.mouse for d in full.devices for q in d.queries]
    assert not any(((m.x == -1) & (m.y == -1)).any() for m in mouse)
    # rel -1,-1 means off that panel: all three sides occur
    sides = np.concatenate([m.side for m in mouse])
    assert {SIDE_NONE, SIDE_LEFT, SIDE_RIGHT} <= set(np.unique(sides).tolist())


@pytest.mark.realdata
def test_real_csv_and_gz_copies_agree(ifllm_root: Path, tmp_path: Path) -> None:
    worker = "worker_f972316e"
    copies = {}
    for name, unzip in (("gz", False), ("csv", True)):
        root = tmp_path / name
        shutil.copytree(ifllm_root / BEHAVIOR_DIR / worker, root / BEHAVIOR_DIR / worker)
        for table in ("query_logs_table", "task_table"):
            shutil.copy(ifllm_root / f"{table}.csv.gz", root)
        if unzip:
            for gz in root.rglob("*.csv.gz"):
                gz.with_name(gz.name[:-3]).write_bytes(gzip.decompress(gz.read_bytes()))
                gz.unlink()
        copies[name] = load_ifllm(root, workers=[worker])
    a, b = copies["gz"].device(worker), copies["csv"].device(worker)
    assert a.calibration == b.calibration and len(a.queries) == len(b.queries) == 6
    for qa, qb in zip(a.queries, b.queries, strict=True):
        assert qa.shown_at_ms == qb.shown_at_ms and qa.response_left == qb.response_left
        for kind in ("gaze", "mouse"):
            sa, sb = getattr(qa, kind), getattr(qb, kind)
            assert len(sa) > 0
            for col in ("t_ms", "x", "y", "side", "char_index", "validate"):
                assert np.array_equal(getattr(sa, col), getattr(sb, col), equal_nan=True)
    assert [p.reason for p in copies["gz"].problems] == [p.reason for p in copies["csv"].problems]
