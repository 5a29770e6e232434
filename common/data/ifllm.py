"""Loader for the public IFLLM data set (gaze and mouse traces of people reading LLM answers).

``load_ifllm(root)`` turns the raw tables and trace folders into the project schema: one
:class:`~fedgaze.data.schema.Device` per Mechanical Turk worker, each query carrying the gaze and
mouse :class:`~fedgaze.data.schema.Samples` recorded while its answers were on screen.  Nothing
malformed is fatal: every row or file that cannot be used becomes a
:class:`~fedgaze.data.schema.Problem` (file relative to ``root``, 1-based physical line, 0 for a
whole file, and a reason of the form ``"category: detail"``) and everything valid is kept.

Layout: ``query_logs_table.csv[.gz]``, ``task_table.csv[.gz]`` and
``user_behavior/<worker>/<task_id>/*.csv[.gz]``; ``X.csv`` is preferred over ``X.csv.gz``.

Quirks handled (see ``shared/datasets/ifllm/README.md``)
-------------------------------------------------------
* ``rel_*`` rows: ``x,y,snippet,char_index,page_timer_ms[,validate],epoch_ms``.  The snippet is
  neither reliably quoted nor CSV-escaped (this copy has unquoted snippets such as ``019, 2023)``,
  doubled quotes, stray ``",`` and a stray ``"`` after ``epoch_ms``), so rows are split on commas
  and the fixed numeric fields are taken from both ends; the snippet is the text in between, minus
  one pair of enclosing quotes.  A snippet containing newlines spreads one record over several
  physical lines: a line that does not parse on its own, starts like a record (``x,y,"``) and
  does not end like one (``,epoch_ms``) is joined with the following lines that do not parse on
  their own either until the result parses (see ``_repair``).  Problems point at the line where
  the bad record starts.
* 6-column ``rel_*`` files (September 2025) have no ``validate``: the layout is chosen per file
  from the rows that parse; ``validate`` is then -1.
* Pairwise ``abs_gaze`` has every batch written twice: exact duplicate rows are dropped from
  ``abs_*`` files (after that every folder of this copy matches ``abs_mouse`` 1:1).
* Files of a folder are aligned on ``page_timer_ms`` plus its occurrence number (the page timer can
  freeze for a few rows and restarts when the page is reloaded; ``epoch_ms`` can step backwards):
  rows present in only one file are dropped and reported, per file, as one summary Problem.
  ``t_ms`` is the ``abs_*`` ``epoch_ms``.
* ``-1,-1`` sentinels: ``abs_mouse`` before the first move becomes NaN x, y; a ``rel_*`` row at
  ``-1,-1`` is off that panel.  ``side`` is LEFT when the left (``_one``/``_left``, or the only
  pointwise) row is on its panel, else RIGHT when the right row is, else NONE; ``char_index`` and
  the snippet come from that row (-1 / empty when none).
* Pairwise vs pointwise is taken from the files present in the folder (two task ids break the
  odd/even rule), falling back to ``llm_response_2`` being non-empty when there is no folder.
* ``preference``/``likert_*`` are float strings (``"2.0"``); ``query_timestamp``
  ``0000-00-00 00:00:00`` or unparsable gives ``shown_at_ms=None`` and a Problem; "AI Error"
  responses are kept verbatim.  The schema has no field for ``llm_name_*`` (one carries a stray
  ``\\r\\n``), so names are not loaded.
* Calibration precision is ``task_table.accuracy`` per (worker, task) -> ``Device.calibration``.

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
(``evidence_*`` keys).  Everything is vectorized (numpy/polars) except loops over files, pages and
queries, and over the rare unparsable lines.
"""

from __future__ import annotations

import csv
import io
import re
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

import numpy as np
import numpy.typing as npt
import polars as pl

from fedgaze.data.schema import (
    PREF_LEFT,
    PREF_RIGHT,
    PREF_TIE,
    SIDE_LEFT,
    SIDE_NONE,
    SIDE_RIGHT,
    Device,
    Problem,
    Query,
    Samples,
)

__all__ = ["IfllmDataset", "list_workers", "load_ifllm"]

QUERY_TABLE = "query_logs_table"
TASK_TABLE = "task_table"
BEHAVIOR_DIR = "user_behavior"

_HOUR_MS = 3_600_000
_OFFSET_MS = 4 * _HOUR_MS  # September 2025 query_timestamp offset
_SPAN_SLACK_MS = 60_000  # slack around a page's trace span when choosing the offset
_TS_TOLERANCE_MS = 5 * 60_000  # a corrected timestamp further outside the span is unusable
_FINISHED_BEFORE_MS = 3 * _HOUR_MS  # queries of a page come at most this long before `finished`
_LAG_MS = 2_000  # new answers appear within this long after query_timestamp
_MIN_SNIPPET = 8  # shorter snippets are too common to be evidence
_MAX_JOIN_LINES = 6  # physical lines one rel record may span (snippet with newlines)
_MAX_SNIPPET = 80  # a rejoined snippet longer than this is a false join (snippets are ~20)
_MAX_SKEW_MS = 1_000  # aligned rows whose epoch_ms differ more than this are reported
_EPOCH_MIN_MS = 946_684_800_000.0  # 2000-01-01
_EPOCH_MAX_MS = 4_102_444_800_000.0  # 2100-01-01
_TS_FORMAT = "%Y-%m-%d %H:%M:%S"
_GZ_CHUNK = 1 << 20
_RECORD_START = re.compile(r'^\s*[-+]?[\d.]+(?:[eE][-+]?\d+)?\s*,\s*[-+]?[\d.]+(?:[eE][-+]?\d+)?,"')
_ENDS_WITH_EPOCH = re.compile(r',\s*\d{10,}(?:\.\d*)?"?\s*$')  # a complete (if bad) record

