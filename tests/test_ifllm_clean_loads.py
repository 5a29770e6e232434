"""IFLLM loader on clean synthetic pages: the API, its errors, and what a clean load gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedgaze.data.ifllm import list_workers, load_ifllm
from fedgaze.data.schema import SIDE_LEFT, SIDE_NONE
from ifllm_builders import (
    HOUR_MS,
    QUERY_HEADER,
    Page,
    build,
    edit_lines,
    n_attributed,
    page_dir,
    page_queries,
    write,
    write_table,
)


def test_missing_root_and_tables_raise_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_ifllm(tmp_path / "nowhere")
    root = build(tmp_path, [Page()])
    (root / "task_table.csv").unlink()
    with pytest.raises(FileNotFoundError, match="task_table"):
        load_ifllm(root)
    (root / "query_logs_table.csv").unlink()
    with pytest.raises(FileNotFoundError, match="query_logs_table"):
        list_workers(root)


def test_missing_columns_and_unknown_workers_raise(tmp_path: Path) -> None:
    root = build(tmp_path, [Page()])
    with pytest.raises(KeyError, match="worker_zzzz"):
        load_ifllm(root, workers=["worker_zzzz"])
    write(root / "query_logs_table.csv", "query_ID,user_id\n1,worker_aaaa\n", gz=False)
    with pytest.raises(ValueError, match="query_timestamp"):
        load_ifllm(root)


def test_clean_pairwise_page(tmp_path: Path) -> None:
    page = Page()
    root = build(tmp_path, [page, Page(worker="worker_bbbb", first_id=10)])
    assert list_workers(root) == ["worker_aaaa", "worker_bbbb"]
    ds = load_ifllm(root, workers=["worker_aaaa"])
    assert [d.device_id for d in ds.devices] == ["worker_aaaa"]
    assert ds.problems == ()
    queries = page_queries(ds, page)
    assert [q.query_id for q in queries] == [1, 2, 3]
    assert all(q.pairwise for q in queries)
    assert [q.preference for q in queries] == [1, 2, 1]
    assert queries[0].likert_left == 4.0 and queries[0].likert_right == 3.0
    assert [q.shown_at_ms for q in queries] == list(page.shown)
    assert len(ds.devices[0].comparisons()) == 3
    assert ds.devices[0].calibration == {1: 77.0}
    gaze = [q.gaze for q in queries]
    mouse = [q.mouse for q in queries]
    # duplicated abs_gaze batches are dropped: gaze matches mouse 1:1
    assert [len(g) for g in gaze] == [len(m) for m in mouse]
    assert sum(len(g) for g in gaze) == n_attributed(page)
    assert ds.stats["abs_gaze_duplicate_rows_dropped"] == len(page.times)
    for g in gaze:
        assert np.all(g.side == SIDE_LEFT) and np.all(g.validate == 1)
        assert np.all(g.x == 300.5) and np.all(np.diff(g.t_ms) >= 0)
    assert np.all(np.concatenate([m.side for m in mouse]) == SIDE_NONE)
    # samples before the first answer are dropped, not attributed
    assert gaze[0].t_ms.min() >= page.shown[0]


def test_mouse_sentinel_becomes_nan(tmp_path: Path) -> None:
    page = Page()
    root = build(tmp_path, [page])
    first = int(np.searchsorted(page.times, page.shown[0] + page.lag_ms))  # first attributed
    edit_lines(
        page_dir(root, page) / "abs_mouse.csv",
        lambda ls: [
            ("-1,-1," + r.split(",", 2)[2]) if i < first + 5 else r for i, r in enumerate(ls)
        ],
    )
    mouse = page_queries(load_ifllm(root), page)[0].mouse
    assert np.isnan(mouse.x[:5]).all() and np.isnan(mouse.y[:5]).all()
    assert not np.isnan(mouse.x[5:]).any() and np.all(mouse.x[5:] == 100)


def test_pointwise_page_and_kind_from_files(tmp_path: Path) -> None:
    page = Page(task=7, pairwise=False)  # odd task id, but the folder holds pointwise files
    ds = load_ifllm(build(tmp_path, [page]))
    queries = page_queries(ds, page)
    assert not any(q.pairwise for q in queries)
    assert [q.preference for q in queries] == [None, 1, 1]
    assert queries[0].response_right is None
    assert ds.devices[0].comparisons() == ()
    assert all(np.all(q.gaze.side == SIDE_LEFT) for q in queries)
    assert ds.problems == ()


def test_missing_folder_gives_empty_samples(tmp_path: Path) -> None:
    page = Page()
    ds = load_ifllm(build(tmp_path, [page], folders=False))
    queries = page_queries(ds, page)
    assert len(queries) == 3 and all(len(q.gaze) == len(q.mouse) == 0 for q in queries)
    assert all(q.pairwise for q in queries)  # falls back to llm_response_2
    assert [p.reason.split(":")[0] for p in ds.problems] == ["missing folder"]


def test_six_column_rel_files_have_unknown_validate(tmp_path: Path) -> None:
    page = Page(six_columns=True)
    ds = load_ifllm(build(tmp_path, [page]))
    gaze = np.concatenate([q.gaze.validate for q in page_queries(ds, page)])
    assert len(gaze) == n_attributed(page) and np.all(gaze == -1)
    assert ds.problems == ()


def test_four_hour_offset_in_query_log_is_removed(tmp_path: Path) -> None:
    shifted = Page(log_offset_ms=4 * HOUR_MS)
    plain = Page(worker="worker_bbbb", first_id=10)
    ds = load_ifllm(build(tmp_path, [shifted, plain]))
    for page in (shifted, plain):
        queries = page_queries(ds, page)
        assert [q.shown_at_ms for q in queries] == list(page.shown)
        assert sum(len(q.gaze) for q in queries) == n_attributed(page)
    assert ds.stats["pages_offset_corrected"] == 1


def test_display_lag_moves_samples_to_the_query_still_on_screen(tmp_path: Path) -> None:
    page = Page(lag_ms=900.0)
    ds = load_ifllm(build(tmp_path, [page]))
    queries = page_queries(ds, page)
    for k in (1, 2):  # answer k appears 900 ms after its timestamp
        assert queries[k].gaze.t_ms.min() >= page.shown[k] + 900
        assert queries[k - 1].gaze.t_ms.max() >= page.shown[k] + 800
        assert queries[k].mouse.t_ms.min() == queries[k].gaze.t_ms.min()
    assert ds.stats["evidence_contradicts_final"] == 0
    assert ds.stats["evidence_contradicts_time"] > 0


def test_query_without_timestamp_is_placed_by_evidence(tmp_path: Path) -> None:
    page = Page()
    root = build(tmp_path, [page])
    rows = page.query_rows()
    rows[1]["query_timestamp"] = "0000-00-00 00:00:00"
    write_table(root / "query_logs_table.csv", QUERY_HEADER, rows, gz=False)
    ds = load_ifllm(root)
    queries = page_queries(ds, page)
    assert queries[1].shown_at_ms is None
    assert queries[1].gaze.t_ms.min() >= page.shown[1] + page.lag_ms
    assert sum(len(q.gaze) for q in queries) == n_attributed(page)
    [problem] = ds.problems
    # each record spans 2 lines: llm_name_2 holds a quoted "\r\n"
    assert problem.file == "query_logs_table.csv" and problem.line == 4
    assert "0000-00-00" in problem.reason
