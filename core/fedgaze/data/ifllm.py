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
(``evidence_*`` keys).

Speed and memory
----------------
Devices are built one at a time (``iter_devices``; ``load_ifllm`` collects them), so memory is
bounded by the largest device.  All trace files of a device are read, parsed and aligned
together: ``read_csv`` reads the stored bytes of many files at once (gzip members concatenated,
a marker line between files), the ``abs_*`` files as 4 text fields typed like the per-line
parse, the ``rel_*`` files as lines that one vectorized parse splits; alignment and attribution
are numpy over the whole device, and snippets are searched for in two device-wide rounds.  A
batch ``read_csv`` rejects (damage, invalid UTF-8, a missing final newline, a BOM, ...) is
read file by file, and a file it rejects the careful way (Python decompression, decoding and
line split), which reports the problems; every route gives the same rows.  Python loops run
over files, pages, queries and bad lines only.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
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

__all__ = [
    "DeviceStream",
    "IfllmDataset",
    "iter_devices",
    "labelled_comparison_counts",
    "list_workers",
    "load_ifllm",
    "query_counts",
]

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
    is wrong with the data becomes a Problem and is skipped.  Holds every device in memory; see
    :func:`iter_devices` to process one device at a time.
    """
    loader = _Loader(root, workers)
    stats: Counter[str] = Counter()
    devices: list[Device] = []
    problems = list(loader.problems)
    for device, found in loader.devices(stats):
        devices.append(device)
        problems += found
    return IfllmDataset(devices=tuple(devices), problems=tuple(problems), stats=dict(stats))


def iter_devices(
    root: str | Path,
    workers: Sequence[str] | None = None,
    *,
    stats: Counter[str] | None = None,
) -> DeviceStream:
    """Load IFLLM one device at a time: ``(device, its problems)`` per worker, sorted by id.

    The same devices, problems and counters as :func:`load_ifllm` (which is built on it), but
    each device is built only when the iterator reaches it and nothing of it is kept afterwards,
    so peak memory is bounded by the largest device rather than the data set.  The two tables
    are read once, when this function is called: the errors :func:`load_ifllm` raises (missing
    root or table, bad header, unknown ``workers``) are raised here, before the first device.
    The problems of the tables themselves (and of a missing ``user_behavior`` folder) belong to
    no device: they are the returned stream's ``table_problems`` (``load_ifllm`` lists them
    first).  Pass a ``Counter`` as ``stats`` to receive the load counters (``samples_gaze``,
    ``samples_mouse``, ... as in :attr:`IfllmDataset.stats`) as devices are built.
    """
    loader = _Loader(root, workers)
    return DeviceStream(loader.devices(Counter() if stats is None else stats), loader.problems)


class DeviceStream(Iterator[tuple[Device, list[Problem]]]):
    """The iterator :func:`iter_devices` returns: ``(device, its problems)`` pairs, plus the
    ``table_problems`` found while reading the two tables (known before the first device)."""

    def __init__(
        self, devices: Iterator[tuple[Device, list[Problem]]], table_problems: Sequence[Problem]
    ) -> None:
        self._devices = devices
        self.table_problems: tuple[Problem, ...] = tuple(table_problems)

    def __iter__(self) -> DeviceStream:
        return self

    def __next__(self) -> tuple[Device, list[Problem]]:
        return next(self._devices)


def query_counts(root: str | Path) -> dict[str, int]:
    """Queries (pairwise and pointwise) per worker in the log, from the query table alone.

    With :func:`labelled_comparison_counts`, what planning a split of the workers needs: the
    cost of loading a device grows with its queries (pages of traces).
    """
    base = _check_root(root)
    return dict(sorted(Counter(q.user_id for q in _read_queries(base, _Sink(base))).items()))


class _Loader:
    """The tables of one root, read once, and the devices of the chosen workers on demand."""

    def __init__(self, root: str | Path, workers: Sequence[str] | None) -> None:
        base = _check_root(root)
        sink = _Sink(base)
        queries = _read_queries(base, sink)
        self.tasks = _read_tasks(base, sink)
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
        self.base = base
        self.query_path = table_path(base, QUERY_TABLE)
        self.problems: list[Problem] = sink.problems
        self.workers = chosen
        self.rows: dict[str, list[_QueryRow]] = {w: [] for w in chosen}
        for q in queries:
            if q.user_id in self.rows:
                self.rows[q.user_id].append(q)

    def devices(self, stats: Counter[str]) -> Iterator[tuple[Device, list[Problem]]]:
        """Build each chosen worker's device in turn, adding to ``stats``."""
        for worker in self.workers:
            sink = _Sink(self.base)
            ctx = _Ctx(base=self.base, query_path=self.query_path, sink=sink, stats=stats)
            device = _load_device(ctx, worker, self.rows[worker], self.tasks)
            yield device, sink.problems


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


def _resolve(folder: Path, stem: str, files: Set[str] | None = None) -> Path | None:
    """``stem.csv`` if present, else ``stem.csv.gz``, else None (``files``: the names of the
    folder's files, when already listed)."""
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        path = folder / name
        if name in files if files is not None else path.is_file():
            return path
    return None


def _file_names(folder: Path) -> set[str]:
    """Names of the (regular, or links to regular) files in a folder."""
    with os.scandir(folder) as entries:
        return {e.name for e in entries if e.is_file()}


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


def _read_bytes(path: Path, sink: _Sink) -> tuple[bytes, bool]:
    """The bytes of a .csv or decompressed .csv.gz file and whether it was cut short.

    A damaged gzip stream keeps its readable prefix and is reported.
    """
    data = path.read_bytes()
    cut = False
    if path.name.endswith(".gz"):
        data, damage = _gunzip(data)
        if damage is not None:
            cut = True
            lines = data.count(b"\n")
            sink.add(path, 0, f"damaged file: {damage}; kept the {lines} complete lines before it")
    return data, cut


