"""How good is the reward model on IFLLM, honestly: unseen people, later comparisons, with DP.

Protocols:

- grouped: K-fold cross-validation by worker; every test person is unseen in training.
- chronological: each device's earlier comparisons train, its later ones test (the deployed
  case: the model serves the people who trained it, on their future comparisons).

Rows: majority; feature sets text only / implicit feedback only / text + implicit feedback; each
trained centrally (non-private), federated non-private, federated with device-level DP-SGD at
epsilon 1, 3 and 8, and federated with client-level DP (clipped, noised aggregation). The
chronological protocol adds on-device personalization (a per-person head that never leaves the
device) on top of the federated models. Federated rows call the same device and server
functions as a real run (:mod:`fedgaze.local.simulation`). A drop-one-family ablation of the
central model says which feature families matter.

Every number is the mean +/- std over seeds of the metric on all test comparisons of that seed;
seeds change the fold assignment (grouped), the initial weights, shuffling and DP noise.

    python bench/reward_benchmark.py [--data DIR] [--seeds 3] [--jobs N] [--quick]

Writes the section between this script's markers in docs/results.md and
bench/results/reward_benchmark.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import write_section
from fedgaze import defaults
from fedgaze.data.ifllm import load_ifllm
from fedgaze.data.split import chronological_split
from fedgaze.features import v2 as features
from fedgaze.local.simulation import (
    DeviceRows,
    SimulationPlan,
    simulate_federation,
)
from fedgaze.model.evaluation import roc_auc
from fedgaze.model.personal import fit_personal_head
from fedgaze.model.reward import model_from_state, predict_logits
from fedgaze.privacy.central import CentralDPConfig, calibrate_central_noise
from fedgaze.privacy.dp_train import train_central

ROOT = Path(__file__).resolve().parents[1]
MARKER = "reward_benchmark"
HOLDOUT = 0.3
CENTRAL = {
    "epochs": defaults.CENTRAL_EPOCHS,
    "lr": defaults.CENTRAL_LR,
    "hidden": defaults.HIDDEN,
    "batch_size": 32,
}
FED = {"rounds": 20, "local_epochs": 1, "lr": 0.05, "batch_size": 8, "hidden": 16}
CLIENT_DP = {"epsilon": 8.0, "clip_norm": 0.5, "delta": 1e-5}
EPSILONS = (1.0, 3.0, 8.0)


def feature_sets() -> dict[str, np.ndarray]:
    """Column indices of each benchmarked feature set."""
    implicit = [f for f in features.FAMILIES if f != "text"]
    return {
        "text only": features.columns(["text"]),
        "implicit feedback only": features.columns(implicit),
        "text + implicit feedback": features.columns(list(features.FAMILIES)),
    }


@dataclass(frozen=True, eq=False)
class Split:
    """Training devices and the test comparisons, with the test rows' owners."""

    train: list[DeviceRows]
    test_X: np.ndarray
    test_y: np.ndarray
    test_owner: np.ndarray  # device index into ``train`` for personalization; -1 if unseen


def load_devices(data: Path) -> list[DeviceRows]:
    """Every device's labelled comparisons (time order) as full v2 feature matrices."""
    out = []
    for device in load_ifllm(data).devices:
        fm = features.featurize_device(device)
        if len(fm):
            out.append(DeviceRows(device.device_id, fm.X, fm.y))
    return out


def grouped_splits(devices: Sequence[DeviceRows], folds: int, seed: int) -> list[Split]:
    """K folds of whole devices, dealt after a seeded shuffle; test people are unseen."""
    order = np.random.default_rng(seed).permutation(len(devices))
    out = []
    for f in range(folds):
        test = [devices[i] for i in order[f::folds]]
        train = [devices[i] for i in order if i not in set(order[f::folds])]
        out.append(
            Split(
                train=train,
                test_X=np.concatenate([d.X for d in test]),
                test_y=np.concatenate([d.y for d in test]),
                test_owner=np.full(sum(len(d.y) for d in test), -1),
            )
        )
    return out


