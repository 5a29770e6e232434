"""Building one worker's device: its pages' timestamps corrected, samples attributed, labels
checked, queries assembled in query_ID order, problems reported page by page."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from fedgaze.data.ifllm.attribution import _Aligned, _Attribution, _search
from fedgaze.data.ifllm.context import BEHAVIOR_DIR, F64, I64, _Ctx, _Sink
from fedgaze.data.ifllm.folders import _Group
from fedgaze.data.ifllm.pages import _Page, _plan_page
from fedgaze.data.ifllm.tables import _QueryRow, _TaskInfo
from fedgaze.data.ifllm.timestamps import _correct_timestamps
from fedgaze.data.schema import (
    PREF_LEFT,
    PREF_RIGHT,
    PREF_TIE,
    Device,
    Query,
    Samples,
    ifllm_served_ids,
)


def _preference(ctx: _Ctx, row: _QueryRow, pairwise: bool) -> int | None:
    """Integer preference; values outside the task kind's code set are reported and dropped."""
    if row.preference is None:
        return None
    allowed = (PREF_TIE, PREF_LEFT, PREF_RIGHT) if pairwise else (0, 1)
    value = int(row.preference)
    if value != row.preference or value not in allowed:
        kind = "pairwise" if pairwise else "pointwise"
        ctx.sink.add(
            ctx.query_path,
            row.line,
            f"bad value: preference {row.preference} not in "
            f"{allowed} for a {kind} query (query_ID {row.query_id}); set to None",
        )
        return None
    return value


def _likert(ctx: _Ctx, row: _QueryRow, col: str, value: float | None) -> float | None:
    """A 1-5 rating or None; out-of-range values are reported and dropped."""
    if value is not None and not 1.0 <= value <= 5.0:
        ctx.sink.add(
            ctx.query_path,
            row.line,
            f"bad value: {col} {value} outside 1-5 (query_ID {row.query_id}); set to None",
        )
        return None
    return value


def _samples(cols: Mapping[str, np.ndarray], k: I64, q: int) -> list[Samples]:
    """Split one modality's rows into time-ordered Samples per query index 0..q-1."""
    order = np.lexsort((cols["t"], k))
    cuts = np.searchsorted(k[order], np.arange(q + 1), side="left")
    out = []
    for j in range(q):
        idx = order[cuts[j] : cuts[j + 1]]
        out.append(
            Samples(
                t_ms=cols["t"][idx],
                x=cols["x"][idx],
                y=cols["y"][idx],
                side=cols["side"][idx],
                char_index=cols["ci"][idx],
                validate=cols["v"][idx],
            )
        )
    return out


def _start_page(
    ctx: _Ctx, page: _Page, aligned: _Aligned | None, info: _TaskInfo | None
) -> tuple[F64, _Attribution | None]:
    """Report the page's folder problems, correct its timestamps; its samples, if any, as an
    attribution to finish once the snippets are searched."""
    for part in page.parts:
        if isinstance(part, _Group):
            ctx.sink.problems.extend(part.problems())
            ctx.stats[f"abs_{part.modality}_duplicate_rows_dropped"] += part.dropped
        else:
            ctx.sink.problems.extend(part.problems)
    if not page.traced:
        ctx.stats["pages_without_traces"] += 1
    mods = [g for g in page.groups if g.rows.stop > g.rows.start]
    span = None
    if aligned is not None and mods:
        t = [aligned.cols["t"][g.rows] for g in mods]
        span = float(min(a.min() for a in t)), float(max(a.max() for a in t))
    ts = _correct_timestamps(ctx, page.rows, span, info.finished_ms if info else None)
    if aligned is None or not mods:
        return ts, None
    rows = slice(mods[0].rows.start, mods[-1].rows.stop)  # a page's groups are adjacent
    return ts, _Attribution(
        rows=rows,
        cols=aligned.slice(rows),
        ts=ts,
        left=[r.response_1 for r in page.rows],
        right=[r.response_2 for r in page.rows],
    )