def _decode(data: bytes, path: Path, sink: _Sink) -> str:
    """UTF-8 text, a leading BOM dropped; invalid bytes are replaced and reported (with line)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        sink.add(path, line, f"bad encoding: invalid UTF-8 at byte {err.start} replaced")
        return data.decode("utf-8-sig", errors="replace")


def _read_text(path: Path, sink: _Sink) -> tuple[str, bool]:
    """The decoded text of a .csv or .csv.gz file and whether it was cut short.

    A damaged gzip stream keeps its readable prefix and is reported; invalid UTF-8 is replaced
    and reported with the line where it starts.
    """
    data, cut = _read_bytes(path, sink)
    return _decode(data, path, sink), cut


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
#
# All trace files of a device are parsed together: their lines are concatenated with a file id
# (``fid``) and parsed by a handful of polars queries, so the cost per file is a few numpy
# operations (see "Speed and memory" in the module docstring).


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
_ABS_SCHEMA = {
    "fid": pl.Int64,
    "line": pl.Int64,
    "x": pl.Float64,
    "y": pl.Float64,
    "pt": pl.Float64,
    "e": pl.Float64,
}
_REL_SCHEMA = {
    "fid": pl.Int64,
    "line": pl.Int64,
    "x": pl.Float64,
    "y": pl.Float64,
    "ci": pl.Int64,
    "pt": pl.Float64,
    "v": pl.Int64,
    "e": pl.Float64,
    "snip": pl.String,
}
_SPLIT_CHAR = "\x1f"  # read_csv splits a file without this byte into lines, one field each


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
def _parse_plan(layout: _Layout, strip_e: bool) -> tuple[list[pl.Expr], ...]:
    """Expression stages over ``parts`` (a line split on commas): raw fields, typed fields and
    snippet, parse code; the result has the typed fields, snippet, ``n`` (fields), ``eq``
    (``epoch_ms`` is not a number, maybe quoted) and ``code`` (0 = valid, 1 = field count,
    2+ = field).

    The snippet is the third field minus one pair of enclosing quotes: right for the rows with
    ``n == layout.n_fields``, ``_parse_lines`` redoes the others.  ``epoch_ms`` is stripped of
    quotes only with ``strip_e`` (rarely needed: ``_parse_lines`` reparses the rows with
    ``eq`` that way; stripping a field without quotes changes nothing).
    """
    parts = pl.col("parts")
    fields = layout.fields()
    raw = [parts.list.len().alias("n")]
    raw += [parts.list.get(layout.index(f), null_on_oob=True).alias(f) for f in fields]
    if layout.has_snippet:
        raw.append(parts.list.get(2, null_on_oob=True).alias("snip"))
    typed = []
    if layout.has_snippet:
        typed.append(_strip_one_pair(pl.col("snip")).alias("snip"))
    for f in fields:
        text = pl.col(f).str.strip_chars('"') if f == "e" and strip_e else pl.col(f)
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
    code = [
        pl.when(first == 99).then(0).otherwise(first).cast(pl.Int8).alias("code"),
        pl.col("e").is_null().alias("eq"),
    ]
    keep = ["code", *fields, *(["snip"] if layout.has_snippet else []), "n", "eq"]
    return raw, typed, code, [pl.col(c) for c in keep]


def _strip_one_pair(text: pl.Expr) -> pl.Expr:
    """One pair of enclosing double quotes removed (values not enclosed are kept)."""
    quoted = text.str.starts_with('"') & text.str.ends_with('"') & (text.str.len_chars() >= 2)
    return pl.when(quoted).then(text.str.strip_prefix('"').str.strip_suffix('"')).otherwise(text)


def _run_plan(lines: pl.Series, layout: _Layout, strip_e: bool) -> pl.DataFrame:
    """``_parse_plan`` applied to ``lines``, as one query."""
    raw, typed, code, keep = _parse_plan(layout, strip_e)
    return (
        pl.DataFrame({"line": lines})
        .lazy()
        .select(pl.col("line").str.split(",").alias("parts"))
        .with_columns(raw)
        .with_columns(typed)
        .with_columns(code)
        .select(keep)
        .collect()
    )


def _parse_lines(lines: pl.Series, layout: _Layout) -> pl.DataFrame:
    """Vectorized parse: typed columns plus ``code`` (0 = valid, 1 = field count, 2+ = field).

    The snippet is the text between the two leading and the fixed trailing fields (commas
    included), minus one pair of enclosing quotes; ``epoch_ms`` may be quoted.
    """
    frame = _run_plan(lines, layout, strip_e=False)
    quoted = np.flatnonzero(frame["eq"].to_numpy())
    if len(quoted):  # maybe a stray quote around epoch_ms: those rows again, stripping it
        again = _run_plan(lines.gather(quoted), layout, strip_e=True)
        frame = frame.with_columns(frame[c].scatter(quoted, again[c]) for c in ("e", "code"))
    if layout.has_snippet:
        long = np.flatnonzero((frame["n"] > layout.n_fields).to_numpy())
        if len(long):  # snippets with commas: rejoin the middle fields
            middle = pl.col("line").str.split(",")
            middle = middle.list.slice(2, middle.list.len() - (layout.n_fields - 1))
            joined = (
                pl.DataFrame({"line": lines.gather(long)})
                .select(middle.list.join(",").alias("snip"))
                .select(_strip_one_pair(pl.col("snip")))
            )
            frame = frame.with_columns(frame["snip"].scatter(long, joined["snip"]))
    keep = ["code", *layout.fields()] + (["snip"] if layout.has_snippet else [])
    return frame.select(keep)


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


@dataclass(eq=False)
class _Trace:
    """One trace file of a batch: its path, its own problems, its stored bytes until parsed
    (compressed for .gz), and the layout it was parsed with."""

    path: Path
    sink: _Sink
    raw: bytes = b""
    layout: _Layout | None = None

    @property
    def gz(self) -> bool:
        """Stored gzip-compressed."""
        return self.path.name.endswith(".gz")

    def read(self) -> None:
        """Read the stored bytes (decompression and damage checks come later)."""
        self.raw = self.path.read_bytes()


def _read_trace(
    path: Path, layouts: Sequence[_Layout], sink: _Sink
) -> tuple[pl.DataFrame, _Layout]:
    """Parse one trace file into typed rows (with 1-based ``line``), reporting bad lines.

    With several candidate layouts (6/7-column rel files) the one that fits the file wins.
    """
    trace = _Trace(path, sink)
    trace.read()
    frame = _parse_traces([trace], layouts)
    assert trace.layout is not None
    return frame.drop("fid"), trace.layout


def _parse_traces(
    traces: Sequence[_Trace], layouts: Sequence[_Layout], ordered: bool = True
) -> pl.DataFrame:
    """Typed rows of all (read) files, ``fid`` = index in ``traces``, in file and line order
    (with ``ordered=False`` maybe not: see ``_file_order``).

    Sets each trace's layout: the first of ``layouts`` that fits at least half of its lines,
    else the one that fits most.  Bad lines are reported to the file's sink (after rejoining
    records split by newlines in the snippet, see ``_repair``); their neighbours are kept.
    """
    rel = any(layout.has_snippet for layout in layouts)
    schema = _REL_SCHEMA if rel else _ABS_SCHEMA
    frames: list[pl.DataFrame] = []
    rest = list(range(len(traces)))
    if tuple(layouts) == (_ABS,):
        plain, rest = _read_numeric(traces)
        frames.append(plain)
    if rest:
        lines, counts = _file_lines([traces[i] for i in rest])
        frames += _parse_files(lines, np.asarray(rest, dtype=np.int64), counts, traces, layouts)
    for trace in traces:
        trace.raw = b""

    def conform(frame: pl.DataFrame) -> pl.DataFrame:
        """The schema's columns; a layout without ``validate`` gets -1."""
        return frame.select(
            pl.col(c).cast(t) if c in frame.columns else pl.lit(-1, t).alias(c)
            for c, t in schema.items()
        )

    out = [conform(f) for f in frames if len(f)]
    if not out:
        return pl.DataFrame(schema=schema)
    if len(out) == 1:
        return out[0]
    frame = pl.concat(out)
    order = _file_order(frame)
    return frame if order is None or not ordered else frame[order]


