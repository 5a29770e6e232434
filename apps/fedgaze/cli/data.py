"""``fedgaze score`` and ``fedgaze features``: a model's predictions, a folder's feature table."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from rich.console import Console

from fedgaze.argtypes import existing_dir, positive_int


def add_parsers(sub: Any) -> None:
    """Add ``score`` and ``features`` to the ``fedgaze`` subparsers ``sub``."""
    score = sub.add_parser("score", help="score every labelled pairwise comparison of a folder")
    score.add_argument("--model", type=existing_dir, required=True)
    score.add_argument("--data", type=existing_dir, required=True)
    score.add_argument("--out", type=Path, required=True, help="CSV: query_ID,p_right")
    score.set_defaults(handler=_cmd_score)

    feats = sub.add_parser(
        "features", help="compute the feature table of every comparison of an IFLLM-format folder"
    )
    feats.add_argument("--data", type=existing_dir, required=True)
    feats.add_argument(
        "--out", type=Path, required=True, help="table to write: FILE.parquet or FILE.csv"
    )
    feats.add_argument(
        "--jobs",
        type=positive_int,
        default=len(os.sched_getaffinity(0)),
        help="worker processes (default: every core this process may use)",
    )
    feats.add_argument("--workers", help="comma-separated worker ids (default: all)")
    feats.set_defaults(handler=_cmd_features)


def _cmd_score(args: argparse.Namespace, console: Console) -> int:
    from fedgaze.local.train_score import score

    rows = score(args.model, args.data, args.out)
    console.print(f"wrote {rows} predictions to {args.out}")
    return 0


def _cmd_features(args: argparse.Namespace, console: Console) -> int:
    import time

    from fedgaze.features.table import compute_feature_table, write_feature_table

    workers = [w.strip() for w in args.workers.split(",") if w.strip()] if args.workers else None
    if args.out.suffix not in (".parquet", ".csv"):
        raise ValueError(f"--out must end in .parquet or .csv, got {args.out}")
    start = time.monotonic()
    table = compute_feature_table(args.data, jobs=args.jobs, workers=workers)
    write_feature_table(table, args.out)
    seconds = time.monotonic() - start
    console.print(
        f"{table.frame.height} comparisons x {table.frame.width} columns from "
        f"{table.frame['worker'].n_unique()} workers with pairwise queries, in {seconds:.1f} s "
        f"with {args.jobs} job(s); "
        f"{len(table.problems)} unusable rows or files reported; written to {args.out}",
        soft_wrap=True,
    )
    return 0
