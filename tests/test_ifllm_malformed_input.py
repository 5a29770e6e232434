"""IFLLM loader on malformed synthetic input: bad rows, odd snippets, damaged files and bad
table rows are reported and everything valid is kept."""

from __future__ import annotations

import gzip
from pathlib import Path

from fedgaze.data.ifllm import BEHAVIOR_DIR, load_ifllm
from fedgaze.data.ifllm.context import _Sink
from fedgaze.data.ifllm.layouts import _REL6, _REL7
from fedgaze.data.ifllm.traces import _read_trace
from ifllm_builders import (
    QUERY_HEADER,
    Page,
    build,
    edit_lines,
    n_attributed,
    page_dir,
    page_queries,
    problems_of,
    write_table,
)


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