def _file_order(frame: pl.DataFrame) -> I64 | None:
    """The order of a parsed frame's rows by (file, line); None when they are in order."""
    key = (frame["fid"].to_numpy() << 32) | frame["line"].to_numpy()  # lines < 2**31
    if np.all(key[1:] > key[:-1]):
        return None
    return np.argsort(key, kind="stable")  # merges the sorted runs


# Files are read in batches by one read_csv call over their stored bytes (gzip members
# concatenated: polars decompresses them), a marker line between two files.  A batch that
# read_csv rejects (damage, invalid UTF-8, a file not ending in a newline, a real line equal
# to the marker, a BOM not at the start of the batch, ...) is read file by file, and a file
# that read_csv rejects on its own goes the careful way (``_careful_lines``), which is the
# reference: every route yields the same lines.
_MARKER = "\x00"
_MARK_LINE = {False: b"\x00\n", True: gzip.compress(b"\x00\n", mtime=0)}
_MARK_ROW = {
    False: b"\x00,\x00,\x00,\x00\n",
    True: gzip.compress(b"\x00,\x00,\x00,\x00\n", mtime=0),
}
_LINE_SCHEMA = {"line": pl.String}
_GZIP_MAGIC = b"\x1f\x8b"
_COMPRESSED_MAGIC = (  # what read_csv inflates by itself: gzip, zlib, zstd
    _GZIP_MAGIC,
    b"\x78\x01",
    b"\x78\x5e",
    b"\x78\x9c",
    b"\x78\xda",
    b"\x28\xb5\x2f\xfd",
)
_NUMERIC_SCHEMA = {f: pl.String for f in _ABS.fields()}


def _runs(traces: Sequence[_Trace], idx: Sequence[int]) -> list[list[int]]:
    """``idx`` cut into runs of consecutive files that read_csv may read together: all gzip or
    all plain; a file it must not read (see ``_csv_readable``) is a run of its own."""
    runs: list[list[int]] = []
    for i in idx:
        last = runs[-1][-1] if runs else None
        if (
            last is not None
            and traces[last].gz == traces[i].gz
            and _csv_readable(traces[last])
            and _csv_readable(traces[i])
        ):
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _csv_readable(trace: _Trace) -> bool:
    """Whether read_csv reads the stored bytes as the careful way does: a .gz file must be
    gzip (else it is damaged), a plain one must not look compressed (read_csv would inflate
    it)."""
    if trace.gz:
        return trace.raw.startswith(_GZIP_MAGIC)
    return not trace.raw.startswith(_COMPRESSED_MAGIC)


