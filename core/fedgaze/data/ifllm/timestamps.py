"""Correcting one page's query timestamps for the 4-hour offset of part of the query log.

The 4-hour offset: ``query_timestamp`` is the side that is wrong
-----------------------------------------------------------------
For 40 of the 51 task pages logged in September 2025, ``query_timestamp`` is exactly 4 h *later*
than the traces' ``epoch_ms``: the first query comes 4.00-4.09 h after the first sample (one page
aside, whose first query is 2 h off), and every query falls inside the traces once 4 h are
removed.  The traces are right and the query log is wrong, because:

1. ``query_ID`` is an auto-increment, so it orders queries by arrival.  With the raw timestamps the
   order is broken exactly at the pages the traces call offset: within worker_6129fc84, query 338
   (task 67, 00:12:37) follows query 334 (task 74, 03:14:38); among concurrent workers the log
   interleaves 05:56:47, 01:57:21, 01:57:55, 05:58:30, 01:58:46 for query_IDs 394-398.  Over the
   September block of query_IDs the raw timestamps go backwards 16 times; after removing the 4 h
   from the offset pages, twice, by 7 and 10 s (concurrent inserts).
2. ``task_table.finished`` (another server clock) comes 1-51 s after the last trace sample on all
   51 September pages, the 40 offset ones included; only ``query_timestamp`` is off.
3. The offset is per page, not per month: 11 September pages (e.g. worker_6129fc84 tasks 82 and
   67, between offset pages of the same evening) are not offset, and two April pages without
   traces are 4 h later than their ``finished`` time.

So the correction is decided per (worker, task) page: subtract 4 h from that page's query
timestamps when that fits the page's trace time span (or, with no traces, its ``finished`` time)
better than leaving them alone; with no reference at all the README's rule (September 2025)
applies.  A corrected timestamp still more than ``_TS_TOLERANCE_MS`` outside the page's trace span
is unusable: ``shown_at_ms=None`` and a Problem (one query in this copy is 2 h off).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

from fedgaze.data.ifllm.context import (
    _FINISHED_BEFORE_MS,
    _OFFSET_MS,
    _SPAN_SLACK_MS,
    _TS_TOLERANCE_MS,
    F64,
    _Ctx,
)
from fedgaze.data.ifllm.tables import _QueryRow


def _choose_offset(ts: F64, lo: float, hi: float) -> float:
    """0 or the 4-hour offset: whichever puts the timestamps closest to inside [lo, hi]."""

    def outside(off: float) -> float:
        d = ts - off
        return float(np.nansum(np.maximum(lo - d, 0.0) + np.maximum(d - hi, 0.0)))

    return min((0.0, float(_OFFSET_MS)), key=outside)


def _readme_offset(ts: F64) -> float:
    """The README's rule, used only without any reference time: September 2025 is offset."""
    known = ts[np.isfinite(ts)]
    if not len(known):
        return 0.0
    moment = datetime.fromtimestamp(float(known[0]) / 1000.0, tz=UTC)
    return float(_OFFSET_MS) if (moment.year, moment.month) == (2025, 9) else 0.0


def _correct_timestamps(
    ctx: _Ctx, rows: Sequence[_QueryRow], span: tuple[float, float] | None, finished: float | None
) -> F64:
    """Corrected shown-at times of one page's queries (NaN when unusable)."""
    ts = np.array([np.nan if r.ts_ms is None else r.ts_ms for r in rows], dtype=np.float64)
    if span is not None:
        offset = _choose_offset(ts, span[0] - _SPAN_SLACK_MS, span[1] + _SPAN_SLACK_MS)
    elif finished is not None:
        offset = _choose_offset(ts, finished - _FINISHED_BEFORE_MS, finished + _SPAN_SLACK_MS)
    else:
        offset = _readme_offset(ts)
    if offset:
        ctx.stats["pages_offset_corrected"] += 1
        ctx.stats["queries_offset_corrected"] += int(np.isfinite(ts).sum())
    ts = ts - offset
    if span is not None:
        far = (ts < span[0] - _TS_TOLERANCE_MS) | (ts > span[1] + _TS_TOLERANCE_MS)
        for i in np.flatnonzero(far).tolist():
            gap = min(abs(ts[i] - span[0]), abs(ts[i] - span[1])) / 60_000
            ctx.sink.add(
                ctx.query_path,
                rows[i].line,
                f"bad timestamp: query_timestamp of query_ID {rows[i].query_id} is "
                f"{gap:.0f} min outside its page's traces even after the offset "
                f"correction; shown_at_ms=None",
            )
        ts[far] = np.nan
    return ts
