"""IFLLM-format folders holding only some workers: the unit of a grouped-by-worker split.

A subset folder has the two tables filtered to the chosen workers (rows copied verbatim, as
CSV) and ``user_behavior/<worker>`` entries that link to the source's trace folders, so a split
costs almost no disk and ``fedgaze train``/``score`` read it exactly like the original.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable
from pathlib import Path

from fedgaze.atomic import write_bytes_atomic
from fedgaze.data.ifllm import BEHAVIOR_DIR, QUERY_TABLE, TASK_TABLE, table_path


def _read_rows(path: Path) -> list[list[str]]:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    return list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))


def _filtered_table(path: Path, workers: set[str]) -> bytes:
    rows = _read_rows(path)
    if not rows:
        raise ValueError(f"{path}: empty table")
    header = rows[0]
    try:
        col = header.index("user_id")
    except ValueError:
        raise ValueError(f"{path}: no user_id column in header {header}") from None
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(r for r in rows[1:] if len(r) > col and r[col] in workers)
    return out.getvalue().encode()


def write_subset(source: str | Path, workers: Iterable[str], dest: str | Path) -> Path:
    """Write an IFLLM-format folder at ``dest`` holding only ``workers`` of ``source``."""
    src, out = Path(source), Path(dest)
    chosen = set(workers)
    for stem in (QUERY_TABLE, TASK_TABLE):
        write_bytes_atomic(out / f"{stem}.csv", _filtered_table(table_path(src, stem), chosen))
    behavior = out / BEHAVIOR_DIR
    behavior.mkdir(parents=True, exist_ok=True)
    for worker in sorted(chosen):
        target = (src / BEHAVIOR_DIR / worker).resolve()
        link = behavior / worker
        if target.is_dir() and not link.exists():
            link.symlink_to(target, target_is_directory=True)
    return out