def _read_batch(
    traces: Sequence[_Trace], idx: Sequence[int], schema: Mapping[str, type[pl.DataType]], row: bool
) -> tuple[pl.DataFrame, I64] | None:
    """The rows of files ``idx`` (one kind) read together, and how many each has; None when
    read_csv rejects the batch or the markers do not split it into exactly those files.

    ``row``: the marker is a numeric-layout row (``_MARK_ROW``), else a line.
    """
    if not all(_csv_readable(traces[i]) for i in idx):
        return None
    mark = (_MARK_ROW if row else _MARK_LINE)[traces[idx[0]].gz]
    try:
        frame = pl.read_csv(
            mark.join(traces[i].raw for i in idx),
            has_header=False,
            separator="," if row else _SPLIT_CHAR,
            quote_char=None,
            schema=dict(schema),
        )
    except (pl.exceptions.PolarsError, OSError):
        return None
    first = frame.to_series(0)
    marks = np.flatnonzero((first == _MARKER).fill_null(False).to_numpy())
    if len(marks) != len(idx) - 1:
        return None
    bounds = np.r_[-1, marks, len(frame)]
    starts = bounds[1:-1] + 1
    if len(starts) and first.gather(starts).str.starts_with("\ufeff").fill_null(False).any():
        return None  # a BOM read_csv keeps (the careful way drops it)
    return frame, np.diff(bounds) - 1


def _owners(files: Sequence[int], counts: I64) -> tuple[I64, I64]:
    """For the rows of a batch read (files joined by a marker row): each row's file (-1 for a
    marker) and its 1-based line in that file."""
    n = int(counts.sum()) + len(files) - 1
    fid = np.full(n, -1, dtype=np.int64)
    line = np.zeros(n, dtype=np.int64)
    start = 0
    for f, count in zip(files, counts.tolist(), strict=True):
        fid[start : start + count] = f
        line[start : start + count] = np.arange(1, count + 1)
        start += count + 1
    return fid, line


def _careful_lines(trace: _Trace) -> pl.Series:
    """The physical lines of a file, decompressed and split in Python: damage and invalid
    UTF-8 are reported (a line cut off by damage is dropped)."""
    data, cut = trace.raw, False
    if trace.gz:
        data, damage = _gunzip(data)
        if damage is not None:
            cut = True
            lines = data.count(b"\n")
            trace.sink.add(
                trace.path, 0, f"damaged file: {damage}; kept the {lines} complete lines before it"
            )
    raw = _decode(data, trace.path, trace.sink).split("\n")
    if raw and raw[-1] == "":
        raw.pop()
    elif cut and raw:
        trace.sink.add(
            trace.path, len(raw), "damaged file: last line cut off by the damage; dropped"
        )
        raw.pop()
    return pl.Series("line", raw, dtype=pl.String).str.strip_suffix("\r")


def _file_lines(traces: Sequence[_Trace]) -> tuple[pl.Series, I64]:
    """Every physical line of the files, in file order, and how many lines each file has."""
    pieces: list[pl.Series] = []
    counts = np.zeros(len(traces), dtype=np.int64)
    for run in _runs(traces, range(len(traces))):
        got = _read_batch(traces, run, _LINE_SCHEMA, row=False)
        if got is None and len(run) > 1:  # file by file
            for i in run:
                one = _read_batch(traces, [i], _LINE_SCHEMA, row=False)
                lines = one[0].to_series() if one else _careful_lines(traces[i])
                pieces.append(lines.fill_null(""))  # read_csv reads a blank line as null
                counts[i] = len(lines)
        elif got is None:
            pieces.append(_careful_lines(traces[run[0]]))
            counts[run[0]] = len(pieces[-1])
        else:
            lines = got[0].to_series()
            if len(run) > 1:  # drop the markers
                lines = lines.filter(pl.Series(_owners(run, got[1])[0] >= 0))
            pieces.append(lines.fill_null(""))
            counts[run] = got[1]
    if not pieces:
        return pl.Series("line", [], dtype=pl.String), counts
    return pl.concat(pieces).alias("line"), counts


def _read_numeric(traces: Sequence[_Trace]) -> tuple[pl.DataFrame, list[int]]:
    """abs rows of the files whose every line is 4 valid fields, read by read_csv.

    Returns those rows (``fid``, ``line``, x, y, pt, e) and the indices of the other files,
    which need the per-line route.  read_csv splits the fields (a line with more fields fails
    the batch, one with fewer or a blank line gets nulls) and they are typed like
    ``_parse_lines`` does, so both routes read the same numbers.
    """
    frames: list[pl.DataFrame] = []
    done: list[int] = []
    for run in _runs(traces, range(len(traces))):
        batches = [run]
        got = _read_batch(traces, run, _NUMERIC_SCHEMA, row=True)
        if got is None and len(run) > 1:
            batches = [[i] for i in run]
        for batch in batches:
            got = got if batch is run else _read_batch(traces, batch, _NUMERIC_SCHEMA, row=True)
            if got is None:
                continue
            frame, counts = got
            fid, line = _owners(batch, counts)
            valid = pl.all_horizontal(_validity(f) for f in _ABS.fields()).alias("valid")
            frame = (
                frame.lazy()
                .select(_parse_plan(_ABS, False)[1])
                .with_columns(valid, pl.Series("fid", fid), pl.Series("line", line))
                .collect()
            )
            marker = fid < 0
            bad = ~frame["valid"].to_numpy() & ~marker
            invalid = np.bincount(fid[bad], minlength=len(traces))
            good = [i for i in batch if not invalid[i]]
            keep = ~marker if len(good) == len(batch) else ~marker & (invalid[fid] == 0)
            frame = frame.drop("valid")
            frames.append(frame if keep.all() else frame.filter(pl.Series(keep)))
            done += good
    for i in done:
        traces[i].layout = _ABS
    frame = pl.concat(frames) if frames else pl.DataFrame(schema=_ABS_SCHEMA)
    finished = set(done)
    return frame, [i for i in range(len(traces)) if i not in finished]


