"""Grouped-by-worker evaluation of ``fedgaze train`` / ``fedgaze score`` on IFLLM.

Workers (people) are split into K folds; each fold's workers are never seen in training. For
every fold the script writes IFLLM-format train/test folders (links, no copies), trains with
the same functions the CLI uses (central non-private, central DP-SGD at epsilon 8, and
optionally a real local federation with device budget 8), scores the unseen workers and reports
accuracy and ROC-AUC, with two reference rows: the majority side and "the longer answer wins".
Results go to ``docs/results.md`` (the section between this script's markers) and a JSON file.

    python bench/grouped_eval.py --data ../shared/datasets/ifllm [--folds 5] [--federated]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from scipy.stats import rankdata

from fedgaze.data.ifllm import labelled_comparison_counts, load_ifllm
from fedgaze.data.ifllm_subset import write_subset
from fedgaze.demo import FederationOptions, run_local_federation
from fedgaze.train_score import score, train_central_model

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- grouped_eval:begin -->", "<!-- grouped_eval:end -->"


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC-AUC by the rank-sum formula (ties get average ranks); NaN with one class only."""
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(p)
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def folds_by_worker(counts: dict[str, int], k: int, seed: int) -> list[list[str]]:
    """Workers with labelled comparisons, shuffled with ``seed`` and dealt into ``k`` folds."""
    workers = sorted(w for w, n in counts.items() if n > 0)
    order = np.random.default_rng(seed).permutation(len(workers))
    return [[workers[i] for i in order[f::k]] for f in range(k)]


def labels_of(test_dir: Path) -> dict[int, tuple[int, float]]:
    """query_ID -> (label_right, log length ratio right/left) for every labelled comparison."""
    out = {}
    for device in load_ifllm(test_dir).devices:
        for q in device.comparisons():
            ratio = np.log1p(len(q.response_right or "")) - np.log1p(len(q.response_left))
            out[q.query_id] = (q.label_right, float(ratio))
    return out


def read_predictions(path: Path) -> dict[int, float]:
    """The ``query_ID,p_right`` file written by ``fedgaze score``."""
    with open(path, newline="") as fh:
        return {int(r["query_ID"]): float(r["p_right"]) for r in csv.DictReader(fh)}


def metrics(labels: dict[int, tuple[int, float]], p_right: dict[int, float]) -> dict[str, float]:
    """Accuracy and ROC-AUC of ``p_right`` over every labelled comparison (all must be scored)."""
    missing = set(labels) - set(p_right)
    if missing:
        raise ValueError(f"{len(missing)} labelled comparisons were not scored")
    ids = sorted(labels)
    y = np.array([labels[i][0] for i in ids])
    p = np.array([p_right[i] for i in ids])
    return {"accuracy": float(np.mean((p > 0.5) == (y == 1))), "auc": roc_auc(y, p), "n": len(y)}


Method = Callable[[Path, Path, Path], dict[int, float]]


def _central(epsilon: float | None, seed: int) -> Method:
    def run(train_dir: Path, test_dir: Path, work: Path) -> dict[int, float]:
        model = work / f"central-{epsilon}"
        train_central_model(train_dir, model, epsilon=epsilon, seed=seed)
        score(model, test_dir, work / "preds.csv")
        return read_predictions(work / "preds.csv")

    return run


def _federated(epsilon: float, seed: int, max_workers: int, rounds: int) -> Method:
    def run(train_dir: Path, test_dir: Path, work: Path) -> dict[int, float]:
        summary = run_local_federation(
            FederationOptions(
                data=train_dir,
                max_workers=max_workers,
                rounds=rounds,
                epsilon_budget=epsilon,
                run_dir=work / "fed-run",
                seed=seed,
                holdout=0.0,
            ),
            Console(quiet=True),
        )
        score(Path(summary["model"]), test_dir, work / "preds.csv")
        return read_predictions(work / "preds.csv")

    return run


