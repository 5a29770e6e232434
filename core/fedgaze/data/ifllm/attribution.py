"""Attributing a device's aligned samples to the queries of their pages: query windows from
timestamps and evidence, and the device-wide snippet searches that evidence needs.

Attribution of samples to queries
---------------------------------
A task page holds several queries and shows only the latest answer(s).  ``query_timestamp`` has
second resolution and the new answers appear up to about a second after it (measured from
snippets), while before the first answer the panel shows instructions.  Per page, with the
queries in ``query_ID`` order and corrected timestamps ``ts_k``:

1. The window of query k starts at ``b_k = ts_k``.  A query with no usable timestamp starts at the
   first sample in its neighbours' gap whose evidence supports it and contradicts the previous
   query (the first query: from the start of the traces when there is no such evidence).
2. Evidence for a sample on a panel: its snippet (>= ``_MIN_SNIPPET`` characters) found in that
   side's response *supports* the query; a snippet not found, or a ``char_index`` past the end of
   that side's response (in UTF-16 units, like the browser's caret offset), *contradicts* it.
3. Display lag: if samples in ``[b_k, b_k + _LAG_MS)`` contradict query k and support query k-1
   (for k = 0: contradict query 0, the panel still shows instructions), ``b_k`` moves just past
   the last of them, so every sample up to then (mouse, off-panel and gaze alike) goes to query
   k-1, whose answer was still on screen (for k = 0: to no query).
4. Each sample goes to the last query with ``b_k <= t``; samples before the first answer belong
   to no query and are dropped (counted in ``IfllmDataset.stats``, not Problems).  ``t`` is the
   earliest ``t_ms`` of the instant (same page timer) over gaze and mouse, so the gaze and mouse
   samples of one instant always land in the same query.

``IfllmDataset.stats`` counts how often this evidence contradicts the time-only attribution
(``evidence_*`` keys).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from fedgaze.data.ifllm.align import _align
from fedgaze.data.ifllm.context import _LAG_MS, F64, I64, Bool
from fedgaze.data.ifllm.evidence import _Evidence, _lengths, _snippet_found, _usable
from fedgaze.data.ifllm.pages import _Page
from fedgaze.data.schema import SIDE_NONE


def _boundaries(t: F64, ts: F64, ev: _Evidence) -> tuple[F64, F64]:
    """(time-only, refined) start times of each query's window; see the module docstring."""
    q = len(ts)
    b = ts.copy()
    for k in np.flatnonzero(~np.isfinite(ts)).tolist():
        lo = b[k - 1] if k > 0 else -np.inf
        later = ts[k + 1 :][np.isfinite(ts[k + 1 :])]
        hi = later[0] if len(later) else np.inf
        mask = (t >= lo) & (t < hi) & ev.support[:, k]
        if k > 0:
            mask &= ev.against[:, k - 1]
        b[k] = t[mask].min() if mask.any() else (-np.inf if k == 0 else hi)
    b = np.maximum.accumulate(b)
    timed = b.copy()
    for k in range(q):
        if not np.isfinite(ts[k]):
            continue
        hi = min(b[k] + _LAG_MS, b[k + 1] if k + 1 < q else np.inf)
        lagging = (t >= b[k]) & (t < hi) & ev.against[:, k]
        if k > 0:  # still the previous answer; before the first one: instructions
            lagging &= ev.support[:, k - 1]
        if lagging.any():
            b[k] = np.nextafter(t[lagging].max(), np.inf)
    return timed, np.maximum.accumulate(b)


def _assign(t: F64, bounds: F64) -> I64:
    """Index of the query whose window holds each sample, -1 before the first."""
    return np.searchsorted(bounds, t, side="right").astype(np.int64) - 1


def _instant_times(pt: F64, occ: I64, t: F64) -> F64:
    """Per row, the earliest t_ms of the rows recorded at the same instant in other modalities.

    Gaze and mouse rows of one instant share (page_timer_ms, occurrence) but their abs epoch_ms
    differ by a few ms; attributing on a common time keeps each pair in the same query.
    """
    t = t.astype(np.float64)
    order = np.lexsort((occ, pt))
    new_group = np.r_[True, (pt[order][1:] != pt[order][:-1]) | (occ[order][1:] != occ[order][:-1])]
    starts = np.flatnonzero(new_group)
    group_min = np.minimum.reduceat(t[order], starts) if len(t) else t
    out = np.empty_like(t)
    out[order] = np.repeat(group_min, np.diff(np.r_[starts, len(t)]))
    return out


def _count_evidence(ev: _Evidence, k_time: I64, k_final: I64, stats: Counter[str]) -> None:
    """Add how often the evidence contradicts the time-only and the final attribution."""
    rows = np.arange(len(k_time))
    timed = ev.has & (k_time >= 0)
    against_time = timed & ev.against[rows, np.maximum(k_time, 0)]
    final = ev.has & (k_final >= 0)
    stats["samples_dropped_before_first"] += int((k_final < 0).sum())
    stats["samples_moved_by_evidence"] += int((k_time != k_final).sum())
    stats["evidence_samples"] += int(timed.sum())
    stats["evidence_contradicts_time"] += int(against_time.sum())
    stats["evidence_contradicts_time_fits_other"] += int(
        (against_time & ev.support.any(axis=1)).sum()
    )
    stats["evidence_contradicts_final"] += int(
        (final & ev.against[rows, np.maximum(k_final, 0)]).sum()
    )