def _parse_files(
    lines: pl.Series,
    files: I64,
    counts: I64,
    traces: Sequence[_Trace],
    layouts: Sequence[_Layout],
) -> list[pl.DataFrame]:
    """Parse the lines of ``traces[files]`` (``counts`` lines each, in order) in one pass per
    layout; choose each file's layout and repair or report its bad lines.

    A file's layout is the first of ``layouts`` that fits at least half of its lines, else the
    one that fits most (the first of those).  A layout is not tried on a file whose lines
    mostly have too few fields for it (``_unfit``) unless no layout fits.
    """
    n_all = len(traces)
    fid = np.repeat(files, counts)
    starts = np.zeros(n_all, dtype=np.int64)
    starts[files] = np.cumsum(np.r_[0, counts[:-1]])
    line_no = np.arange(len(fid), dtype=np.int64) - starts[fid] + 1
    n_lines = np.zeros(n_all, dtype=np.int64)
    n_lines[files] = counts
    pending = np.zeros(n_all, dtype=bool)
    pending[files] = True
    skip = _unfit(lines, fid, starts, n_lines, files, layouts)
    valid = np.full((len(layouts), n_all), -1.0)
    choice = np.full(n_all, -1)
    parses: list[tuple[int, pl.DataFrame, I64]] = []

    def parse(li: int, chosen: Bool) -> None:
        rows = np.flatnonzero(chosen[fid])
        sub = lines if len(rows) == len(lines) else lines.gather(rows)
        parsed = _parse_lines(sub, layouts[li])
        parses.append((li, parsed, rows))
        ok = (parsed["code"] == 0).to_numpy()
        counted = np.bincount(fid[rows], weights=ok, minlength=n_all)
        valid[li, chosen] = counted[chosen]

    for li in range(len(layouts)):
        todo = pending & ~skip[li]
        if not todo.any():
            continue
        parse(li, todo)
        fits = todo & (2 * valid[li] >= n_lines)
        choice[fits] = li
        pending &= ~fits
    for li in range(len(layouts)):  # no layout fits: the best one needs every count
        if (pending & skip[li]).any():
            parse(li, pending & skip[li])
    choice[pending] = np.argmax(valid[:, pending], axis=0)
    for f in files.tolist():
        traces[f].layout = layouts[choice[f]]

    out: list[pl.DataFrame] = []
    for li, parsed, rows in parses:
        mine = choice[fid[rows]] == li
        code = parsed["code"].to_numpy()
        good = mine & (code == 0)
        kept = parsed if good.all() else parsed.filter(pl.Series(good))
        out.append(
            kept.with_columns(
                pl.Series("fid", fid[rows][good]), pl.Series("line", line_no[rows][good])
            )
        )
        bad = np.flatnonzero(mine & (code != 0))
        if not len(bad):
            continue
        blank = lines.gather(rows[bad]).str.strip_chars().str.len_chars() == 0
        bad = bad[~blank.to_numpy()]
        for f in np.unique(fid[rows[bad]]).tolist():
            first = int(np.searchsorted(rows, starts[f]))
            span = slice(first, first + int(n_lines[f]))
            local = rows[bad[fid[rows[bad]] == f]] - starts[f]
            trace = traces[f]
            file_lines = lines.slice(int(starts[f]), int(n_lines[f]))
            repaired = _repair(file_lines, code[span], local, layouts[li], trace.path, trace.sink)
            if repaired is not None:
                out.append(repaired.with_columns(pl.lit(f, pl.Int64).alias("fid")))
    return out


def _unfit(
    lines: pl.Series,
    fid: I64,
    starts: I64,
    n_lines: I64,
    files: I64,
    layouts: Sequence[_Layout],
) -> Bool:
    """skip[li, f]: fewer than half of file f's lines have enough fields for layout li, so it
    cannot fit the file.  Only the first layout is checked, on the files whose first line is
    short (6-column rel files, for the 7-column layout): counting every line would cost more
    than the parses it saves."""
    skip = np.zeros((len(layouts), len(n_lines)), dtype=bool)
    layout = layouts[0]
    nonempty = files[n_lines[files] > 0]
    if len(layouts) < 2 or not layout.has_snippet or not len(nonempty):
        return skip
    need = layout.n_fields - 1  # commas of a line with enough fields
    first = lines.gather(starts[nonempty]).str.count_matches(",", literal=True).to_numpy()
    short = np.zeros(len(n_lines), dtype=bool)
    short[nonempty[first < need]] = True
    rows = np.flatnonzero(short[fid])
    if not len(rows):
        return skip
    commas = lines.gather(rows).str.count_matches(",", literal=True).to_numpy()
    enough = np.bincount(fid[rows], weights=commas >= need, minlength=len(n_lines))
    skip[0] = short & (2 * enough < n_lines)
    return skip


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

    ``lines`` and ``code`` cover one file; ``bad`` are the indices of its non-blank bad lines.
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


def _folder_spec(folder: Path, files: Set[str] | None = None) -> _FolderSpec | None:
    """Which kind of page the files present say this is (None when there are no rel files)."""

    def present(spec: _FolderSpec) -> int:
        return sum(
            _resolve(folder, s, files) is not None for f in spec.files.values() for s in f[1:]
        )

    pair, point = present(_PAIRWISE), present(_POINTWISE)
    if pair == point == 0:
        return None
    return _PAIRWISE if pair >= point else _POINTWISE


@dataclass(eq=False)
class _Group:
    """One modality of one page: its files (abs, left or only rel[, right rel]), the problems
    of aligning each rel file with the abs one, and where its aligned rows ended up."""

    modality: str
    files: tuple[_Trace, ...]
    joins: tuple[_Sink, ...]
    dropped: int = 0  # exact duplicate abs rows
    rows: slice = field(default_factory=lambda: slice(0, 0))

    def problems(self) -> Iterator[Problem]:
        """Its problems in the order a file-by-file load reports them."""
        yield from self.files[0].sink.problems
        for rel, join in zip(self.files[1:], self.joins, strict=True):
            yield from rel.sink.problems
            yield from join.problems


