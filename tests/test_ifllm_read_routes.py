"""IFLLM loader: the batched fast routes and the careful file-by-file route read the same rows
and report the same problems; per-file layout choice; streaming devices matches loading all."""

from __future__ import annotations

import csv
import gzip
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedgaze.data.ifllm import IfllmDataset, batches, iter_devices, load_ifllm, query_counts
from fedgaze.data.ifllm.context import _Sink
from fedgaze.data.ifllm.layouts import _REL6, _REL7
from fedgaze.data.ifllm.traces import _read_trace
from ifllm_builders import (
    QUERY_HEADER,
    Page,
    build,
    n_attributed,
    page_dir,
    page_queries,
    problems_of,
    write,
)


def edit_any(path: Path, change: Callable[[str], str]) -> None:
    """Rewrite a trace file's text, .csv or .csv.gz."""
    if path.name.endswith(".gz"):
        path.write_bytes(
            gzip.compress(change(gzip.decompress(path.read_bytes()).decode()).encode())
        )
    else:
        path.write_text(change(path.read_text(encoding="utf-8")), encoding="utf-8", newline="")


def trace(root: Path, page: Page, stem: str, gz: bool) -> Path:
    return page_dir(root, page) / (f"{stem}.csv.gz" if gz else f"{stem}.csv")


def same_datasets(a: IfllmDataset, b: IfllmDataset) -> None:
    assert a.problems == b.problems
    assert dict(a.stats) == dict(b.stats)
    assert [d.device_id for d in a.devices] == [d.device_id for d in b.devices]
    for da, db in zip(a.devices, b.devices, strict=True):
        assert da.calibration == db.calibration
        for qa, qb in zip(da.queries, db.queries, strict=True):
            assert (qa.query_id, qa.shown_at_ms, qa.preference) == (
                qb.query_id,
                qb.shown_at_ms,
                qb.preference,
            )
            for kind in ("gaze", "mouse"):
                sa, sb = getattr(qa, kind), getattr(qb, kind)
                for col in ("t_ms", "x", "y", "side", "char_index", "validate"):
                    assert np.array_equal(getattr(sa, col), getattr(sb, col), equal_nan=True)


def quirky_pages(root: Path, gz: bool) -> list[Page]:
    """Pages whose files hit every reason for a batch or a file to leave the fast route."""
    pages = [
        Page(),
        Page(worker="worker_bbbb", first_id=10, task=2, pairwise=False),
        Page(worker="worker_bbbb", first_id=20, task=3, six_columns=True),
    ]
    build(root, pages, gz=gz)
    a, b, c = pages
    with_bom = lambda text: "\ufeff" + text  # noqa: E731
    crlf = lambda text: text.replace("\n", "\r\n")  # noqa: E731
    unterminated = lambda text: text[:-1]  # noqa: E731

    def lines(change: Callable[[list[str]], list[str]]) -> Callable[[str], str]:
        return lambda text: "\n".join(change(text.split("\n")[:-1])) + "\n"

    edit_any(trace(root, a, "rel_gaze_two", gz), with_bom)  # BOM on a file inside a batch
    edit_any(trace(root, a, "rel_mouse_left", gz), crlf)
    edit_any(trace(root, a, "abs_gaze", gz), unterminated)  # followed by abs_mouse
    if not gz:  # a gzip file among plain ones
        plain = trace(root, a, "rel_mouse_right", gz=False)
        text = plain.read_text()
        plain.unlink()
        write(plain, text, gz=True)
    edit_any(trace(root, a, "rel_gaze_one", gz), lines(lambda ls: [*ls[:40], "", *ls[40:]]))
    edit_any(trace(root, b, "rel_gaze", gz), lines(lambda ls: [*ls[:7], "\x00", *ls[7:]]))
    edit_any(trace(root, b, "abs_gaze", gz), lines(lambda ls: [*ls[:9], " 1,2,3,4", *ls[9:]]))

    def odd_snippet(line: str) -> str:  # commas, quotes and a newline: 2 physical lines
        x, y, rest = line.split(",", 2)
        return ",".join([x, y, '"a, "b"\nc"', *rest.rsplit(",", 3)[1:]])

    edit_any(  # a stray quote after epoch_ms, and the odd snippet (6-column file)
        trace(root, c, "rel_gaze_one", gz),
        lines(lambda ls: [*ls[:30], ls[30] + '"', odd_snippet(ls[31]), *ls[32:]]),
    )
    return pages