def _page_samples(
    ctx: _Ctx, page: _Page, aligned: _Aligned | None, work: _Attribution | None
) -> dict[str, list[Samples]]:
    """modality -> Samples of each query of the page (absent modality: no traces)."""
    if aligned is None or work is None:
        return {}
    k = work.assign(ctx.stats)
    out: dict[str, list[Samples]] = {}
    for group in page.groups:
        if group.rows.stop == group.rows.start:
            continue
        mine = k[group.rows.start - work.rows.start : group.rows.stop - work.rows.start]
        out[group.modality] = _samples(aligned.slice(group.rows), mine, len(page.rows))
        ctx.stats[f"samples_{group.modality}"] += int((mine >= 0).sum())
    return out


def _page_queries(
    ctx: _Ctx, page: _Page, ts: F64, samples: Mapping[str, list[Samples]]
) -> list[Query]:
    """The queries of one (worker, task) page with their attributed samples."""
    out = []
    for j, row in enumerate(page.rows):
        for issue in row.issues:
            ctx.sink.add(ctx.query_path, row.line, issue)
        pairwise = page.pairwise if page.traced else row.response_2 is not None
        if pairwise != (row.response_2 is not None):
            ctx.sink.add(
                ctx.query_path,
                row.line,
                f"kind mismatch: the trace folder says "
                f"{'pairwise' if pairwise else 'pointwise'} but llm_response_2 is "
                f"{'empty' if row.response_2 is None else 'set'}; trusted the folder",
            )
        out.append(
            Query(
                query_id=row.query_id,
                task_id=page.task,
                pairwise=pairwise,
                prompt=row.prompt,
                response_left=row.response_1,
                response_right=row.response_2,
                preference=_preference(ctx, row, pairwise),
                likert_left=_likert(ctx, row, "likert_1", row.likert_1),
                likert_right=_likert(ctx, row, "likert_2", row.likert_2),
                shown_at_ms=float(ts[j]) if np.isfinite(ts[j]) else None,
                gaze=samples["gaze"][j] if "gaze" in samples else Samples.empty(),
                mouse=samples["mouse"][j] if "mouse" in samples else Samples.empty(),
                served=ifllm_served_ids(row.query_id, pairwise),
            )
        )
    return out


def _report_orphans(ctx: _Ctx, worker: str, tasks: set[int]) -> None:
    """Trace folders of this worker that no query points at."""
    home = ctx.base / BEHAVIOR_DIR / worker
    if not home.is_dir():
        return
    for sub in sorted(home.iterdir()):
        if sub.is_dir() and not (sub.name.isdigit() and int(sub.name) in tasks):
            ctx.sink.add(sub, 0, "orphan folder: no query of this worker has this task id; ignored")


def _load_device(
    ctx: _Ctx, worker: str, rows: list[_QueryRow], tasks: Mapping[tuple[str, int], _TaskInfo]
) -> Device:
    """One worker's device: queries in query_ID (arrival) order, calibration per task.

    All trace files of the device are read and aligned in one batch (``_Aligned.build``);
    each page's timestamps are corrected, the snippets of all pages are searched in two
    rounds, then each page's samples are attributed to its queries.  Problems are reported
    page by page, in the order a page-by-page load finds them.
    """
    by_task: dict[int, list[_QueryRow]] = {}
    for row in sorted(rows, key=lambda r: r.query_id):
        by_task.setdefault(row.task_id, []).append(row)
    pages = [_plan_page(ctx, worker, task, page_rows) for task, page_rows in by_task.items()]
    aligned = _Aligned.build(pages) if any(p.groups for p in pages) else None
    sinks = [_Sink(ctx.base) for _ in pages]
    started = [
        _start_page(replace(ctx, sink=sink), page, aligned, tasks.get((worker, page.task)))
        for page, sink in zip(pages, sinks, strict=True)
    ]
    works = [work for _, work in started]
    if aligned is not None:
        _search(aligned, works, second=False)
        _search(aligned, works, second=True)
    queries: list[Query] = []
    for page, sink, (ts, work) in zip(pages, sinks, started, strict=True):
        page_ctx = replace(ctx, sink=sink)
        samples = _page_samples(page_ctx, page, aligned, work)
        queries += _page_queries(page_ctx, page, ts, samples)
        ctx.sink.problems.extend(sink.problems)
    queries.sort(key=lambda q: q.query_id)
    _report_orphans(ctx, worker, set(by_task))
    calibration = {
        task: info.accuracy
        for (w, task), info in tasks.items()
        if w == worker and info.accuracy is not None
    }
    ctx.stats["queries"] += len(queries)
    return Device(device_id=worker, queries=tuple(queries), calibration=calibration)