@dataclass(frozen=True)
class _Rows:
    """Numpy columns of parsed trace rows (one frame of ``_parse_traces``), ``g`` = group."""

    g: I64
    line: I64
    x: F64
    y: F64
    pt: F64
    e: F64
    occ: I64
    ci: I64 | None = None
    v: I64 | None = None


def _align(groups: Sequence[_Group]) -> tuple[dict[str, np.ndarray], pl.Series]:
    """Read, clean and align every group's files in one batch.

    Returns numpy columns (g = group index, t, pt, occ, x, y, side, ci, v) and the snippets,
    rows sorted by group, and sets each group's ``rows`` and ``dropped``.  Per group this is:
    drop exact duplicate abs rows; join abs and each rel file on (page timer, occurrence) like
    an inner join, reporting rows without a partner; pick side, char_index, validate and
    snippet (see ``_sides``).
    """
    n = len(groups)
    for group in groups:
        for trace in group.files:
            trace.read()
    absf = _parse_traces([g.files[0] for g in groups], [_ABS])
    before = np.bincount(absf["fid"].to_numpy(), minlength=n)
    absf = absf.filter(_first_distinct(absf))
    after = np.bincount(absf["fid"].to_numpy(), minlength=n)
    for group, dropped in zip(groups, (before - after).tolist(), strict=True):
        group.dropped = dropped
    a = _rows(absf, absf["fid"].to_numpy())
    every = np.arange(len(absf))

    owner = [(gi, k) for gi, g in enumerate(groups) for k in range(1, len(g.files))]
    relf = _parse_traces([groups[gi].files[k] for gi, k in owner], [_REL7, _REL6], False)
    order = _file_order(relf)  # rel rows are used through index arrays in this order
    fid = relf["fid"].to_numpy()
    rel = _rows(relf, np.asarray([gi for gi, _ in owner], dtype=np.int64)[fid], fid, order)
    role = np.asarray([k for _, k in owner], dtype=np.int64)[fid]
    ordered = np.arange(len(fid)) if order is None else order
    left, right = ordered[role[ordered] == 1], ordered[role[ordered] == 2]

    ia, il = _join_reporting(a, every, rel, left, groups, 1)
    ia, il = every[ia], left[il]
    _report_skew(a, ia, rel, il, groups, 1)
    pairwise = np.asarray([len(g.files) == 3 for g in groups])
    two = np.flatnonzero(pairwise[a.g[ia]])
    ip, ir = _join_reporting(a, ia[two], rel, right, groups, 2)
    ir = right[ir]
    _report_skew(a, ia[two[ip]], rel, ir, groups, 2)
    keep = ~pairwise[a.g[ia]]  # rows of the first join that survive the second
    keep[two[ip]] = True
    r = np.full(len(ia), -1, dtype=np.int64)
    r[two[ip]] = ir
    final = np.flatnonzero(keep)
    mouse = np.asarray([g.modality == "mouse" for g in groups])
    cols, src = _sides(a, ia[final], rel, il[final], r[final], mouse)
    snip = pl.concat([relf["snip"], pl.Series("snip", [""], dtype=pl.String)])
    ids = np.arange(n)
    lo = np.searchsorted(cols["g"], ids, side="left")
    hi = np.searchsorted(cols["g"], ids, side="right")
    for group, start, stop in zip(groups, lo.tolist(), hi.tolist(), strict=True):
        group.rows = slice(start, stop)
    return cols, snip.gather(np.where(src < 0, len(relf), src))