@pytest.mark.parametrize("gz", [False, True])
def test_fast_and_careful_routes_agree(
    tmp_path: Path, gz: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    quirky_pages(root, gz)
    fast = load_ifllm(root)
    assert fast.problems  # the quirks are seen ...
    monkeypatch.setattr(batches, "_read_batch", lambda *args, **kwargs: None)
    careful = load_ifllm(root)  # ... exactly as file by file, line by line
    same_datasets(fast, careful)


@pytest.mark.parametrize("gz", [False, True])
def test_bad_line_inside_a_well_formed_file(tmp_path: Path, gz: bool) -> None:
    page = Page()
    root = build(tmp_path, [page], gz=gz)

    def insert(text: str) -> str:
        ls = text.split("\n")
        return "\n".join([*ls[:120], '12.5,30,"x",5,abc,1,1760000000000', *ls[120:]])

    edit_any(trace(root, page, "rel_gaze_one", gz), insert)
    edit_any(trace(root, page, "abs_gaze", gz), lambda t: t.replace("\n", "\n300.5,oops,1,2\n", 1))
    ds = load_ifllm(root)
    name = "rel_gaze_one.csv" + (".gz" if gz else "")
    assert problems_of(ds, name) == [
        "121: bad row: page_timer_ms 'abc' is not a non-negative number"
    ]
    assert problems_of(ds, "abs_gaze.csv" + (".gz" if gz else "")) == [
        "2: bad row: y 'oops' is not a number"
    ]
    queries = page_queries(ds, page)
    assert sum(len(q.gaze) for q in queries) == n_attributed(page)  # the neighbours are kept
    assert sum(len(q.mouse) for q in queries) == n_attributed(page)


def test_layout_choice_per_file(tmp_path: Path) -> None:
    seven = '12.5,30,"a, b",5,11000.5,1,1760000000000'
    six = '12.5,30,"a b",5,11000.5,1760000000000'
    files = {  # name: lines, expected layout, rows kept, lines reported
        "mostly_seven.csv": ([six, seven, seven, seven], "rel7", 3, [1]),  # short 1st line
        "six.csv": ([six, six, seven.replace(",1,", ",7,"), six], "rel6", 3, [3]),
        "garbage.csv": (["1,2", "x", "y,z"], "rel7", 0, [1, 2, 3]),  # fits none: the first
        "six_garbage.csv": ([six, "x", "y", "z,w"], "rel6", 1, [2, 3, 4]),  # fits none: best
        "empty.csv": ([], "rel7", 0, []),
    }
    for name, (rows, layout_name, kept, reported) in files.items():
        path = tmp_path / name
        path.write_text("".join(f"{row}\n" for row in rows))
        sink = _Sink(tmp_path)
        frame, layout = _read_trace(path, [_REL7, _REL6], sink)
        assert (layout.name, len(frame), [p.line for p in sink.problems]) == (
            layout_name,
            kept,
            reported,
        ), name


def test_iter_devices_matches_load_ifllm(tmp_path: Path) -> None:
    root = tmp_path / "data"
    quirky_pages(root, gz=True)
    rows = Page(worker="worker_cccc", first_id=40).query_rows()
    rows[0]["preference"] = "9.0"  # a row problem of the table, reported with the device
    with gzip.open(root / "query_logs_table.csv.gz", "at", encoding="utf-8", newline="") as fh:
        csv.DictWriter(fh, fieldnames=QUERY_HEADER, lineterminator="\n").writerows(
            [*rows, dict(rows[0], query_ID="oops")]
        )
    whole = load_ifllm(root)
    stats: Counter[str] = Counter()
    stream = iter_devices(root, stats=stats)
    assert not stats  # nothing built yet
    [table_problem] = stream.table_problems  # the query_ID "oops" row belongs to no device
    assert table_problem.reason.startswith("bad row: query_ID")
    items = list(stream)
    assert [d.device_id for d, _ in items] == [d.device_id for d in whole.devices]
    assert [table_problem, *(p for _, probs in items for p in probs)] == list(whole.problems)
    assert any(p.reason.startswith("bad value: preference") for p in items[2][1])
    assert dict(stats) == dict(whole.stats)
    assert query_counts(root) == {"worker_aaaa": 3, "worker_bbbb": 6, "worker_cccc": 3}
    same_datasets(
        IfllmDataset(devices=tuple(d for d, _ in items), problems=whole.problems, stats=stats),
        whole,
    )
    one = list(iter_devices(root, workers=["worker_bbbb"]))
    assert [d.device_id for d, _ in one] == ["worker_bbbb"]
    with pytest.raises(KeyError, match="worker_zzzz"):
        iter_devices(root, workers=["worker_zzzz"])  # raised at the call, not on iteration