def chronological_splits(devices: Sequence[DeviceRows]) -> list[Split]:
    """One split: each device's earlier comparisons train, its later ``HOLDOUT`` share tests."""
    train, tx, ty, owner = [], [], [], []
    for d in devices:
        early, late = chronological_split(list(range(len(d.y))), HOLDOUT)
        train.append(DeviceRows(d.device_id, d.X[early], d.y[early]))
        tx.append(d.X[late])
        ty.append(d.y[late])
        owner.append(np.full(len(late), len(train) - 1))
    return [Split(train, np.concatenate(tx), np.concatenate(ty), np.concatenate(owner))]


def _subset(devices: Sequence[DeviceRows], cols: np.ndarray) -> list[DeviceRows]:
    return [DeviceRows(d.device_id, d.X[:, :, cols], d.y) for d in devices]


Trainer = Callable[[list[DeviceRows], int], tuple[dict[str, np.ndarray], dict[str, Any]]]


def _central(train: list[DeviceRows], seed: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    X = np.concatenate([d.X for d in train])
    y = np.concatenate([d.y for d in train])
    state, _ = train_central(
        X,
        y,
        epochs=CENTRAL["epochs"],
        lr=CENTRAL["lr"],
        seed=seed,
        hidden=CENTRAL["hidden"],
        batch_size=CENTRAL["batch_size"],
    )
    return state, {}


def _federated(mode: str, epsilon: float | None) -> Trainer:
    def run(train: list[DeviceRows], seed: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        central = None
        if mode == "client_dp":
            sigma = calibrate_central_noise(
                CLIENT_DP["epsilon"],
                sample_rate=1.0,
                rounds=FED["rounds"],
                delta=CLIENT_DP["delta"],
            )
            central = CentralDPConfig(
                noise_multiplier=sigma,
                clip_norm=CLIENT_DP["clip_norm"],
                sample_rate=1.0,
                delta=CLIENT_DP["delta"],
            )
        plan = SimulationPlan(
            mode=mode, device_epsilon=epsilon or 8.0, central=central, seed=seed, **FED
        )
        result = simulate_federation(train, plan)
        info: dict[str, Any] = {"declined": result.declined}
        if result.device_epsilons:
            info["max_device_epsilon"] = max(result.device_epsilons.values())
            info["noise_multiplier"] = result.noise_multiplier
        if result.central_epsilon is not None:
            info["central_epsilon"] = result.central_epsilon
            info["central_noise_multiplier"] = central.noise_multiplier if central else None
        return result.state, info

    return run


METHODS: dict[str, Trainer] = {
    "central, non-private": _central,
    "federated, non-private": _federated("nonprivate", None),
    **{f"federated, device DP eps {e:g}": _federated("device_dp", e) for e in EPSILONS},
    f"federated, client-level DP eps {CLIENT_DP['epsilon']:g}": _federated("client_dp", None),
}
PERSONALIZED = ("federated, non-private", "federated, device DP eps 8")


def metrics(y: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """Accuracy (logit > 0 predicts right), ROC-AUC and n of one set of predictions."""
    return {
        "accuracy": float(np.mean((logits > 0) == (y == 1))),
        "auc": roc_auc(y, logits),
        "n": len(y),
    }


def _personal_logits(split: Split, state: dict[str, np.ndarray], logits: np.ndarray) -> np.ndarray:
    model = model_from_state(state)
    out = logits.copy()
    for i, dev in enumerate(split.train):
        rows = split.test_owner == i
        if rows.any():
            head = fit_personal_head(predict_logits(model, dev.X), dev.X, dev.y)
            out[rows] = head.adjust(logits[rows], split.test_X[rows])
    return out


@dataclass(frozen=True)
class Task:
    """One (protocol, seed, feature set, method) cell; runs in a worker process."""

    protocol: str
    seed: int
    feature_set: str
    method: str
    drop_family: str | None = None


_DEVICES: list[DeviceRows] = []
_FOLDS = 5


def _init(cache: str, folds: int) -> None:
    global _DEVICES, _FOLDS
    with np.load(cache, allow_pickle=False) as z:
        ids = [str(s) for s in z["ids"]]
        _DEVICES = [DeviceRows(i, z[f"X_{k}"], z[f"y_{k}"]) for k, i in enumerate(ids)]
    _FOLDS = folds


def run_task(task: Task) -> dict[str, Any]:
    """Train and score one cell on every split of its protocol; pooled metrics and timing."""
    t0 = time.process_time()
    if task.drop_family is None:
        cols = feature_sets()[task.feature_set]
    else:
        cols = features.columns([f for f in features.FAMILIES if f != task.drop_family])
    devices = _subset(_DEVICES, cols)
    splits = (
        grouped_splits(devices, _FOLDS, task.seed)
        if task.protocol == "grouped"
        else chronological_splits(devices)
    )
    ys, logits, personal, infos = [], [], [], []
    for split in splits:
        if task.method == "majority":
            y_train = np.concatenate([d.y for d in split.train])
            lg = np.full(len(split.test_y), 1.0 if y_train.mean() > 0.5 else -1.0)
        else:
            state, info = METHODS[task.method](split.train, task.seed)
            infos.append(info)
            lg = predict_logits(model_from_state(state), split.test_X)
            if task.protocol == "chronological" and task.method in PERSONALIZED:
                personal.append(_personal_logits(split, state, lg))
        ys.append(split.test_y)
        logits.append(lg)
    y = np.concatenate(ys)
    out: dict[str, Any] = {
        "task": task.__dict__,
        "metrics": metrics(y, np.concatenate(logits)),
        "cpu_s": time.process_time() - t0,
        "info": infos,
    }
    if personal:
        out["personalized"] = metrics(y, np.concatenate(personal))
    return out


def plan_tasks(seeds: Sequence[int]) -> list[Task]:
    """Every cell of the main table and the ablation, for every seed."""
    tasks = []
    for protocol in ("grouped", "chronological"):
        for seed in seeds:
            tasks.append(Task(protocol, seed, "text + implicit feedback", "majority"))
            for fs in feature_sets():
                tasks += [Task(protocol, seed, fs, m) for m in METHODS]
            tasks += [
                Task(protocol, seed, "ablation", "central, non-private", drop_family=fam)
                for fam in features.FAMILIES
            ]
    return tasks


def _summary(values: Sequence[dict[str, float]]) -> dict[str, float]:
    acc = [v["accuracy"] for v in values]
    auc = [v["auc"] for v in values]
    return {
        "accuracy_mean": statistics.mean(acc),
        "accuracy_std": statistics.pstdev(acc),
        "auc_mean": statistics.mean(auc),
        "auc_std": statistics.pstdev(auc),
        "n": int(values[0]["n"]),
    }


def summarize(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Group per-seed results into table rows: (protocol, feature set, method) -> mean/std."""
    groups: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    cpu: dict[tuple[str, str, str], float] = {}
    for r in results:
        t = r["task"]
        fs = t["feature_set"] if t["drop_family"] is None else f"without {t['drop_family']}"
        key = (t["protocol"], fs, t["method"])
        groups.setdefault(key, []).append(r["metrics"])
        cpu[key] = cpu.get(key, 0.0) + r["cpu_s"]
        if "personalized" in r:
            pkey = (t["protocol"], fs, t["method"] + " + on-device personalization")
            groups.setdefault(pkey, []).append(r["personalized"])
    return {
        "|".join(k): {**_summary(v), "seeds": len(v), "cpu_s": round(cpu.get(k, 0.0), 1)}
        for k, v in groups.items()
    }


def _fmt(s: dict[str, float]) -> str:
    return (
        f"{s['accuracy_mean']:.3f} +/- {s['accuracy_std']:.3f} | "
        f"{s['auc_mean']:.3f} +/- {s['auc_std']:.3f} | {s['n']}"
    )


def render(result: dict[str, Any], command: str) -> str:
    """Markdown tables for docs/results.md: main table per protocol, then the ablation."""
    rows = result["summary"]
    cfg = result["config"]
    lines = [
        f"Produced by `{command}` ({cfg['devices']} devices with labelled comparisons, "
        f"{cfg['comparisons']} comparisons, seeds {cfg['seeds']}, feature set "
        f"{cfg['feature_set']} with {cfg['n_features']} features per side). Mean +/- std over "
        "seeds; n = test comparisons per seed. Grouped: "
        f"{cfg['folds']}-fold by worker, test people unseen. Chronological: each device's "
        f"later {HOLDOUT:.0%} of comparisons test. Federated: {FED['rounds']} rounds, "
        f"{FED['local_epochs']} local epoch, SGD lr {FED['lr']}, batch {FED['batch_size']}; "
        "device DP noise calibrated so the worst-case device stays within its epsilon "
        f"(delta 1e-5, RDP); client-level DP: clip {CLIENT_DP['clip_norm']}, every device "
        f"every round (no sampling amplification), epsilon {CLIENT_DP['epsilon']:g} per "
        "person at delta 1e-5 (dp_accounting RDP).",
        "",
    ]
    for protocol in ("grouped", "chronological"):
        lines += [
            f"**{protocol}**",
            "",
            "| features | method | accuracy | ROC-AUC | n |",
            "|---|---|---|---|---|",
        ]
        for key, s in rows.items():
            p, fs, method = key.split("|")
            if p == protocol and not fs.startswith("without"):
                label = "-" if method == "majority" else fs
                lines.append(f"| {label} | {method} | {_fmt(s)} |")
        lines.append("")
    lines += [
        "**Ablation** (central, non-private, text + implicit feedback without one family)",
        "",
        "| protocol | features | accuracy | ROC-AUC | n |",
        "|---|---|---|---|---|",
    ]
    for key, s in rows.items():
        p, fs, method = key.split("|")
        if fs.startswith("without") or (
            fs == "text + implicit feedback" and method == "central, non-private"
        ):
            lines.append(f"| {p} | {fs} | {_fmt(s)} |")
    return "\n".join(lines)


def main() -> None:
    """Load and featurize once, run every cell (in parallel), write docs and JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/ifllm")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/reward_benchmark.json")
    args = parser.parse_args()
    t0 = time.monotonic()
    devices = load_devices(args.data)
    cache = args.json.parent / ".reward_benchmark_features.npz"
    cache.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"ids": np.array([d.device_id for d in devices])}
    for k, d in enumerate(devices):
        arrays[f"X_{k}"], arrays[f"y_{k}"] = d.X, d.y
    np.savez(cache, **arrays)
    tasks = plan_tasks(list(range(args.seeds)))
    print(f"{len(devices)} devices featurized in {time.monotonic() - t0:.1f} s; {len(tasks)} cells")
    results = []
    with ProcessPoolExecutor(args.jobs, initializer=_init, initargs=(str(cache), args.folds)) as ex:
        for i, r in enumerate(ex.map(run_task, tasks), 1):
            results.append(r)
            t = r["task"]
            print(
                f"[{i}/{len(tasks)}] {t['protocol']} seed {t['seed']} {t['feature_set']} "
                f"{t['drop_family'] or ''} {t['method']}: acc {r['metrics']['accuracy']:.3f} "
                f"auc {r['metrics']['auc']:.3f} ({r['cpu_s']:.0f} s)",
                flush=True,
            )
    cache.unlink()
    result = {
        "config": {
            "devices": len(devices),
            "comparisons": int(sum(len(d.y) for d in devices)),
            "seeds": list(range(args.seeds)),
            "folds": args.folds,
            "feature_set": features.FEATURE_SET,
            "n_features": len(features.SIDE_FEATURE_NAMES),
            "central": CENTRAL,
            "federated": FED,
            "client_dp": CLIENT_DP,
            "holdout": HOLDOUT,
            "wall_s": round(time.monotonic() - t0, 1),
        },
        "summary": summarize(results),
        "cells": results,
    }
    command = "python bench/reward_benchmark.py" + (
        f" --seeds {args.seeds}" if args.seeds != 3 else ""
    )
    section = render(result, command)
    write_section(args.out, MARKER, section, "## Reward model accuracy (IFLLM)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(section)


if __name__ == "__main__":
    main()