_QUERY_COLUMNS = (
    "query_ID",
    "user_id",
    "task_id",
    "user_query",
    "llm_response_1",
    "llm_response_2",
    "likert_1",
    "likert_2",
    "preference",
    "query_timestamp",
)
_TASK_COLUMNS = ("user_id", "task_id", "accuracy")

Bool = npt.NDArray[np.bool_]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


# --------------------------------------------------------------------------------------------
# public API


@dataclass(frozen=True)
class IfllmDataset:
    """The loaded data set: one device per worker, every unusable row, and load counters.

    ``devices`` are sorted by ``device_id``.  ``problems`` lists each row or file that could not
    be used (file relative to the root, 1-based line, 0 for a whole file, ``"category: detail"``
    reason).  ``stats`` holds counters such as ``samples_gaze``, ``samples_dropped_before_first``
    or ``evidence_contradicts_time`` (see the module docstring); it is informational only.
    """

    devices: tuple[Device, ...]
    problems: tuple[Problem, ...]
    stats: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stats", MappingProxyType(dict(self.stats)))

    def device(self, device_id: str) -> Device:
        """The device of one worker; KeyError naming it when it was not loaded."""
        for dev in self.devices:
            if dev.device_id == device_id:
                return dev
        raise KeyError(f"worker {device_id!r} is not in this IfllmDataset")

    def problem_counts(self) -> dict[str, int]:
        """How many problems of each category (the part of ``reason`` before the first ':')."""
        return dict(Counter(p.reason.split(":", 1)[0] for p in self.problems))


def list_workers(root: str | Path) -> list[str]:
    """Worker ids that appear in the query log, sorted: the devices ``load_ifllm`` can build.

    Only the query table is read, so this is cheap enough to plan a federated cohort.
    """
    base = _check_root(root)
    sink = _Sink(base)
    return sorted({q.user_id for q in _read_queries(base, sink)})


def labelled_comparison_counts(root: str | Path) -> dict[str, int]:
    """Labelled pairwise comparisons (two answers, preference 1 or 2) per worker in the log.

    Read from the query table alone (no traces), to plan which workers make useful devices.
    """
    base = _check_root(root)
    queries = _read_queries(base, _Sink(base))
    counts = dict.fromkeys(sorted({q.user_id for q in queries}), 0)
    for q in queries:
        if q.response_2 and q.preference in (PREF_LEFT, PREF_RIGHT):
            counts[q.user_id] += 1
    return counts


def load_ifllm(root: str | Path, workers: Sequence[str] | None = None) -> IfllmDataset:
    """Load IFLLM into the project schema, for all workers or only the listed ones.

    Each device reads the two tables once and then only its own trace folders, so loading a
    single worker is cheap (what a federated client does).  Raises FileNotFoundError when the
    root or a required table is missing, ValueError when a table lacks required columns or is
    not CSV, and KeyError naming workers that are not in the query log.  Everything else that
    is wrong with the data becomes a Problem and is skipped.
    """
    base = _check_root(root)
    sink = _Sink(base)
    queries = _read_queries(base, sink)
    tasks = _read_tasks(base, sink)
    known = sorted({q.user_id for q in queries})
    chosen = known if workers is None else sorted(set(workers))
    unknown = [w for w in chosen if w not in set(known)]
    if unknown:
        raise KeyError(
            f"unknown worker(s) {unknown} (not in {table_path(base, QUERY_TABLE)}); "
            f"{len(known)} workers are known, e.g. {known[:3]}"
        )
    behavior = base / BEHAVIOR_DIR
    if not behavior.is_dir():
        sink.add(behavior, 0, "missing folder: no traces for any worker")
    ctx = _Ctx(base=base, query_path=table_path(base, QUERY_TABLE), sink=sink, stats=Counter())
    by_worker: dict[str, list[_QueryRow]] = {w: [] for w in chosen}
    for q in queries:
        if q.user_id in by_worker:
            by_worker[q.user_id].append(q)
    devices = tuple(_load_device(ctx, w, by_worker[w], tasks) for w in chosen)
    return IfllmDataset(devices=devices, problems=tuple(sink.problems), stats=dict(ctx.stats))


# --------------------------------------------------------------------------------------------
# files


class _Sink:
    """Collects Problems with file names relative to the data root."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.problems: list[Problem] = []

    def add(self, path: Path, line: int, reason: str) -> None:
        """Record a Problem at ``path`` (made relative to the root when under it)."""
        try:
            name = path.relative_to(self.base).as_posix()
        except ValueError:
            name = path.as_posix()
        self.problems.append(Problem(file=name, line=line, reason=reason))


@dataclass(frozen=True)
class _Ctx:
    """What every page of a load shares: root, query table path, problem sink, counters."""

    base: Path
    query_path: Path
    sink: _Sink
    stats: Counter[str]


def _check_root(root: str | Path) -> Path:
    """The root as a Path; FileNotFoundError naming it when it is not a folder."""
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"IFLLM root folder not found: {base}")
    return base


def _resolve(folder: Path, stem: str) -> Path | None:
    """``stem.csv`` if present, else ``stem.csv.gz``, else None."""
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        path = folder / name
        if path.is_file():
            return path
    return None


def table_path(base: Path, stem: str) -> Path:
    """A required table's file; FileNotFoundError naming the expected path when absent."""
    path = _resolve(base, stem)
    if path is None:
        raise FileNotFoundError(
            f"required IFLLM table missing: {base / (stem + '.csv')} (or .csv.gz)"
        )
    return path