def _reference(kind: str) -> Callable[[dict[int, tuple[int, float]]], dict[int, float]]:
    def run(labels: dict[int, tuple[int, float]]) -> dict[int, float]:
        if kind == "majority-left":
            return dict.fromkeys(labels, 0.0)
        return {i: float(1 / (1 + np.exp(-8 * ratio))) for i, (_, ratio) in labels.items()}

    return run


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run every method on every fold; returns per-fold and mean/std results."""
    counts = labelled_comparison_counts(args.data)
    folds = folds_by_worker(counts, args.folds, args.seed)
    methods: dict[str, Method] = {
        "central, non-private": _central(None, args.seed),
        "central, DP-SGD epsilon 8": _central(8.0, args.seed),
    }
    if args.federated:
        methods[
            f"federated, device epsilon 8 ({args.rounds} rounds, <= {args.max_workers} devices)"
        ] = _federated(8.0, args.seed, args.max_workers, args.rounds)
    references = {
        "majority (always left)": _reference("majority-left"),
        "longer answer wins": _reference("length"),
    }
    per_fold: dict[str, list[dict[str, float]]] = {m: [] for m in [*references, *methods]}
    timings: dict[str, float] = dict.fromkeys(methods, 0.0)
    with tempfile.TemporaryDirectory(prefix="fedgaze-grouped-") as tmp:
        for f, test_workers in enumerate(folds):
            train_workers = [w for g, fold in enumerate(folds) if g != f for w in fold]
            base = Path(tmp) / f"fold{f}"
            train_dir = write_subset(args.data, train_workers, base / "train")
            test_dir = write_subset(args.data, test_workers, base / "test")
            labels = labels_of(test_dir)
            for name, ref in references.items():
                per_fold[name].append(metrics(labels, ref(labels)))
            for name, method in methods.items():
                work = base / name.split(",")[0]
                work.mkdir(parents=True, exist_ok=True)
                t0 = time.monotonic()
                per_fold[name].append(metrics(labels, method(train_dir, test_dir, work)))
                timings[name] += time.monotonic() - t0
            print(f"fold {f}: {len(test_workers)} unseen workers, {len(labels)} comparisons")
    summary = {
        name: {
            "accuracy_mean": statistics.mean(r["accuracy"] for r in rows),
            "accuracy_std": statistics.pstdev(r["accuracy"] for r in rows),
            "auc_mean": statistics.mean(r["auc"] for r in rows),
            "auc_std": statistics.pstdev(r["auc"] for r in rows),
            "n": sum(int(r["n"]) for r in rows),
            "seconds": round(timings.get(name, 0.0), 1),
        }
        for name, rows in per_fold.items()
    }
    return {"folds": args.folds, "seed": args.seed, "per_fold": per_fold, "summary": summary}


def render(result: dict[str, Any], command: str) -> str:
    """The markdown section written into docs/results.md."""
    lines = [
        BEGIN,
        f"Grouped {result['folds']}-fold cross-validation by worker (seed {result['seed']}): "
        "every test worker is unseen in training. Mean +/- std over folds; n = labelled "
        f"comparisons scored in total. Produced by `{command}`.",
        "",
        "| method | accuracy | ROC-AUC | n | train+score time (s, all folds) |",
        "|---|---|---|---|---|",
    ]
    for name, s in result["summary"].items():
        lines.append(
            f"| {name} | {s['accuracy_mean']:.3f} +/- {s['accuracy_std']:.3f} | "
            f"{s['auc_mean']:.3f} +/- {s['auc_std']:.3f} | {s['n']} | {s['seconds'] or '-'} |"
        )
    lines.append(END)
    return "\n".join(lines)


def write_results(section: str, path: Path) -> None:
    """Replace this script's section of ``path`` (or append it)."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Results\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n## Reward model on unseen workers\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def main() -> None:
    """Parse arguments, evaluate, write docs/results.md and bench/results/grouped_eval.json."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/ifllm")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--federated", action="store_true", help="add real federated runs")
    parser.add_argument("--max-workers", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    args = parser.parse_args()
    result = evaluate(args)
    command = "python bench/grouped_eval.py" + (" --federated" if args.federated else "")
    write_results(render(result, command), args.out)
    json_path = ROOT / "bench" / "results" / "grouped_eval.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(render(result, command))


if __name__ == "__main__":
    main()
