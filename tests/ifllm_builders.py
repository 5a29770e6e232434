"""Builders of synthetic IFLLM data folders for the loader tests: pages with known answers
and traces, written as the real tables and trace files, and helpers to read the result."""

from __future__ import annotations

import csv
import gzip
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from fedgaze.data.ifllm import BEHAVIOR_DIR, IfllmDataset
from fedgaze.data.schema import Query

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