def _gunzip(data: bytes) -> tuple[bytes, str | None]:
    """Decompress (possibly multi-member) gzip data; keep what precedes a truncation/corruption."""
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
        end = pos
        try:
            while not dec.eof and end < len(data):
                chunk = data[end : end + _GZ_CHUNK]
                end += len(chunk)
                out.append(dec.decompress(chunk))
        except zlib.error as err:
            return b"".join(out), f"corrupt gzip stream ({err})"
        if not dec.eof:
            out.append(dec.flush())
            return b"".join(out), "truncated gzip stream (file cut short)"
        pos = end - len(dec.unused_data)
        while pos < len(data) and data[pos] == 0:  # zero padding between members
            pos += 1
    return b"".join(out), None


def _read_text(path: Path, sink: _Sink) -> tuple[str, bool]:
    """The decoded text of a .csv or .csv.gz file and whether it was cut short.

    A damaged gzip stream keeps its readable prefix and is reported; invalid UTF-8 is replaced
    and reported with the line where it starts.
    """
    data = path.read_bytes()
    cut = False
    if path.name.endswith(".gz"):
        data, damage = _gunzip(data)
        if damage is not None:
            cut = True
            lines = data.count(b"\n")
            sink.add(path, 0, f"damaged file: {damage}; kept the {lines} complete lines before it")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        sink.add(path, line, f"bad encoding: invalid UTF-8 at byte {err.start} replaced")
        text = data.decode("utf-8-sig", errors="replace")
    return text, cut


# --------------------------------------------------------------------------------------------
# tables


@dataclass(frozen=True)
class _QueryRow:
    """One query-log row, parsed but not yet checked against its page's traces."""

    query_id: int
    user_id: str
    task_id: int
    prompt: str
    response_1: str
    response_2: str | None
    likert_1: float | None
    likert_2: float | None
    preference: float | None
    ts_ms: float | None
    line: int
    issues: tuple[str, ...] = ()  # problems found while parsing, reported with the worker


@dataclass(frozen=True)
class _TaskInfo:
    """Task-table facts of one (worker, task): calibration precision and finish time."""

    accuracy: float | None
    finished_ms: float | None


def _csv_records(
    path: Path, required: Sequence[str], sink: _Sink
) -> Iterator[tuple[int, dict[str, str]]]:
    """(start line, row dict) for each record of a header CSV with quoted multi-line fields."""
    text, _ = _read_text(path, sink)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except (StopIteration, csv.Error) as err:
        raise ValueError(f"{path}: no CSV header ({err})") from err
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{path}: missing required column(s) {missing}; header is {header}")
    start = reader.line_num + 1
    try:
        for row in reader:
            line, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                sink.add(path, line, f"bad row: {len(row)} fields, header has {len(header)}")
                continue
            yield line, dict(zip(header, row, strict=True))
    except csv.Error as err:
        raise ValueError(f"{path}: unreadable CSV near line {reader.line_num}: {err}") from err


def _opt_float(text: str) -> float | None:
    """None for an empty cell; ValueError for a non-number."""
    text = text.strip()
    if not text or text.lower() in ("nan", "null", "none"):
        return None
    value = float(text)
    if not np.isfinite(value):
        raise ValueError(text)
    return value


def _parse_ts(text: str) -> float | None:
    """UTC epoch ms of a ``YYYY-mm-dd HH:MM:SS`` (or other ISO 8601) timestamp, None if unusable.

    Naive times are UTC, as the README says of ``query_timestamp``.
    """
    text = text.strip()
    try:
        moment = datetime.strptime(text, _TS_FORMAT)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp() * 1000.0


def _read_queries(base: Path, sink: _Sink) -> list[_QueryRow]:
    """Every usable query-log row; rows without a usable id, worker or task are Problems."""
    path = table_path(base, QUERY_TABLE)
    rows: list[_QueryRow] = []
    seen: set[int] = set()
    for line, rec in _csv_records(path, _QUERY_COLUMNS, sink):
        try:
            query_id = int(rec["query_ID"].strip())
            task_id = int(rec["task_id"].strip())
        except ValueError:
            sink.add(
                path,
                line,
                f"bad row: query_ID/task_id not integers ({rec['query_ID']!r}, {rec['task_id']!r})",
            )
            continue
        user = rec["user_id"].strip()
        if not user:
            sink.add(path, line, "bad row: empty user_id")
            continue
        if query_id in seen:
            sink.add(path, line, f"duplicate row: query_ID {query_id} seen before; skipped")
            continue
        seen.add(query_id)
        issues: list[str] = []
        numbers: dict[str, float | None] = {}
        for col in ("likert_1", "likert_2", "preference"):
            try:
                numbers[col] = _opt_float(rec[col])
            except ValueError:
                issues.append(
                    f"bad value: {col} {rec[col]!r} of query_ID {query_id} is not a "
                    f"number; set to None"
                )
                numbers[col] = None
        ts = _parse_ts(rec["query_timestamp"])
        if ts is None:
            issues.append(
                f"bad timestamp: query_timestamp {rec['query_timestamp']!r} unusable "
                f"(query_ID {query_id}); shown_at_ms=None"
            )
        right = rec["llm_response_2"]
        rows.append(
            _QueryRow(
                query_id=query_id,
                user_id=user,
                task_id=task_id,
                prompt=rec["user_query"],
                response_1=rec["llm_response_1"],
                response_2=right if right.strip() else None,
                likert_1=numbers["likert_1"],
                likert_2=numbers["likert_2"],
                preference=numbers["preference"],
                ts_ms=ts,
                line=line,
                issues=tuple(issues),
            )
        )
    return rows


