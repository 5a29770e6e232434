"""The two tables: query-log rows and task-table facts (calibration precision, finish time).

Both are header CSVs whose quoted fields can span lines; rows that cannot be used become
Problems, a missing table or required column is an error.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from fedgaze.data.ifllm.context import (
    _QUERY_COLUMNS,
    _TASK_COLUMNS,
    _TS_FORMAT,
    QUERY_TABLE,
    TASK_TABLE,
    _Sink,
)
from fedgaze.data.ifllm.files import _read_text, table_path


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
