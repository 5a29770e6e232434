"""How fast the feature table engine turns the whole shared IFLLM copy into features.

Each run is a fresh Python process (this script with ``--child``) so that its CPU time (its
own and its worker processes', from ``resource.getrusage(RUSAGE_CHILDREN)``) and its peak RSS
(``ru_maxrss``, per process) are its own:

- ``compute_feature_table(jobs=1)`` on one thread (``POLARS_MAX_THREADS=1``): the single-core
  CPU time, compared with the reference below;
- ``compute_feature_table(jobs=N)`` (default: all cores);
- the largest device alone (``jobs=1``, one thread), and ``load_ifllm`` holding every device
  in memory at once (one thread): memory is bounded per device, not by the data set.

Reference (not re-run here, its code is not vendored): the paper's own pandas pipeline takes
175 s of single-core time for the same features on this machine, as measured by the issue
author.

    python bench/feature_speed.py [--data DIR] [--jobs N]

Writes the section between this script's markers in docs/results.md and
bench/results/feature_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import write_section
from fedgaze.atomic import write_json_atomic
from fedgaze.data.ifllm import BEHAVIOR_DIR, list_workers

ROOT = Path(__file__).resolve().parents[1]
MARKER = "feature_speed"
HEADING = "## Feature extraction speed"
PAPER_PIPELINE_CPU_S = 175.0
"""Single-core seconds of the paper's pandas pipeline on this machine (issue author's figure)."""


def _mib(kib: int) -> float:
    return round(kib / 1024, 1)


def child(data: Path, what: str, jobs: int, workers: Sequence[str] | None) -> dict[str, Any]:
    """Run one measured job in this process; what it reports about itself."""
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    retained = None
    if what == "table":
        from fedgaze.features.table import compute_feature_table

        table = compute_feature_table(data, jobs=jobs, workers=workers)
        rows, samples = len(table), table.samples
        devices = len(workers) if workers else len(list_workers(data))
    else:
        from fedgaze.data.ifllm import load_ifllm

        ds = load_ifllm(data, workers=workers)
        rows = sum(len(d.comparisons()) for d in ds.devices)
        samples = ds.stats["samples_gaze"] + ds.stats["samples_mouse"]
        devices = len(ds.devices)
        columns = ("t_ms", "x", "y", "side", "char_index", "validate")
        retained = sum(
            getattr(getattr(q, kind), c).nbytes
            for d in ds.devices
            for q in d.queries
            for kind in ("gaze", "mouse")
            for c in columns
        )
    wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "wall_s": wall,
        "cpu_self_s": cpu,
        "peak_rss_mib": _mib(me.ru_maxrss),
        "peak_rss_workers_mib": _mib(kids.ru_maxrss) if jobs > 1 else None,
        "samples_mib": None if retained is None else round(retained / 2**20, 1),
        "rows": rows,
        "samples": samples,
        "devices": devices,
    }


def measure(
    data: Path, what: str, jobs: int, workers: Sequence[str] | None, one_thread: bool
) -> dict[str, Any]:
    """Run a child process; its report plus wall and CPU time (children included) seen here."""
    env = dict(os.environ)
    if one_thread:
        env["POLARS_MAX_THREADS"] = "1"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", what]
    command += ["--data", str(data), "--jobs", str(jobs)]
    if workers:
        command += ["--workers", ",".join(workers)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    report.update(process_wall_s=wall, cpu_s=cpu, jobs=jobs, what=what, one_thread=one_thread)
    report["samples_per_s"] = report["samples"] / report["wall_s"]
    report["samples_per_cpu_s"] = report["samples"] / cpu
    return report


def largest_worker(data: Path) -> tuple[str, int]:
    """The worker whose trace files take the most bytes on disk, and that size."""

    def size(worker: str) -> int:
        home = data / BEHAVIOR_DIR / worker
        return (
            sum(f.stat().st_size for f in home.resolve().rglob("*") if f.is_file())
            if home.exists()
            else 0
        )

    return max(((w, size(w)) for w in list_workers(data)), key=lambda item: (item[1], item[0]))


def run(data: Path, jobs: int) -> dict[str, Any]:
    """All measurements."""
    worker, size = largest_worker(data)
    load_average = os.getloadavg()[0]
    runs = {
        "single": measure(data, "table", 1, None, one_thread=True),
        "parallel": measure(data, "table", jobs, None, one_thread=False),
        "largest": measure(data, "table", 1, [worker], one_thread=True),
        "load_all": measure(data, "load", 1, None, one_thread=True),
    }
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cpu_count": os.cpu_count(),
        "load_average": load_average,
        "jobs": jobs,
        "largest_worker": worker,
        "largest_worker_trace_bytes": size,
        "paper_pipeline_cpu_s": PAPER_PIPELINE_CPU_S,
        "runs": runs,
        "cpu_ratio_vs_paper": PAPER_PIPELINE_CPU_S / runs["single"]["cpu_s"],
    }


def render(result: dict[str, Any]) -> str:
    """The markdown section written into docs/results.md."""
    runs = result["runs"]
    single, parallel, largest, load = (
        runs["single"],
        runs["parallel"],
        runs["largest"],
        runs["load_all"],
    )
    lines = [
        f"`python bench/feature_speed.py` ({result['date']}, {result['cpu_count']} cores, shared "
        "machine: timings are noisy): `compute_feature_table` (feature set v2) on the whole "
        f"shared copy: {single['devices']} workers, {single['rows']} pairwise comparisons with "
        f"a right answer, {single['samples']:,} gaze + mouse samples. Each run is a fresh "
        "process: wall time is that of the call, CPU time that of the whole process tree (start-up "
        "and worker processes included), peak RSS per process.",
        "",
        "| run | wall (s) | CPU (s) | samples / wall s | peak RSS (MiB) |",
        "|---|---|---|---|---|",
    ]

    def row(name: str, r: dict[str, Any]) -> str:
        rss = f"{r['peak_rss_mib']:.0f}"
        if r.get("peak_rss_workers_mib") is not None:
            rss = f"{rss} main, {r['peak_rss_workers_mib']:.0f} largest worker"
        return (
            f"| {name} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['samples_per_s']:,.0f} | {rss} |"
        )

    mb = result["largest_worker_trace_bytes"] / 1e6
    lines += [
        row("feature table, jobs=1, one thread", single),
        row(f"feature table, jobs={result['jobs']}", parallel),
        row(f"feature table, largest device only ({mb:.0f} MB of gzip traces)", largest),
        row("`load_ifllm` alone: every device in memory at once, one thread", load),
        "",
        f"Single-core CPU time: {single['cpu_s']:.1f} s, against {PAPER_PIPELINE_CPU_S:.0f} s "
        "for the paper's own pandas pipeline on this machine (reference measured by the issue "
        f"author; that code is not vendored and was not re-run here): "
        f"{result['cpu_ratio_vs_paper']:.0f}x less CPU. With {result['jobs']} processes the "
        f"wall time is {parallel['wall_s']:.1f} s instead of {single['wall_s']:.1f} s "
        f"(speed-up {single['wall_s'] / parallel['wall_s']:.2f}; load average "
        f"{result['load_average']:.1f} on {result['cpu_count']} cores when the runs started). "
        "Memory: devices "
        f"are loaded one at a time, so the peak over all {single['devices']} devices "
        f"({single['peak_rss_mib']:.0f} MiB) is about that of the largest device alone "
        f"({largest['peak_rss_mib']:.0f} MiB): its working set while its traces are parsed, "
        f"not the number of devices. Holding every device (`load_ifllm`, "
        f"{load['peak_rss_mib']:.0f} MiB) adds their samples, {load['samples_mib']:.0f} MiB.",
    ]
    return "\n".join(lines)


def main() -> None:
    """Measure, then write docs/results.md and bench/results/feature_speed.json."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/ifllm")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/feature_speed.json")
    parser.add_argument("--child", choices=("table", "load"), help=argparse.SUPPRESS)
    parser.add_argument("--workers", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        workers = args.workers.split(",") if args.workers else None
        print(json.dumps(child(args.data, args.child, args.jobs, workers)))
        return
    result = run(args.data, args.jobs)
    section = render(result)
    write_section(args.out, MARKER, section, HEADING)
    write_json_atomic(args.json, result)
    print(section)


if __name__ == "__main__":
    main()