def _read_tasks(base: Path, sink: _Sink) -> dict[tuple[str, int], _TaskInfo]:
    """Calibration precision and finish time per (worker, task) from the task table."""
    path = table_path(base, TASK_TABLE)
    out: dict[tuple[str, int], _TaskInfo] = {}
    for line, rec in _csv_records(path, _TASK_COLUMNS, sink):
        try:
            key = (rec["user_id"].strip(), int(rec["task_id"].strip()))
            accuracy = _opt_float(rec["accuracy"])
        except ValueError:
            sink.add(
                path,
                line,
                f"bad row: task_id {rec['task_id']!r} or accuracy {rec['accuracy']!r} not a number",
            )
            continue
        finished = _parse_ts(rec.get("finished", ""))
        old = out.get(key)
        if old is not None:
            if accuracy is not None and old.accuracy is not None and accuracy != old.accuracy:
                sink.add(
                    path,
                    line,
                    f"conflicting row: accuracy {accuracy} for {key} differs "
                    f"from an earlier row ({old.accuracy}); kept the earlier one",
                )
            accuracy = old.accuracy if old.accuracy is not None else accuracy
            if old.finished_ms is not None:
                finished = old.finished_ms if finished is None else min(finished, old.finished_ms)
        out[key] = _TaskInfo(accuracy=accuracy, finished_ms=finished)
    return out


# --------------------------------------------------------------------------------------------
# trace files


@dataclass(frozen=True)
class _Layout:
    """Columns of a headerless trace file: x, y, [snippet], then ``tail`` numeric fields."""

    name: str
    tail: tuple[str, ...]
    has_snippet: bool

    @property
    def n_fields(self) -> int:
        """Comma-separated fields of a row whose snippet (if any) has no comma."""
        return 2 + int(self.has_snippet) + len(self.tail)

    def fields(self) -> tuple[str, ...]:
        """The numeric fields, in file order."""
        return ("x", "y", *self.tail)

    def index(self, name: str) -> int:
        """Position of a numeric field among the comma-split parts (negative: from the end)."""
        if name in ("x", "y"):
            return ("x", "y").index(name)
        return self.tail.index(name) - len(self.tail)

    def describe(self) -> str:
        """The column list, for messages."""
        names = ["x", "y"] + (["snippet"] if self.has_snippet else []) + list(self.tail)
        return ",".join(_FIELD_NAMES.get(n, n) for n in names)


_FIELD_NAMES = {"ci": "char_index", "pt": "page_timer_ms", "v": "validate", "e": "epoch_ms"}
_ABS = _Layout("abs", ("pt", "e"), has_snippet=False)
_REL7 = _Layout("rel7", ("ci", "pt", "v", "e"), has_snippet=True)
_REL6 = _Layout("rel6", ("ci", "pt", "e"), has_snippet=True)


_TYPES = {"ci": pl.Int64, "v": pl.Int64}  # everything else is Float64


def _validity(name: str) -> pl.Expr:
    """Is the typed column ``name`` a valid value (nulls are not)?"""
    col = pl.col(name)
    checks = {
        "ci": col.is_between(-1, 2**31 - 1),
        "v": col.is_in([-1, 0, 1]),
        "e": col.is_between(_EPOCH_MIN_MS, _EPOCH_MAX_MS),
        "pt": col.is_finite() & (col >= 0),
    }
    return checks.get(name, col.is_finite()).fill_null(False)


@lru_cache(maxsize=8)
def _parse_plan(layout: _Layout) -> tuple[list[pl.Expr], ...]:
    """Expression stages: raw fields, snippet (from raw widths), typed fields, parse code."""
    parts = pl.col("parts")
    fields = layout.fields()
    raw = [parts.list.len().alias("n")]
    raw += [parts.list.get(layout.index(f), null_on_oob=True).alias(f) for f in fields]
    typed = []
    for f in fields:
        text = pl.col(f).str.strip_chars('"') if f == "e" else pl.col(f)
        value = text.cast(_TYPES.get(f, pl.Float64), strict=False)
        typed.append(
            pl.when(pl.col(f) == "").then(-1).otherwise(value).alias(f)
            if f == "ci"
            else value.alias(f)
        )
    n = pl.col("n")
    count_ok = (n >= layout.n_fields) if layout.has_snippet else (n == layout.n_fields)
    failed = [~count_ok, *[~_validity(f) for f in fields]]
    first = pl.min_horizontal(pl.when(b).then(i + 1).otherwise(99) for i, b in enumerate(failed))
    code = [pl.when(first == 99).then(0).otherwise(first).cast(pl.Int8).alias("code")]
    snippet = [_snippet_expr(layout).alias("snip")] if layout.has_snippet else []
    return raw, snippet, typed, code