def _first_distinct(frame: pl.DataFrame) -> pl.Series:
    """Mask of the rows that are not exact (x, y, pt, e) duplicates of an earlier row of their
    file (pairwise ``abs_gaze`` has every batch written twice)."""
    fid, pt = frame["fid"].to_numpy(), frame["pt"].to_numpy()
    # rows whose (file, page timer) hash is shared: all duplicates and a few others
    mix = (pt + 0.0).view(np.uint64) ^ (fid.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
    candidates = pl.Series(mix).is_duplicated().to_numpy()
    keep = np.ones(len(fid), dtype=bool)
    idx = np.flatnonzero(candidates)
    if len(idx):
        first = frame[idx].select(pl.struct("fid", "x", "y", "pt", "e").is_first_distinct())
        keep[idx] = first.to_series().to_numpy()
    return pl.Series(keep)


def _group_order(fid: I64, pt: F64) -> I64:
    """A stable order of the rows (grouped by file, in file order) by (file, page timer)."""
    order = np.arange(len(pt))
    if len(pt) < 2:
        return order
    back = np.flatnonzero((fid[1:] == fid[:-1]) & (pt[1:] < pt[:-1]))
    if not len(back):  # already sorted (the usual case once duplicates are gone)
        return order
    unsorted = np.zeros(int(fid.max()) + 1, dtype=bool)
    unsorted[fid[back]] = True
    idx = np.flatnonzero(unsorted[fid])  # the rows of those files keep their place as a block
    order[idx] = idx[np.lexsort((pt[idx], fid[idx]))]
    return order


def _occurrence(fid: I64, pt: F64) -> I64:
    """How many earlier rows of its file share this page_timer_ms (the timer can freeze)."""
    order = _group_order(fid, pt)
    f, p = fid[order], pt[order]
    run_start = np.r_[True, (f[1:] != f[:-1]) | (p[1:] != p[:-1])] if len(p) else p == p
    pos = np.arange(len(pt))
    occ = np.empty(len(pt), dtype=np.int64)
    occ[order] = pos - np.maximum.accumulate(np.where(run_start, pos, 0))
    return occ


def _rows(frame: pl.DataFrame, g: I64, fid: I64 | None = None, order: I64 | None = None) -> _Rows:
    """Numpy columns of a parsed frame, with its rows' groups and page-timer occurrences
    (``order``: the rows' order by file and line when the frame is not in it)."""
    col = {c: frame[c].to_numpy() for c in frame.columns if c not in ("fid", "snip")}
    files = frame["fid"].to_numpy() if fid is None else fid
    if order is None:
        occ = _occurrence(files, col["pt"])
    else:
        occ = np.empty(len(files), dtype=np.int64)
        occ[order] = _occurrence(files[order], col["pt"][order])
    return _Rows(g=g, occ=occ, **col)


def _join_reporting(
    left: _Rows, li: I64, right: _Rows, ri: I64, groups: Sequence[_Group], k: int
) -> tuple[I64, I64]:
    """Pairs (positions in ``li``, positions in ``ri``) of an inner join of the rows
    ``left[li]`` and ``right[ri]`` (each sorted by group) on (group, page timer, occurrence),
    in left order, with the groups' rel file ``k``; rows of either side without a partner are
    reported, per file, as one summary Problem.

    Keys are unique on each side.  A group whose rows have the same keys in the same order on
    both sides (the usual case) pairs up row by row; only the other groups are joined.
    """
    n = len(groups)
    lg, lpt, locc = left.g[li], left.pt[li], left.occ[li]
    rg, rpt, rocc = right.g[ri], right.pt[ri], right.occ[ri]
    size_l, size_r = np.bincount(lg, minlength=n), np.bincount(rg, minlength=n)
    start_l = np.r_[0, np.cumsum(size_l)[:-1]]
    start_r = np.r_[0, np.cumsum(size_r)[:-1]]
    fast = size_l == size_r
    i = np.flatnonzero(fast[lg])
    j = i - start_l[lg[i]] + start_r[lg[i]]
    differ = (lpt[i].view(np.int64) != rpt[j].view(np.int64)) | (locc[i] != rocc[j])
    fast[lg[i[differ]]] = False
    same = fast[lg[i]]
    i, j = i[same], j[same]
    slow_l, slow_r = np.flatnonzero(~fast[lg]), np.flatnonzero(~fast[rg])
    if len(slow_l) and len(slow_r):
        key = ["g", "pt", "occ"]
        lf = pl.DataFrame({"g": lg[slow_l], "pt": lpt[slow_l], "occ": locc[slow_l]})
        rf = pl.DataFrame({"g": rg[slow_r], "pt": rpt[slow_r], "occ": rocc[slow_r]})
        pairs = lf.with_row_index("i").join(
            rf.with_row_index("j"), on=key, how="inner", maintain_order="left"
        )
        i = np.r_[i, slow_l[pairs["i"].to_numpy()]]
        j = np.r_[j, slow_r[pairs["j"].to_numpy()]]
        order = np.argsort(i, kind="stable")
        i, j = i[order], j[order]
    for rows, idx, g, paired, mine, theirs in (
        (left, li, lg, i, 0, k),
        (right, ri, rg, j, k, 0),
    ):
        lonely = np.ones(len(idx), dtype=bool)
        lonely[paired] = False
        where = np.flatnonzero(lonely)
        if not len(where):
            continue
        sizes = np.bincount(g, minlength=n)
        counts = np.bincount(g[where], minlength=n)
        ids, first = np.unique(g[where], return_index=True)
        for gi, pos in zip(ids.tolist(), first.tolist(), strict=True):
            group = groups[gi]
            group.joins[k - 1].add(
                group.files[mine].path,
                int(rows.line[idx[where[pos]]]),
                f"unaligned rows: {counts[gi]} of {sizes[gi]} rows have no row with the "
                f"same page_timer_ms in {group.files[theirs].path.name}; dropped",
            )
    return i, j


def _report_skew(a: _Rows, ia: I64, rel: _Rows, ir: I64, groups: Sequence[_Group], k: int) -> None:
    """Aligned rows (``a[ia]`` with ``rel[ir]``) whose rel epoch_ms is far from the abs one
    (kept: t_ms comes from abs)."""
    skew = np.abs(a.e[ia] - rel.e[ir])
    far = np.flatnonzero(skew > _MAX_SKEW_MS)
    if not len(far):
        return
    g = a.g[ia]
    largest = np.full(len(groups), -np.inf)
    np.maximum.at(largest, g, skew)
    counts = np.bincount(g[far], minlength=len(groups))
    ids, first = np.unique(g[far], return_index=True)
    for gi, pos in zip(ids.tolist(), first.tolist(), strict=True):
        group = groups[gi]
        absname = group.files[0].path.name
        group.joins[k - 1].add(
            group.files[k].path,
            int(rel.line[ir[far[pos]]]),
            f"clock skew: {int(counts[gi])} rows aligned on page_timer_ms differ from "
            f"{absname} epoch_ms by more than {_MAX_SKEW_MS} ms (max "
            f"{largest[gi]:.0f} ms); kept, t_ms comes from {absname}",
        )


def _sides(
    a: _Rows, ia: I64, rel: _Rows, il: I64, ir: I64, mouse: Bool
) -> tuple[dict[str, np.ndarray], I64]:
    """Columns of aligned rows (abs rows ``a[ia]``, left rel rows ``rel[il]``, right
    ``rel[ir]``, -1 for none) and the rel row each snippet comes from (-1: none).

    ``side`` is the first panel (left, then right) that holds the point (a rel row not at
    ``-1,-1``); char_index and the snippet come from that row, validate from the left one.
    The ``-1,-1`` of ``abs_mouse`` before the first move becomes NaN.
    """
    assert rel.ci is not None and rel.v is not None
    on_l = ~((rel.x[il] == -1) & (rel.y[il] == -1))
    has_r = ir >= 0
    rr = np.where(has_r, ir, 0)
    on_r = has_r & ~((rel.x[rr] == -1) & (rel.y[rr] == -1))
    g, x, y = a.g[ia], a.x[ia], a.y[ia]
    unmoved = mouse[g] & (x == -1) & (y == -1)
    cols: dict[str, np.ndarray] = {
        "g": g,
        "t": a.e[ia],
        "pt": a.pt[ia],
        "occ": a.occ[ia],
        "x": np.where(unmoved, np.nan, x),
        "y": np.where(unmoved, np.nan, y),
        "side": np.select([on_l, on_r], [SIDE_LEFT, SIDE_RIGHT], SIDE_NONE).astype(np.int8),
        "ci": np.select([on_l, on_r], [rel.ci[il], rel.ci[rr]], -1).astype(np.int32),
        "v": rel.v[il].astype(np.int8),
    }
    return cols, np.select([on_l, on_r], [il, rr], -1)


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


def _lengths(left: Sequence[str], right: Sequence[str | None]) -> I64:
    """lens[j, side]: UTF-16 length of query j's response on that side (-1: none)."""
    lens = np.full((len(left), 3), -1, dtype=np.int64)
    lens[:, SIDE_LEFT] = [_utf16_len(t) for t in left]
    lens[:, SIDE_RIGHT] = [_utf16_len(t) for t in right]
    return lens


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
        usable: Bool,
        found: Bool,
        left: Sequence[str],
        right: Sequence[str | None],
    ) -> _Evidence:
        """Evidence from each sample's side, char_index and (``usable``) snippet, ``found[i, j]``
        when sample i's snippet occurs in query j's response on its side."""
        lens = _lengths(left, right)
        on_panel = side != SIDE_NONE
        char_bad = (on_panel & (ci >= 0))[:, None] & (ci[:, None] > lens[:, side].T)
        against = (usable[:, None] & ~found) | char_bad
        support = usable[:, None] & found & ~char_bad
        has = usable | (on_panel & (ci >= 0))
        return cls(support=support, against=against, has=has)


