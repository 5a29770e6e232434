"""The ``fedgaze`` command line: demo, train, score, features."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from fedgaze.demo import FederationOptions


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _existing_dir(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"not a directory: {path}")
    return path


def _add_federation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rounds", type=_positive_int, default=3, help="federated rounds (3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", help="comma-separated IFLLM worker ids to run as devices")
    p.add_argument(
        "--max-workers",
        type=_positive_int,
        default=8,
        help="cap on IFLLM devices (8); each is a SuperNode process",
    )
    p.add_argument("--delta", type=_positive_float, default=1e-5)
    p.add_argument(
        "--noise-multiplier",
        type=_positive_float,
        help="DP-SGD noise (default: the smallest that fits every round into the budget)",
    )
    p.add_argument("--round-timeout", type=_positive_float, default=120.0, help="seconds (120)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``fedgaze`` subcommand."""
    parser = argparse.ArgumentParser(
        prog="fedgaze",
        description="Federated, differentially private reward models from implicit feedback.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a real local federation end to end")
    demo.add_argument("--nodes", type=_positive_int, default=5, help="synthetic devices (5)")
    demo.add_argument("--data", type=_existing_dir, help="IFLLM-format folder instead of synthetic")
    demo.add_argument("--run-dir", type=Path, help="run directory (default: new under ./runs/)")
    demo.add_argument("--epsilon", type=_positive_float, default=8.0, help="per-device budget (8)")
    _add_federation_args(demo)

    train = sub.add_parser("train", help="train a reward model on an IFLLM-format folder")
    train.add_argument("--data", type=_existing_dir, required=True)
    train.add_argument("--out", type=Path, required=True, help="model directory to write")
    train.add_argument("--mode", choices=("central", "federated"), default="central")
    train.add_argument(
        "--epsilon",
        type=_positive_float,
        help="DP budget: central = target epsilon; federated = per-device budget "
        "(default: non-private central, budget 8 federated)",
    )
    train.add_argument("--epochs", type=_positive_int, default=10, help="central epochs (10)")
    train.add_argument("--run-dir", type=Path, help="federated: run directory")
    _add_federation_args(train)

    score = sub.add_parser("score", help="score every labelled pairwise comparison of a folder")
    score.add_argument("--model", type=_existing_dir, required=True)
    score.add_argument("--data", type=_existing_dir, required=True)
    score.add_argument("--out", type=Path, required=True, help="CSV: query_ID,p_right")

    feats = sub.add_parser(
        "features", help="compute the feature table of every comparison of an IFLLM-format folder"
    )
    feats.add_argument("--data", type=_existing_dir, required=True)
    feats.add_argument(
        "--out", type=Path, required=True, help="table to write: FILE.parquet or FILE.csv"
    )
    feats.add_argument(
        "--jobs",
        type=_positive_int,
        default=len(os.sched_getaffinity(0)),
        help="worker processes (default: every core this process may use)",
    )
    feats.add_argument("--workers", help="comma-separated worker ids (default: all)")
    return parser


def _federation_options(args: argparse.Namespace, **overrides: Any) -> FederationOptions:
    from fedgaze.demo import FederationOptions

    workers = (
        tuple(w.strip() for w in args.workers.split(",") if w.strip()) if args.workers else None
    )
    fields: dict[str, Any] = {
        "rounds": args.rounds,
        "seed": args.seed,
        "workers": workers,
        "max_workers": None if workers else args.max_workers,
        "delta": args.delta,
        "noise_multiplier": args.noise_multiplier,
        "round_timeout": args.round_timeout,
        "run_dir": args.run_dir,
        **overrides,
    }
    return FederationOptions(**fields)


def _cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from fedgaze.demo import run_local_federation

    opts = _federation_options(args, nodes=args.nodes, data=args.data, epsilon_budget=args.epsilon)
    summary = run_local_federation(opts, console)
    return 0 if summary["rounds_completed"] == summary["rounds"] else 1


def _cmd_train(args: argparse.Namespace, console: Console) -> int:
    if args.mode == "central":
        from fedgaze.train_score import train_central_model

        saved = train_central_model(
            args.data,
            args.out,
            epsilon=args.epsilon,
            delta=args.delta,
            epochs=args.epochs,
            seed=args.seed,
        )
        eps = saved.provenance["epsilon"]
        console.print(
            f"trained on {saved.provenance['examples']} comparisons from "
            f"{saved.provenance['devices']} workers; "
            + ("non-private" if eps is None else f"epsilon={eps:.3f} delta={args.delta:g}")
            + f"; model written to {args.out}"
        )
        return 0
    from fedgaze.demo import run_local_federation

    opts = _federation_options(args, data=args.data, epsilon_budget=args.epsilon or 8.0)
    summary = run_local_federation(opts, console)
    if summary["rounds_completed"] != summary["rounds"]:
        return 1
    replace_model_dir(Path(summary["model"]), args.out)
    console.print(f"federated model written to {args.out}")
    return 0


def replace_model_dir(source: Path, out: Path) -> None:
    """Copy the model at ``source`` to ``out``, replacing only an earlier fedgaze model there."""
    if out.exists():
        if not (out / "model.json").is_file():
            raise ValueError(f"{out} exists and is not a fedgaze model directory; not replacing it")
        shutil.rmtree(out)
    shutil.copytree(source, out)


def _cmd_score(args: argparse.Namespace, console: Console) -> int:
    from fedgaze.train_score import score

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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedgaze`` console script; returns the process exit code."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    args = build_parser().parse_args(argv)
    console = Console()
    errors = Console(stderr=True)
    handlers = {
        "demo": _cmd_demo,
        "train": _cmd_train,
        "score": _cmd_score,
        "features": _cmd_features,
    }
    try:
        return handlers[args.command](args, console)
    except KeyboardInterrupt:
        errors.print("[red]interrupted[/red]: every child process was stopped", soft_wrap=True)
        return 130
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as err:
        # Soft wrap keeps file paths in error messages whole (copyable, greppable).
        errors.print(f"[red]error[/red]: {escape(str(err))}", soft_wrap=True, highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