def _parse_lines(lines: pl.Series, layout: _Layout) -> pl.DataFrame:
    """Vectorized parse: typed columns plus ``code`` (0 = valid, 1 = field count, 2+ = field)."""
    frame = (
        pl.DataFrame({"line": lines})
        .lazy()
        .with_columns(pl.col("line").str.split(",").alias("parts"))
    )
    for stage in _parse_plan(layout):
        if stage:
            frame = frame.with_columns(stage)
    keep = ["code", *layout.fields()] + (["snip"] if layout.has_snippet else [])
    return frame.select(keep).collect()


def _snippet_expr(layout: _Layout) -> pl.Expr:
    """The text between the two leading and the fixed trailing fields, minus enclosing quotes."""
    start = pl.col("x").str.len_chars() + pl.col("y").str.len_chars() + 2
    tail = pl.sum_horizontal(pl.col(f).str.len_chars() + 1 for f in layout.tail)
    text = pl.col("line").str.slice(start, pl.col("line").str.len_chars() - start - tail)
    quoted = text.str.starts_with('"') & text.str.ends_with('"') & (text.str.len_chars() >= 2)
    return pl.when(quoted).then(text.str.slice(1, text.str.len_chars() - 2)).otherwise(text)


def _explain(line: str, code: int, layout: _Layout) -> str:
    """Human reason for a failed parse ``code`` of ``line``."""
    fields = line.split(",")
    if code == 1:
        need = f"{layout.n_fields}{'+' if layout.has_snippet else ''}"
        return (
            f"bad row: expected {need} comma-separated fields ({layout.describe()}), "
            f"found {len(fields)}: {line[:60]!r}"
        )
    name = layout.fields()[code - 2]
    what = {
        "ci": "an integer >= -1 or empty",
        "v": "0, 1 or -1",
        "e": "a plausible epoch in ms",
        "pt": "a non-negative number",
    }.get(name, "a number")
    return f"bad row: {_FIELD_NAMES.get(name, name)} {fields[layout.index(name)]!r} is not {what}"


def _read_trace(
    path: Path, layouts: Sequence[_Layout], sink: _Sink
) -> tuple[pl.DataFrame, _Layout]:
    """Parse one trace file into typed rows (with 1-based ``line``), reporting bad lines.

    With several candidate layouts (6/7-column rel files) the one that fits the file wins.
    """
    text, cut = _read_text(path, sink)
    raw = text.split("\n")
    if raw and raw[-1] == "":
        raw.pop()
    elif cut and raw:
        sink.add(path, len(raw), "damaged file: last line cut off by the damage; dropped")
        raw.pop()
    lines = pl.Series("line", raw, dtype=pl.String).str.strip_suffix("\r")
    parsed, layout = _parse_best(lines, layouts)
    parsed = parsed.with_columns(pl.int_range(1, len(lines) + 1, dtype=pl.Int64).alias("line"))
    blank = lines.str.strip_chars().str.len_chars() == 0
    bad = np.flatnonzero((parsed["code"] != 0).to_numpy() & ~blank.to_numpy())
    good = parsed.filter(pl.col("code") == 0)
    if len(bad):
        repaired = _repair(lines, parsed["code"].to_numpy(), bad, layout, path, sink)
        if repaired is not None:
            good = pl.concat([good, repaired], how="vertical_relaxed").sort("line")
    return good.drop("code"), layout


def _parse_best(lines: pl.Series, layouts: Sequence[_Layout]) -> tuple[pl.DataFrame, _Layout]:
    """Parse with the first layout that fits at least half of the lines, else the best one."""
    best: tuple[int, pl.DataFrame, _Layout] | None = None
    for layout in layouts:
        parsed = _parse_lines(lines, layout)
        valid = int((parsed["code"] == 0).sum())
        if 2 * valid >= len(lines):
            return parsed, layout
        if best is None or valid > best[0]:
            best = (valid, parsed, layout)
    assert best is not None
    return best[1], best[2]


def _join_candidates(
    lines: pl.Series, is_bad: Bool, bad: I64
) -> tuple[list[int], list[int], list[str]]:
    """(start, n_lines, text) of every way to join a bad record start with following bad lines."""
    starts: list[int] = []
    spans: list[int] = []
    texts: list[str] = []
    for i in bad.tolist():
        if not _RECORD_START.match(lines[i]) or _ENDS_WITH_EPOCH.search(lines[i]):
            continue
        for j in range(i + 1, min(i + _MAX_JOIN_LINES, len(lines))):
            if not is_bad[j] or _RECORD_START.match(lines[j]):
                break
            starts.append(i)
            spans.append(j - i + 1)
            texts.append("\n".join(lines.slice(i, j - i + 1).to_list()))
    return starts, spans, texts


