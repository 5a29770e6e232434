"""Tests of the IFLLM loader: synthetic pages built in tmp_path, and the real data when present."""

from __future__ import annotations

import csv
import gzip
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from fedgaze.data import ifllm
from fedgaze.data.ifllm import (
    _REL6,
    _REL7,
    BEHAVIOR_DIR,
    IfllmDataset,
    _read_trace,
    _Sink,
    iter_devices,
    list_workers,
    load_ifllm,
    query_counts,
)
from fedgaze.data.schema import SIDE_LEFT, SIDE_NONE, SIDE_RIGHT, Query
from shared_data import IFLLM_ROOT

DATA = IFLLM_ROOT
HOUR_MS = 3_600_000
T0 = 1_760_000_000_000.0  # 2025-10-09 08:53:20 UTC
WORDS = ("alpha", "bravo", "charlie", "delta")
QUERY_HEADER = [
    "query_ID",
    "user_id",
    "task_id",
    "user_query",
    "llm_response_1",
    "llm_response_2",
    "llm_name_1",
    "llm_name_2",
    "likert_1",
    "likert_2",
    "preference",
    "adjustment",
    "query_timestamp",
]
TASK_HEADER = ["user_id", "task_id", "summary", "accuracy", "finished", "domain"]


# ---------------------------------------------------------------------------------------------
# synthetic data