@dataclass(frozen=True)
class _Aligned:
    """A device's aligned samples as numpy columns (rows sorted by group), their snippets and
    the responses each page's snippets are searched in."""

    cols: Mapping[str, np.ndarray]
    snip: pl.Series
    page: I64  # each row's page
    texts: list[list[tuple[str, str | None]]]

    @classmethod
    def build(cls, pages: Sequence[_Page]) -> _Aligned:
        """Load and align every page's trace files."""
        groups = [g for p in pages for g in p.groups]
        cols, snip = _align(groups)
        page_of = np.asarray([pi for pi, p in enumerate(pages) for _ in p.groups], np.int64)
        cols["usable"] = _usable(cols["side"], snip)
        texts = [[(r.response_1, r.response_2) for r in p.rows] for p in pages]
        return cls(cols=cols, snip=snip, page=page_of[cols["g"]], texts=texts)

    def slice(self, rows: slice) -> dict[str, np.ndarray]:
        """The columns of ``rows``."""
        return {c: a[rows] for c, a in self.cols.items()}

    def found(self, rows: I64, queries: I64) -> Bool:
        """Snippet search for (row, query) pairs (see ``_snippet_found``)."""
        return _snippet_found(self.cols["side"], self.snip, self.page, self.texts, rows, queries)


@dataclass(eq=False)
class _Attribution:
    """A page's samples on their way to its queries (see the module docstring).

    Only the snippet searches that can matter are made: for every usable sample its time-only
    query; in each query's display-lag window the query and the previous one; all queries for
    the samples whose evidence contradicts the time-only query (for the ``fits_other``
    counter); everything on a page with a query without timestamp.  The ``found`` entries
    never searched stay False and are never read unmasked.
    """

    rows: slice  # the page's rows of the device (its modalities are adjacent)
    cols: dict[str, np.ndarray]
    ts: F64
    left: list[str]
    right: list[str | None]
    t: F64 = field(init=False)
    found: Bool = field(init=False)

    def __post_init__(self) -> None:
        self.t = _instant_times(self.cols["pt"], self.cols["occ"], self.cols["t"])
        self.found = np.zeros((len(self.t), len(self.ts)), dtype=bool)

    @property
    def dense(self) -> bool:
        """A query without usable timestamp: its window comes from the evidence itself."""
        return not np.isfinite(self.ts).all()

    def k_time(self) -> I64:
        """Time-only query of each sample (all timestamps finite)."""
        return _assign(self.t, np.maximum.accumulate(self.ts))

    def first_searches(self) -> tuple[I64, I64]:
        """(page row, query) pairs to search first."""
        usable = self.cols["usable"]
        q = len(self.ts)
        if self.dense:
            i = np.flatnonzero(usable)
            return np.repeat(i, q), np.tile(np.arange(q), len(i))
        k = self.k_time()
        timed = np.maximum.accumulate(self.ts)
        hi = np.minimum(timed + _LAG_MS, np.r_[timed[1:], np.inf])
        lag = usable & (k >= 0) & (self.t < hi[np.maximum(k, 0)])  # in its query's lag window
        first = np.flatnonzero(usable & (k >= 0))
        back = np.flatnonzero(lag & (k > 0))
        return np.r_[first, back], np.r_[k[first], k[back] - 1]

    def second_searches(self) -> tuple[I64, I64]:
        """(page row, query) pairs to search once the first are known: every query for the
        samples whose evidence contradicts their time-only query."""
        if self.dense:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        k = self.k_time()
        idx = np.flatnonzero(k >= 0)
        kk, side, ci = k[idx], self.cols["side"][idx], self.cols["ci"][idx]
        usable = self.cols["usable"][idx]
        caret = (side != SIDE_NONE) & (ci >= 0)  # as in _Evidence.build, at (i, k_time)
        char_bad = caret & (ci > _lengths(self.left, self.right)[kk, side])
        against = (usable & ~self.found[idx, kk]) | char_bad
        i = idx[(usable | caret) & against]
        q = len(self.ts)
        return np.repeat(i, q), np.tile(np.arange(q), len(i))

    def evidence(self) -> _Evidence:
        """Support / contradiction from the searches made so far."""
        return _Evidence.build(
            self.cols["side"],
            self.cols["ci"],
            self.cols["usable"],
            self.found,
            self.left,
            self.right,
        )

    def assign(self, stats: Counter[str]) -> I64:
        """Query index (or -1) of every sample; adds the evidence counters."""
        ev = self.evidence()
        timed, refined = _boundaries(self.t, self.ts, ev)
        k_time, k_final = _assign(self.t, timed), _assign(self.t, refined)
        _count_evidence(ev, k_time, k_final, stats)
        return k_final


def _search(aligned: _Aligned, works: Sequence[_Attribution | None], second: bool) -> None:
    """Make one round of snippet searches for all pages of a device at once."""
    rows: list[I64] = []
    queries: list[I64] = []
    owner: list[int] = []
    for n, work in enumerate(works):
        if work is None:
            continue
        i, j = work.second_searches() if second else work.first_searches()
        rows.append(i + work.rows.start)
        queries.append(j)
        owner.append(n)
    if not rows:
        return
    hit = aligned.found(np.concatenate(rows), np.concatenate(queries))
    ends = np.cumsum([len(r) for r in rows])
    for n, i, j, h in zip(owner, rows, queries, np.split(hit, ends[:-1]), strict=True):
        work = works[n]
        assert work is not None
        work.found[i[h] - work.rows.start, j[h]] = True