def _repair(
    lines: pl.Series,
    code: npt.NDArray[np.int8],
    bad: I64,
    layout: _Layout,
    path: Path,
    sink: _Sink,
) -> pl.DataFrame | None:
    """Rejoin records split by newlines in the snippet; report the lines that stay bad.

    A bad line that starts like a record (``x,y,"``) but does not end like one (with an epoch)
    is joined with the next 1..``_MAX_JOIN_LINES``-1 lines, each bad on its own and not itself
    starting like a record; the shortest join that parses with a snippet of at most
    ``_MAX_SNIPPET`` characters wins.
    """
    starts, spans, texts = (
        _join_candidates(lines, code != 0, bad) if layout.has_snippet else ([], [], [])
    )
    cand = _parse_lines(pl.Series("line", texts, dtype=pl.String), layout)
    fits = cand["code"] == 0
    if layout.has_snippet:
        fits &= cand["snip"].str.len_chars() <= _MAX_SNIPPET
    shortest: dict[int, int] = {}
    for c, ok in enumerate(fits.to_list()):
        if ok:
            shortest.setdefault(starts[c], c)
    keep: list[int] = []
    consumed = -1
    for i in bad.tolist():
        if i <= consumed:
            continue
        if i in shortest:
            keep.append(shortest[i])
            consumed = i + spans[shortest[i]] - 1
        else:
            sink.add(path, i + 1, _explain(lines[i], int(code[i]), layout))
    if not keep:
        return None
    return cand[keep].with_columns(pl.Series("line", [starts[c] + 1 for c in keep], dtype=pl.Int64))


# --------------------------------------------------------------------------------------------
# folders


@dataclass(frozen=True)
class _FolderSpec:
    """File stems of a folder kind: modality -> (abs stem, left rel stem[, right rel stem])."""

    pairwise: bool
    files: Mapping[str, tuple[str, ...]]


_PAIRWISE = _FolderSpec(
    True,
    {
        "gaze": ("abs_gaze", "rel_gaze_one", "rel_gaze_two"),
        "mouse": ("abs_mouse", "rel_mouse_left", "rel_mouse_right"),
    },
)
_POINTWISE = _FolderSpec(
    False,
    {
        "gaze": ("abs_gaze", "rel_gaze"),
        "mouse": ("abs_mouse", "rel_mouse"),
    },
)


@dataclass(frozen=True)
class _Folder:
    """Aligned samples of one page: modality -> frame (t, pt, occ, x, y, side, ci, v, snip)."""

    pairwise: bool
    frames: Mapping[str, pl.DataFrame]

    def span(self) -> tuple[float, float] | None:
        """(first, last) sample time over all modalities, None without samples."""
        ts = [f["t"].to_numpy() for f in self.frames.values() if len(f)]
        if not ts:
            return None
        return float(min(a.min() for a in ts)), float(max(a.max() for a in ts))


def _folder_spec(folder: Path) -> _FolderSpec | None:
    """Which kind of page the files present say this is (None when there are no rel files)."""

    def present(spec: _FolderSpec) -> int:
        return sum(_resolve(folder, s) is not None for f in spec.files.values() for s in f[1:])

    pair, point = present(_PAIRWISE), present(_POINTWISE)
    if pair == point == 0:
        return None
    return _PAIRWISE if pair >= point else _POINTWISE


def _load_folder(folder: Path, sink: _Sink, stats: Counter[str]) -> _Folder | None:
    """Read, clean and align every modality of a task folder."""
    spec = _folder_spec(folder)
    if spec is None:
        sink.add(folder, 0, "missing file: no rel_* trace files in this task folder; no samples")
        return None
    frames: dict[str, pl.DataFrame] = {}
    for modality, stems in spec.files.items():
        paths = [_resolve(folder, s) for s in stems]
        missing = [s for s, p in zip(stems, paths, strict=True) if p is None]
        if missing:
            for stem in missing:
                sink.add(
                    folder / f"{stem}.csv.gz",
                    0,
                    f"missing file: no {stem}.csv(.gz), "
                    f"needed for {modality} samples; {modality} left empty",
                )
            continue
        found = [p for p in paths if p is not None]
        frames[modality] = _load_modality(found, modality, sink, stats)
    return _Folder(pairwise=spec.pairwise, frames=frames)


def _load_modality(
    paths: Sequence[Path], modality: str, sink: _Sink, stats: Counter[str]
) -> pl.DataFrame:
    """abs + rel files of one modality -> aligned columns t, x, y, side, ci, v, snip."""
    absf, _ = _read_trace(paths[0], [_ABS], sink)
    before = len(absf)
    absf = absf.unique(subset=["x", "y", "pt", "e"], keep="first", maintain_order=True)
    stats[f"abs_{modality}_duplicate_rows_dropped"] += before - len(absf)
    joined = _with_occurrence(absf)
    sides = ["l", "r"][: len(paths) - 1]
    for side, path in zip(sides, paths[1:], strict=True):
        rel, layout = _read_trace(path, [_REL7, _REL6], sink)
        if layout is _REL6:
            rel = rel.with_columns(pl.lit(-1, pl.Int64).alias("v"))
        cols = ("x", "y", "ci", "v", "e", "snip", "line")
        rel = _with_occurrence(rel).select(
            "pt", "occ", *[pl.col(c).alias(f"{c}_{side}") for c in cols]
        )
        joined = _join_reporting(joined, rel, (paths[0], path), ("line", f"line_{side}"), sink)
        _report_skew(joined, side, (paths[0], path), sink)
    return _sides(joined, sides, mouse=modality == "mouse")


