"""What the IFLLM loader's modules share: file names, tuning constants, array types, the
problem sink and the context every page of a load shares."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedgaze.data.schema import Problem

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