def stamp(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def answer(side: str, k: int) -> str:
    """A response whose every 20-character window is unique to (side, query k)."""
    return f"{side.upper()} {k}: " + " ".join(f"{WORDS[k]}{side}{i}" for i in range(30))


@dataclass
class Page:
    """One synthetic task page: queries every ``gap_ms`` with answers shown ``lag_ms`` later."""

    worker: str = "worker_aaaa"
    task: int = 1
    pairwise: bool = True
    n_queries: int = 3
    gap_ms: float = 20_000.0
    lag_ms: float = 500.0
    log_offset_ms: float = 0.0  # added to query_timestamp (the September quirk)
    six_columns: bool = False
    t0: float = T0
    first_id: int = 1
    extra_query_rows: list[dict[str, str]] = field(default_factory=list)

    @property
    def shown(self) -> np.ndarray:
        return self.t0 + self.gap_ms * np.arange(self.n_queries)

    @property
    def times(self) -> np.ndarray:
        """Sample times: 3 s before the first answer until 10 s after the last one."""
        end = self.shown[-1] + 10_000
        return np.arange(self.t0 - 3_000, end, 100.0) + 0.25

    def query_rows(self) -> list[dict[str, str]]:
        rows = []
        for k, ts in enumerate(self.shown):
            rows.append(
                {
                    "query_ID": str(self.first_id + k),
                    "user_id": self.worker,
                    "task_id": str(self.task),
                    "user_query": f"question {k}",
                    "llm_response_1": answer("l", k),
                    "llm_response_2": answer("r", k) if self.pairwise else "",
                    "llm_name_1": "gpt-4o-mini",
                    "llm_name_2": "deepseek-ai/\r\nDeepSeek-V3" if self.pairwise else "",
                    "likert_1": "4.0",
                    "likert_2": "3.0" if self.pairwise else "",
                    "preference": ("2.0" if k % 2 else "1.0")
                    if self.pairwise
                    else ("" if k == 0 else "1.0"),
                    "adjustment": "0",
                    "query_timestamp": stamp(ts + self.log_offset_ms),
                }
            )
        return rows + self.extra_query_rows

    def trace_files(self) -> dict[str, list[str]]:
        """File stem -> lines of every trace file of the page."""
        t = self.times
        pt = (t - t[0] + 11_000.5).tolist()
        displayed = np.searchsorted(self.shown + self.lag_ms, t, side="right") - 1
        tail = (
            (lambda i: f"{pt[i]},{int(t[i])}")
            if self.six_columns
            else (lambda i: f"{pt[i]},1,{int(t[i])}")
        )
        off = [f"-1,-1,,,{tail(i)}" for i in range(len(t))]
        left = []
        for i, d in enumerate(displayed):
            text, ci = ("please wait patiently", 5) if d < 0 else (answer("l", d)[10:30], 20)
            left.append(f'12.5,30,"{text}",{ci},{tail(i)}')
        mouse = [("-1,-1" if i < 5 else "100,200") + f",{pt[i]},{int(t[i])}" for i in range(len(t))]
        gaze = [f"300.5,400.25,{pt[i]},{int(t[i])}" for i in range(len(t))]
        if self.pairwise:  # every batch of 10 written twice
            gaze = [row for b in range(0, len(gaze), 10) for row in gaze[b : b + 10] * 2]
            return {
                "abs_gaze": gaze,
                "abs_mouse": mouse,
                "rel_gaze_one": left,
                "rel_gaze_two": off,
                "rel_mouse_left": off,
                "rel_mouse_right": off,
            }
        return {"abs_gaze": gaze, "abs_mouse": mouse, "rel_gaze": left, "rel_mouse": off}


def write(path: Path, text: str, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def write_table(path: Path, header: list[str], rows: list[dict[str, str]], gz: bool) -> Path:
    lines: list[str] = []

    class Sink:
        def write(self, s: str) -> None:
            lines.append(s)

    writer = csv.DictWriter(Sink(), fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write(path, "".join(lines), gz)


def build(root: Path, pages: list[Page], gz: bool = False, folders: bool = True) -> Path:
    rows = [r for p in pages for r in p.query_rows()]
    write_table(root / "query_logs_table.csv", QUERY_HEADER, rows, gz)
    tasks = [
        {
            "user_id": p.worker,
            "task_id": str(p.task),
            "summary": "line one\nline two",
            "accuracy": "77.0",
            "finished": stamp(p.times[-1]),
            "domain": "x",
        }
        for p in pages
    ]
    write_table(root / "task_table.csv", TASK_HEADER, tasks, gz)
    for p in pages:
        if folders:
            for stem, lines in p.trace_files().items():
                write(page_dir(root, p) / f"{stem}.csv", "\n".join(lines) + "\n", gz)
    return root


def page_dir(root: Path, page: Page) -> Path:
    return root / BEHAVIOR_DIR / page.worker / str(page.task)


def edit_lines(path: Path, change: Callable[[list[str]], list[str]]) -> None:
    lines = path.read_text().split("\n")[:-1]
    path.write_text("\n".join(change(lines)) + "\n")


def page_queries(ds: IfllmDataset, page: Page) -> list[Query]:
    return [q for q in ds.device(page.worker).queries if q.task_id == page.task]


def problems_of(ds: IfllmDataset, name: str) -> list[str]:
    return [f"{p.line}: {p.reason}" for p in ds.problems if p.file.endswith(name)]


def n_attributed(page: Page) -> int:
    """Samples from the first answer on (before it the panel shows instructions: no query)."""
    return int((page.times >= page.shown[0] + page.lag_ms).sum())


# ---------------------------------------------------------------------------------------------
# synthetic: API and clean loads


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


# ---------------------------------------------------------------------------------------------
# synthetic: malformed input


def test_snippet_with_comma_quote_and_newline_is_rejoined(tmp_path: Path) -> None:
    page = Page()
    root = build(tmp_path, [page])
    rel = page_dir(root, page) / "rel_gaze_one.csv"

    def with_snippet(line: str, snippet: str) -> str:
        x, y, _ = line.split(",", 2)
        return ",".join([x, y, snippet, *line.rsplit(",", 4)[1:]])

    def split_snippet(lines: list[str]) -> list[str]:
        odd = with_snippet(lines[100], '"say "hi", then\nnew, line"')
        plain = with_snippet(lines[150], "019, 2023)")
        return [*lines[:100], *odd.split("\n"), *lines[101:150], plain, *lines[151:]]

    edit_lines(rel, split_snippet)
    frame, _ = _read_trace(rel, [_REL7, _REL6], _Sink(root))
    assert len(frame) == len(page.times)
    assert frame["snip"][100] == 'say "hi", then\nnew, line'
    assert frame["snip"][150] == "019, 2023)"
    assert frame["line"][101] == 103  # lines after the 2-line record keep their numbers
    ds = load_ifllm(root)
    assert ds.problems == ()
    assert sum(len(q.gaze) for q in page_queries(ds, page)) == n_attributed(page)


def test_bad_rows_are_reported_and_neighbours_kept(tmp_path: Path) -> None:
    page = Page()
    root = build(tmp_path, [page])
    folder = page_dir(root, page)
    garbage = [
        "@@@ not a row",
        '1.0,2.0,"cut off',
        '12.5,30,"x",5,abc,1,1760000000000',
        '12.5,oops,"x",5,11000,1,1760000000000',
        '12.5,30,"x",5,11000,1,17',
    ]
    # extra garbage rows inserted between valid rows (lines 51..55 of the file)
    edit_lines(folder / "rel_gaze_one.csv", lambda ls: ls[:50] + garbage + ls[50:])
    # one valid abs_mouse row replaced by a row with a missing field (line 301)
    edit_lines(
        folder / "abs_mouse.csv", lambda ls: [*ls[:300], ls[300].rsplit(",", 1)[0], *ls[301:]]
    )
    ds = load_ifllm(root)
    gaze_probs = problems_of(ds, "rel_gaze_one.csv")
    assert gaze_probs == [
        "51: bad row: expected 7+ comma-separated fields (x,y,snippet,char_index,page_timer_ms,"
        "validate,epoch_ms), found 1: '@@@ not a row'",
        "52: bad row: expected 7+ comma-separated fields (x,y,snippet,char_index,page_timer_ms,"
        "validate,epoch_ms), found 3: '1.0,2.0,\"cut off'",
        "53: bad row: page_timer_ms 'abc' is not a non-negative number",
        "54: bad row: y 'oops' is not a number",
        "55: bad row: epoch_ms '17' is not a plausible epoch in ms",
    ]
    assert all(
        p.file == f"{BEHAVIOR_DIR}/worker_aaaa/1/rel_gaze_one.csv"
        for p in ds.problems
        if p.file.endswith("rel_gaze_one.csv")
    )
    mouse_probs = problems_of(ds, "abs_mouse.csv")
    assert mouse_probs[0].startswith("301: bad row: expected 4 comma-separated fields")
    left = problems_of(ds, "rel_mouse_left.csv")
    assert any(p.startswith("301: unaligned rows: 1 of") for p in left)
    queries = page_queries(ds, page)
    assert sum(len(q.gaze) for q in queries) == n_attributed(page)
    assert sum(len(q.mouse) for q in queries) == n_attributed(page) - 1  # the bad abs_mouse row


def test_truncated_gzip_keeps_complete_lines(tmp_path: Path) -> None:
    page = Page()
    root = build(tmp_path, [page], gz=True)
    path = page_dir(root, page) / "abs_gaze.csv.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    ds = load_ifllm(root)
    reasons = problems_of(ds, "abs_gaze.csv.gz")
    assert reasons[0].startswith("0: damaged file: truncated gzip stream")
    assert "last line cut off" in reasons[1]
    gaze = sum(len(q.gaze) for q in page_queries(ds, page))
    mouse = sum(len(q.mouse) for q in page_queries(ds, page))
    assert 0 < gaze < mouse == n_attributed(page)


def test_multi_member_gzip_is_read_whole(tmp_path: Path) -> None:
    page = Page()
    root = build(tmp_path, [page], gz=True)
    path = page_dir(root, page) / "abs_mouse.csv.gz"
    text = gzip.decompress(path.read_bytes()).decode()
    cut = text.index("\n", len(text) // 2) + 1
    path.write_bytes(gzip.compress(text[:cut].encode()) + gzip.compress(text[cut:].encode()))
    ds = load_ifllm(root)
    assert ds.problems == ()
    assert sum(len(q.mouse) for q in page_queries(ds, page)) == n_attributed(page)


def test_not_gzip_and_missing_file(tmp_path: Path) -> None:
    page = Page()
    root = build(tmp_path, [page])
    folder = page_dir(root, page)
    (folder / "rel_mouse_right.csv").unlink()
    (folder / "abs_gaze.csv").unlink()
    (folder / "abs_gaze.csv.gz").write_bytes(b"this is not gzip data")
    ds = load_ifllm(root)
    assert problems_of(ds, "rel_mouse_right.csv.gz") == [
        "0: missing file: no rel_mouse_right.csv(.gz), needed for mouse samples; mouse left empty"
    ]
    assert problems_of(ds, "abs_gaze.csv.gz")[0].startswith("0: damaged file: corrupt gzip")
    queries = page_queries(ds, page)
    assert all(len(q.mouse) == 0 for q in queries)
    assert sum(len(q.gaze) for q in queries) == 0


def test_bad_query_and_task_rows(tmp_path: Path) -> None:
    page = Page()
    root = build(tmp_path, [page])
    rows = page.query_rows()
    rows[0]["user_query"] = "a question\nspread over\nthree lines"
    rows[1]["preference"] = "7.0"
    rows[2]["likert_1"] = "good"
    extra = dict(rows[2], query_ID="x9")
    write_table(root / "query_logs_table.csv", QUERY_HEADER, [*rows, extra], gz=False)
    ds = load_ifllm(root)
    got = problems_of(ds, "query_logs_table.csv")
    # records start at lines 2, 6, 8, 10: the quoted "\r\n" in llm_name_2 and the prompt's
    # newlines make records span several physical lines
    assert got[0] == "10: bad row: query_ID/task_id not integers ('x9', '1')"
    assert sorted(got[1:]) == [
        "6: bad value: preference 7.0 not in (0, 1, 2) for a pairwise query (query_ID 2); "
        "set to None",
        "8: bad value: likert_1 'good' of query_ID 3 is not a number; set to None",
    ]
    queries = page_queries(ds, page)
    assert queries[1].preference is None and queries[2].likert_left is None
    assert len(queries) == 3 and queries[0].prompt.count("\n") == 2


# ---------------------------------------------------------------------------------------------
# synthetic: batched fast routes vs the careful route


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
    monkeypatch.setattr(ifllm, "_read_batch", lambda *args, **kwargs: None)
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


# ---------------------------------------------------------------------------------------------
# real data


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