def _with_occurrence(frame: pl.DataFrame) -> pl.DataFrame:
    """Add ``occ``: how many earlier rows share this page_timer_ms (the timer can freeze)."""
    pt = frame["pt"].to_numpy()
    order = np.argsort(pt, kind="stable")
    run_start = np.r_[True, pt[order][1:] != pt[order][:-1]] if len(pt) else np.zeros(0, bool)
    pos = np.arange(len(pt))
    occ = np.empty(len(pt), dtype=np.int64)
    occ[order] = pos - np.maximum.accumulate(np.where(run_start, pos, 0))
    return frame.with_columns(pl.Series("occ", occ))


def _join_reporting(
    left: pl.DataFrame,
    right: pl.DataFrame,
    paths: tuple[Path, Path],
    line_cols: tuple[str, str],
    sink: _Sink,
) -> pl.DataFrame:
    """Inner join on (page timer, occurrence); rows of either file without a partner reported."""
    key = ["pt", "occ"]
    for frame, other, path, other_path, line_col in (
        (left, right, paths[0], paths[1], line_cols[0]),
        (right, left, paths[1], paths[0], line_cols[1]),
    ):
        lonely = frame.join(other.select(key), on=key, how="anti", maintain_order="left")
        if len(lonely):
            sink.add(
                path,
                int(lonely[line_col][0]),
                f"unaligned rows: {len(lonely)} of {len(frame)} rows have no row with the "
                f"same page_timer_ms in {other_path.name}; dropped",
            )
    return left.join(right, on=key, how="inner", maintain_order="left")


def _report_skew(joined: pl.DataFrame, side: str, paths: tuple[Path, Path], sink: _Sink) -> None:
    """Aligned rows whose rel epoch_ms is far from the abs one (kept: t_ms comes from abs)."""
    skew = np.abs(joined["e"].to_numpy() - joined[f"e_{side}"].to_numpy())
    far = skew > _MAX_SKEW_MS
    if far.any():
        first = int(joined[f"line_{side}"].to_numpy()[np.argmax(far)])
        sink.add(
            paths[1],
            first,
            f"clock skew: {int(far.sum())} rows aligned on page_timer_ms differ from "
            f"{paths[0].name} epoch_ms by more than {_MAX_SKEW_MS} ms (max "
            f"{skew.max():.0f} ms); kept, t_ms comes from {paths[0].name}",
        )


def _sides(joined: pl.DataFrame, sides: Sequence[str], mouse: bool) -> pl.DataFrame:
    """Side, char_index, validate and snippet from the per-panel rel columns."""
    on = {s: ~((pl.col(f"x_{s}") == -1) & (pl.col(f"y_{s}") == -1)) for s in sides}
    code = {"l": SIDE_LEFT, "r": SIDE_RIGHT}

    def pick(values: Mapping[str, pl.Expr], default: object) -> pl.Expr:
        """The value of the first side whose panel holds the point, else ``default``."""
        return pl.coalesce([*(pl.when(on[s]).then(values[s]) for s in sides), pl.lit(default)])

    unmoved = (pl.col("x") == -1) & (pl.col("y") == -1) if mouse else pl.lit(False)
    return joined.select(
        pl.col("e").alias("t"),
        "pt",
        "occ",
        pl.when(unmoved).then(None).otherwise(pl.col("x")).fill_null(np.nan).alias("x"),
        pl.when(unmoved).then(None).otherwise(pl.col("y")).fill_null(np.nan).alias("y"),
        pick({s: pl.lit(code[s]) for s in sides}, SIDE_NONE).cast(pl.Int8).alias("side"),
        pick({s: pl.col(f"ci_{s}") for s in sides}, -1).cast(pl.Int32).alias("ci"),
        pl.col(f"v_{sides[0]}").cast(pl.Int8).alias("v"),
        pick({s: pl.col(f"snip_{s}") for s in sides}, "").alias("snip"),
    )


# --------------------------------------------------------------------------------------------
# timestamps


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


# --------------------------------------------------------------------------------------------
# attribution


def _utf16_len(text: str | None) -> int:
    """Length as the browser counts caret offsets (UTF-16 code units); -1 for no text."""
    return -1 if text is None else len(text.encode("utf-16-le")) // 2


@dataclass(frozen=True)
class _Evidence:
    """Per sample x query: does its snippet/char_index support or contradict that query?"""

    support: Bool
    against: Bool
    has: Bool  # the sample carries any evidence at all

    @classmethod
    def build(
        cls,
        side: npt.NDArray[np.int8],
        ci: npt.NDArray[np.int32],
        snip: pl.Series,
        left: Sequence[str],
        right: Sequence[str | None],
    ) -> _Evidence:
        lens = np.full((len(left), 3), -1, dtype=np.int64)
        lens[:, SIDE_LEFT] = [_utf16_len(t) for t in left]
        lens[:, SIDE_RIGHT] = [_utf16_len(t) for t in right]
        on_panel = side != SIDE_NONE
        usable = on_panel & (snip.str.len_chars() >= _MIN_SNIPPET).to_numpy()
        found = _snippet_hits(side, snip, usable, left, right)
        char_bad = (on_panel & (ci >= 0))[:, None] & (ci[:, None] > lens[:, side].T)
        against = (usable[:, None] & ~found) | char_bad
        support = usable[:, None] & found & ~char_bad
        has = usable | (on_panel & (ci >= 0))
        return cls(support=support, against=against, has=has)