def _usable(side: npt.NDArray[np.int8], snip: pl.Series) -> Bool:
    """Samples whose snippet can be evidence: on a panel, at least ``_MIN_SNIPPET`` characters."""
    return (side != SIDE_NONE) & (snip.str.len_chars() >= _MIN_SNIPPET).to_numpy()


def _snippet_found(
    side: npt.NDArray[np.int8],
    snip: pl.Series,
    page: I64,
    texts: Sequence[Sequence[tuple[str, str | None]]],
    rows: I64,
    queries: I64,
) -> Bool:
    """For each (sample row, query index) pair: does the row's snippet occur in that query's
    response on the row's side?

    ``page`` is each row's page, ``texts[p]`` the (left, right) responses of page p's queries.
    Each distinct (page, side, snippet, query) is searched for once.
    """
    if not len(rows):
        return np.zeros(0, dtype=bool)
    pairs = pl.DataFrame(
        {
            "p": page[rows],
            "side": side[rows],
            "snip": snip.gather(rows),
            "j": queries,
        }
    )
    responses = pl.DataFrame(
        {
            "p": [p for p, page_texts in enumerate(texts) for _ in page_texts],
            "j": [j for page_texts in texts for j in range(len(page_texts))],
            "lt": [lt for page_texts in texts for lt, _ in page_texts],
            "rt": [rt or "" for page_texts in texts for _, rt in page_texts],
        },
        schema={"p": pl.Int64, "j": pl.Int64, "lt": pl.String, "rt": pl.String},
    )
    text = pl.when(pl.col("side") == SIDE_LEFT).then(pl.col("lt")).otherwise(pl.col("rt"))
    hits = (
        pairs.with_row_index("k")
        .group_by("p", "side", "snip", "j")
        .agg("k")
        .join(responses, on=["p", "j"])
        .filter(text.str.contains(pl.col("snip"), literal=True))
        .select(pl.col("k").explode())
    )
    out = np.zeros(len(rows), dtype=bool)
    out[hits.to_series().to_numpy()] = True
    return out


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


@dataclass(eq=False)
class _Page:
    """One (worker, task) page: its queries in query_ID order and its trace files, if any."""

    task: int
    rows: list[_QueryRow]
    traced: bool = False  # a folder with rel files: the files say pairwise or pointwise
    pairwise: bool = False
    parts: list[_Sink | _Group] = field(default_factory=list)  # problems, in report order

    @property
    def groups(self) -> list[_Group]:
        """The modalities whose files are all present."""
        return [p for p in self.parts if isinstance(p, _Group)]


def _plan_page(ctx: _Ctx, worker: str, task: int, rows: list[_QueryRow]) -> _Page:
    """Which trace files a page has; missing ones are reported (in the page's parts)."""
    page = _Page(task=task, rows=rows)
    folder = ctx.base / BEHAVIOR_DIR / worker / str(task)
    if not folder.is_dir():
        return page
    files = _file_names(folder)
    spec = _folder_spec(folder, files)
    if spec is None:
        sink = _Sink(ctx.base)
        sink.add(folder, 0, "missing file: no rel_* trace files in this task folder; no samples")
        page.parts.append(sink)
        return page
    page.traced, page.pairwise = True, spec.pairwise
    for modality, stems in spec.files.items():
        paths = [_resolve(folder, s, files) for s in stems]
        found = [p for p in paths if p is not None]
        if len(found) < len(paths):
            sink = _Sink(ctx.base)
            for stem, path in zip(stems, paths, strict=True):
                if path is None:
                    sink.add(
                        folder / f"{stem}.csv.gz",
                        0,
                        f"missing file: no {stem}.csv(.gz), "
                        f"needed for {modality} samples; {modality} left empty",
                    )
            page.parts.append(sink)
            continue
        page.parts.append(
            _Group(
                modality=modality,
                files=tuple(_Trace(p, _Sink(ctx.base)) for p in found),
                joins=tuple(_Sink(ctx.base) for _ in found[1:]),
            )
        )
    return page


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