def _snippet_hits(
    side: npt.NDArray[np.int8],
    snip: pl.Series,
    usable: Bool,
    left: Sequence[str],
    right: Sequence[str | None],
) -> Bool:
    """found[i, j]: sample i's snippet occurs in query j's response on the sample's side."""
    frame = pl.DataFrame({"side": side, "snip": snip})
    uniq = frame.filter(pl.Series(usable)).unique()
    checks = [
        pl.when(pl.col("side") == SIDE_LEFT)
        .then(pl.lit(lt).str.contains(pl.col("snip"), literal=True))
        .otherwise(pl.lit(rt or "").str.contains(pl.col("snip"), literal=True))
        .alias(f"q{j}")
        for j, (lt, rt) in enumerate(zip(left, right, strict=True))
    ]
    uniq = uniq.with_columns(checks)
    hits = frame.join(uniq, on=["side", "snip"], how="left", maintain_order="left")
    cols = [f"q{j}" for j in range(len(left))]
    return hits.select(cols).fill_null(False).to_numpy().astype(bool).reshape(len(side), -1)


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


def _instant_times(frame: pl.DataFrame) -> F64:
    """Per row, the earliest t_ms of the rows recorded at the same instant in other modalities.

    Gaze and mouse rows of one instant share (page_timer_ms, occurrence) but their abs epoch_ms
    differ by a few ms; attributing on a common time keeps each pair in the same query.
    """
    pt, occ = frame["pt"].to_numpy(), frame["occ"].to_numpy()
    t = frame["t"].to_numpy().astype(np.float64)
    order = np.lexsort((occ, pt))
    new_group = np.r_[True, (pt[order][1:] != pt[order][:-1]) | (occ[order][1:] != occ[order][:-1])]
    starts = np.flatnonzero(new_group)
    group_min = np.minimum.reduceat(t[order], starts) if len(t) else t
    out = np.empty_like(t)
    out[order] = np.repeat(group_min, np.diff(np.r_[starts, len(t)]))
    return out


def _attribute(
    folder: _Folder, ts: F64, left: Sequence[str], right: Sequence[str | None], stats: Counter[str]
) -> dict[str, I64]:
    """Query index (or -1) of every sample of every modality of a page."""
    mods = [m for m, f in folder.frames.items() if len(f)]
    if not mods:
        return {}
    frame = pl.concat([folder.frames[m] for m in mods])
    t = _instant_times(frame)
    side = frame["side"].to_numpy()
    ci = frame["ci"].to_numpy()
    ev = _Evidence.build(side, ci, frame["snip"], left, right)
    timed, refined = _boundaries(t, ts, ev)
    k_time, k_final = _assign(t, timed), _assign(t, refined)
    _count_evidence(ev, k_time, k_final, stats)
    out: dict[str, I64] = {}
    start = 0
    for m in mods:
        stop = start + len(folder.frames[m])
        out[m] = k_final[start:stop]
        start = stop
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


# --------------------------------------------------------------------------------------------
# devices


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


def _samples(frame: pl.DataFrame, k: I64, q: int) -> list[Samples]:
    """Split one modality's rows into time-ordered Samples per query index 0..q-1."""
    cols = {c: frame[c].to_numpy() for c in ("t", "x", "y", "side", "ci", "v")}
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


def _page_samples(
    ctx: _Ctx, folder: _Folder | None, ts: F64, rows: Sequence[_QueryRow]
) -> dict[str, list[Samples]]:
    """modality -> Samples of each query of the page (absent modality: no traces)."""
    if folder is None:
        return {}
    left = [r.response_1 for r in rows]
    right = [r.response_2 for r in rows]
    out: dict[str, list[Samples]] = {}
    for modality, k in _attribute(folder, ts, left, right, ctx.stats).items():
        out[modality] = _samples(folder.frames[modality], k, len(rows))
        ctx.stats[f"samples_{modality}"] += int((k >= 0).sum())
    return out


def _page_queries(
    ctx: _Ctx, worker: str, task: int, rows: list[_QueryRow], info: _TaskInfo | None
) -> list[Query]:
    """The queries of one (worker, task) page with their attributed samples."""
    folder_path = ctx.base / BEHAVIOR_DIR / worker / str(task)
    folder = _load_folder(folder_path, ctx.sink, ctx.stats) if folder_path.is_dir() else None
    if folder is None:
        ctx.stats["pages_without_traces"] += 1
    span = folder.span() if folder is not None else None
    ts = _correct_timestamps(ctx, rows, span, info.finished_ms if info else None)
    samples = _page_samples(ctx, folder, ts, rows)
    out = []
    for j, row in enumerate(rows):
        for issue in row.issues:
            ctx.sink.add(ctx.query_path, row.line, issue)
        pairwise = folder.pairwise if folder is not None else row.response_2 is not None
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
                task_id=task,
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
    """One worker's device: queries in query_ID (arrival) order, calibration per task."""
    pages: dict[int, list[_QueryRow]] = {}
    for row in sorted(rows, key=lambda r: r.query_id):
        pages.setdefault(row.task_id, []).append(row)
    queries: list[Query] = []
    for task, page_rows in pages.items():
        queries += _page_queries(ctx, worker, task, page_rows, tasks.get((worker, task)))
    queries.sort(key=lambda q: q.query_id)
    _report_orphans(ctx, worker, set(pages))
    calibration = {
        task: info.accuracy
        for (w, task), info in tasks.items()
        if w == worker and info.accuracy is not None
    }
    ctx.stats["queries"] += len(queries)
    return Device(device_id=worker, queries=tuple(queries), calibration=calibration)
