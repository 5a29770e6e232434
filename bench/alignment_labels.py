"""How good are the private preference labels a device releases, on IFLLM?

For the people whose comparisons get labelled (the test side of each protocol), a share of their
labelled comparisons (0%, 10%, 30%, 100%, drawn at random per seed, nested) keeps the person's
explicit choice; the rest are labelled by inference, "explicit-first"
(:func:`fedgaze.labels.release.preference_bits` on the comparison's own traces, with the
person's choice hidden where it is not kept). Every bit is then released by randomized response
(:func:`fedgaze.privacy.label_dp.randomized_response`) at epsilon_label 8, 4, 2, 1, or without
noise, and compared with the person's true left/right choice (ties are not counted).

Labellers: the behaviour model trained on the protocol's training side with the shipped central
recipe (as ``fedgaze train --mode central``), with DP-SGD at epsilon 8 (the headline) and
non-private; and "the longer answer wins" (characters; ties go right). Protocols: the reward
benchmark's split helpers (grouped by worker; chronological, earlier 70% train). Seeds change
the folds, the explicit subset, the model init and the RR noise (DP-SGD noise: OS entropy).
Also measured: CPU per released label on one real device, and the one-off import cost.

    python bench/alignment_labels.py [--data DIR] [--seeds 3] [--quick]

Writes the section between this script's markers in docs/results.md and
bench/results/alignment_labels.json (``--quick``, 1 seed and 2 folds, writes neither unless
``--out``/``--json`` name where).
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import command_line, publish
from fedgaze import defaults
from fedgaze.data.ifllm import load_ifllm
from fedgaze.data.schema import Device, Query
from fedgaze.features import v2 as features
from fedgaze.features.matrix import training_queries
from fedgaze.privacy.label_dp import (
    effective_labels,
    expected_accuracy,
    flip_rate,
    randomized_response,
)

if TYPE_CHECKING:
    from fedgaze.labels.release import LabelSource
    from fedgaze.local.simulation import DeviceRows

ROOT = Path(__file__).resolve().parents[1]
MARKER = "alignment-labels"
HEADING = "## Private preference labels (bench/alignment_labels.py)"
PROTOCOLS = ("grouped", "chronological")
SHARES = (0.0, 0.1, 0.3, 1.0)
EPSILONS: tuple[float | None, ...] = (None, 8.0, 4.0, 2.0, 1.0)
MODEL_EPSILON = 8.0
DP_MODEL = f"behaviour model, DP eps {MODEL_EPSILON:g}"
NP_MODEL = "behaviour model, non-private"
LONGER = "longer answer"
LABELLERS = (DP_MODEL, NP_MODEL, LONGER)
RECIPE: dict[str, Any] = {
    "epochs": defaults.CENTRAL_EPOCHS,
    "lr": defaults.CENTRAL_LR,
    "hidden": defaults.HIDDEN,
    "delta": defaults.DELTA,
}
N_EFF = (
    "n_eff = n (2a - 1)^2 (`fedgaze.privacy.label_dp.effective_labels`, a = the mean accuracy "
    "in the cell): how many perfectly correct labels the n released ones are worth once the "
    "known flip rate is debiased"
)


# ---- pure parts ------------------------------------------------------------------------------


def explicit_draws(n: int, seed: int, protocol: str) -> np.ndarray:
    """One uniform draw per comparison of the cohort, for a seed and protocol."""
    return np.random.default_rng([seed, PROTOCOLS.index(protocol), 7]).random(n)


def explicit_mask(draws: np.ndarray, share: float) -> np.ndarray:
    """Which comparisons keep the person's explicit choice: ``draws < share`` (so the subsets
    are nested: every comparison explicit at 10% is explicit at 30% too)."""
    return np.asarray(draws) < share


def explicit_first(mask: np.ndarray, explicit: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """The explicit bit where ``mask``, else the labeller's ``fallback`` bit (int64)."""
    return np.where(mask, explicit, fallback).astype(np.int64)


def longer_answer_bits(lengths: np.ndarray) -> np.ndarray:
    """1 (right preferred) where the right answer is at least as long as the left, else 0;
    ``lengths`` is (n, 2) characters, left then right."""
    lengths = np.asarray(lengths).reshape(-1, 2)
    return (lengths[:, 1] >= lengths[:, 0]).astype(np.int64)


def hide_choices(queries: Sequence[Query], mask: np.ndarray) -> list[Query]:
    """The queries with the person's choice removed where ``mask`` is False."""
    return [
        q if keep else dataclasses.replace(q, preference=None)
        for q, keep in zip(queries, mask, strict=True)
    ]


def rr_seed(seed: int, protocol: str, epsilon: float) -> int:
    """The randomized-response seed of a cell: shared by every labeller and explicit share of
    a (seed, protocol, epsilon), so they differ by their bits only (common random numbers)."""
    return seed * 10_000 + PROTOCOLS.index(protocol) * 1000 + round(epsilon * 10)


def release(bits: np.ndarray, epsilon: float | None, seed: int) -> np.ndarray:
    """The released bits: as they are without noise, else randomized response at ``epsilon``."""
    if epsilon is None:
        return np.asarray(bits, dtype=np.int64)
    return randomized_response(bits, epsilon, seed=seed)


def summarize_cell(accuracies: Sequence[float], n: int) -> dict[str, Any]:
    """Mean and (population) std of a cell's per-seed accuracies, with n and n_eff."""
    mean = statistics.mean(accuracies)
    return {
        "accuracy_mean": mean,
        "accuracy_std": statistics.pstdev(accuracies),
        "n": n,
        "n_eff": effective_labels(n, mean),
        "per_seed": list(accuracies),
    }


def format_cell(cell: Mapping[str, Any]) -> str:
    """``acc ± std (n_eff)``."""
    return f"{cell['accuracy_mean']:.3f} ± {cell['accuracy_std']:.3f} ({cell['n_eff']:.0f})"


def cell_key(protocol: str, share: float, labeller: str, epsilon: float | None) -> str:
    """The summary key of one cell."""
    return f"{protocol}|{share:g}|{labeller}|{'none' if epsilon is None else f'{epsilon:g}'}"


def render_table(summary: Mapping[str, Mapping[str, Any]], protocol: str) -> list[str]:
    """One protocol's table: rows share x labeller (one row at 100%: no labeller is used),
    columns epsilon_label none, 8, 4, 2, 1."""
    eps_names = ["none" if e is None else f"{e:g}" for e in EPSILONS]
    lines = [
        "| explicit share | labeller | " + " | ".join(f"eps {e}" for e in eps_names) + " |",
        "|---|---|" + "---|" * len(EPSILONS),
    ]
    for share in SHARES:
        labellers = LABELLERS if share < 1 else LABELLERS[:1]
        for labeller in labellers:
            name = labeller if share < 1 else "(every label explicit)"
            cells = [summary.get(cell_key(protocol, share, labeller, e)) for e in EPSILONS]
            text = [format_cell(c) if c else "-" for c in cells]
            lines.append(f"| {share:.0%} | {name} | " + " | ".join(text) + " |")
    return lines


# ---- data and one cell of work --------------------------------------------------------------


def _rb() -> ModuleType:
    """The reward benchmark (imported late: it loads torch, which the pure parts do not need)."""
    import reward_benchmark

    return reward_benchmark


@dataclass(frozen=True, eq=False)
class Cohort:
    """Every labelled comparison of the devices that have one, device by device in time order.

    ``index_rows`` are the reward benchmark's devices with each ``X`` replaced by the global
    indices of the device's comparisons, so its split helpers split indices.
    """

    devices: list[Device]
    index_rows: list[DeviceRows]
    X: np.ndarray
    y: np.ndarray
    lengths: np.ndarray
    owner: np.ndarray
    queries: list[Query]


def load_cohort(data: Path) -> Cohort:
    """Load and featurize once (the same devices, in the same order, as the reward benchmark)."""
    from fedgaze.local.simulation import DeviceRows

    kept = []
    for device in load_ifllm(data).devices:
        fm = features.featurize_device(device)
        comps = training_queries(device.queries)
        if [q.query_id for q in comps] != fm.query_ids.tolist():
            raise AssertionError(f"{device.device_id}: feature rows and comparisons differ")
        if len(fm):
            kept.append((device, fm, comps))
    ends = np.cumsum([len(fm) for _, fm, _ in kept])
    queries = [q for _, _, comps in kept for q in comps]
    return Cohort(
        devices=[device for device, _, _ in kept],
        index_rows=[
            DeviceRows(d.device_id, np.arange(end - len(fm), end), fm.y)
            for (d, fm, _), end in zip(kept, ends, strict=True)
        ],
        X=np.concatenate([fm.X for _, fm, _ in kept]),
        y=np.concatenate([fm.y for _, fm, _ in kept]).astype(np.int64),
        lengths=np.array([(len(q.response_left), len(q.response_right or "")) for q in queries]),
        owner=np.concatenate([np.full(len(fm), k) for k, (_, fm, _) in enumerate(kept)]),
        queries=queries,
    )


def split_indices(cohort: Cohort, protocol: str, seed: int, folds: int) -> list[tuple[Any, Any]]:
    """(train indices, test indices) of each split of a protocol, by the benchmark's helpers."""
    rb = _rb()
    splits = (
        rb.grouped_splits(cohort.index_rows, folds, seed)
        if protocol == "grouped"
        else rb.chronological_splits(cohort.index_rows)
    )
    return [
        (np.concatenate([d.X for d in s.train]).astype(np.intp), s.test_X.astype(np.intp))
        for s in splits
    ]


def train_model(
    X: np.ndarray, y: np.ndarray, seed: int, epsilon: float | None
) -> tuple[dict[str, np.ndarray], float | None]:
    """The shipped central recipe, as ``fedgaze train --mode central [--epsilon E]`` runs it."""
    from fedgaze.privacy.dp_train import DPConfig, train_central

    epochs, lr, hidden, delta = (RECIPE[k] for k in ("epochs", "lr", "hidden", "delta"))
    dp = None if epsilon is None else DPConfig(epsilon_budget=epsilon, delta=delta, lr=lr)
    y32 = y.astype(np.float32)
    state, spent = train_central(X, y32, epochs=epochs, lr=lr, seed=seed, dp=dp, hidden=hidden)
    return dict(state), spent


def model_bits(
    cohort: Cohort, test: np.ndarray, mask: np.ndarray, state: Mapping[str, np.ndarray]
) -> np.ndarray:
    """Each test comparison's bit before noise, device by device as a device computes it:
    ``preference_bits`` with the person's choice kept only where ``mask``."""
    from fedgaze.labels.release import preference_bits

    source: LabelSource = "explicit-first" if mask.any() else "implicit-only"
    out = np.zeros(len(test), dtype=np.int64)
    for dev in np.unique(cohort.owner[test]):
        rows = np.flatnonzero(cohort.owner[test] == dev)
        queries = hide_choices([cohort.queries[i] for i in test[rows]], mask[rows])
        out[rows] = preference_bits(queries, cohort.devices[dev].calibration, state, source)
    return out


@dataclass(frozen=True)
class Task:
    """One split of one protocol and seed; runs in a worker process."""

    protocol: str
    seed: int
    fold: int
    folds: int


_COHORT: Cohort | None = None


def run_task(task: Task) -> dict[str, Any]:
    """Train both models on the split's training side; every share's bits on its test side."""
    assert _COHORT is not None
    cohort = _COHORT
    t0 = time.process_time()
    train, test = split_indices(cohort, task.protocol, task.seed, task.folds)[task.fold]
    draws = explicit_draws(len(cohort.y), task.seed, task.protocol)[test]
    bits: dict[str, dict[float, np.ndarray]] = {}
    info: dict[str, Any] = {"train_n": len(train), "test_n": len(test)}
    states = {}
    for name, eps in ((DP_MODEL, MODEL_EPSILON), (NP_MODEL, None)):
        state, spent = train_model(cohort.X[train], cohort.y[train], task.seed, eps)
        states[name] = state
        info[f"{name} epsilon spent"] = spent
        bits[name] = {s: model_bits(cohort, test, explicit_mask(draws, s), state) for s in SHARES}
    return {
        "task": dataclasses.asdict(task),
        "test": test,
        "bits": bits,
        "info": info,
        "cpu_s": time.process_time() - t0,
        "dp_state": states[DP_MODEL] if task.fold == 0 else None,
    }


def score(
    cohort: Cohort, results: Sequence[dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per-seed accuracies of every cell, pooled over a seed's splits, then the summary; and
    per labeller (0% explicit, no noise) the share of bits that say "right" and the agreement
    with the longer-answer rule, mean over seeds."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["task"]["protocol"], r["task"]["seed"]), []).append(r)
    accs: dict[str, list[float]] = {}
    diag: dict[str, list[float]] = {}
    ns: dict[str, int] = {}
    for (protocol, seed), parts in sorted(groups.items()):
        parts.sort(key=lambda r: r["task"]["fold"])
        test = np.concatenate([r["test"] for r in parts])
        truth = cohort.y[test]
        draws = explicit_draws(len(cohort.y), seed, protocol)[test]
        length = longer_answer_bits(cohort.lengths[test])
        for share in SHARES:
            mask = explicit_mask(draws, share)
            pre = {
                DP_MODEL: np.concatenate([r["bits"][DP_MODEL][share] for r in parts]),
                NP_MODEL: np.concatenate([r["bits"][NP_MODEL][share] for r in parts]),
                LONGER: explicit_first(mask, truth, length),
            }
            for labeller, b in pre.items():
                if share == 0:
                    diag.setdefault(f"{protocol}|{labeller}|right share", []).append(b.mean())
                    agree = float(np.mean(b == length))
                    diag.setdefault(f"{protocol}|{labeller}|agrees with longer", []).append(agree)
                for eps in EPSILONS:
                    released = release(b, eps, rr_seed(seed, protocol, eps or 0.0))
                    key = cell_key(protocol, share, labeller, eps)
                    accs.setdefault(key, []).append(float(np.mean(released == truth)))
                    ns[key] = len(truth)
    summary = {k: summarize_cell(v, ns[k]) for k, v in accs.items()}
    for k, cell in summary.items():
        head, eps_name = k.rsplit("|", 1)
        if eps_name != "none":
            clean = summary[f"{head}|none"]["accuracy_mean"]
            cell["expected_from_no_noise"] = expected_accuracy(clean, float(eps_name))
    return summary, {k: float(np.mean(v)) for k, v in diag.items()}


# ---- device cost ----------------------------------------------------------------------------


def label_cost(device: Device, state: Mapping[str, np.ndarray], repeats: int) -> dict[str, Any]:
    """Milliseconds per released label on one device, one thread: ``preference_bits``
    (featurize + predict) + ``randomized_response`` over its releasable comparisons, and the
    featurization alone; CPU (``process_time``: robust to other load) and wall, medians of
    ``repeats`` after one warm-up call."""
    import torch

    from fedgaze.labels.release import preference_bits, releasable

    torch.set_num_threads(1)
    queries = releasable(device.queries)
    source: LabelSource = "explicit-first"
    times: dict[str, list[float]] = {"wall": [], "cpu": [], "feat_wall": [], "feat_cpu": []}
    for i in range(repeats + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        features.featurize_for_scoring(queries, device.calibration)
        t1, c1 = time.perf_counter(), time.process_time()
        randomized_response(
            preference_bits(queries, device.calibration, state, source), MODEL_EPSILON
        )
        t2, c2 = time.perf_counter(), time.process_time()
        if i:
            times["feat_wall"].append(t1 - t0)
            times["feat_cpu"].append(c1 - c0)
            times["wall"].append(t2 - t1)
            times["cpu"].append(c2 - c1)
    n = len(queries)
    per_label = {f"{k}_ms_per_label": 1000 * statistics.median(v) / n for k, v in times.items()}
    return {
        "device": device.device_id,
        "labels": n,
        "repeats": repeats,
        **per_label,
        "cpu_ms_per_device": 1000 * statistics.median(times["cpu"]),
        "load_average_1min": os.getloadavg()[0],
    }


def _child_run(code: str) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of ``python -c code`` in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def import_cost(repeats: int = 5) -> dict[str, Any]:
    """One-off cost of a fresh process that can release labels: wall and CPU seconds of
    ``python -c 'import torch, fedgaze.labels.release'``, of ``import torch`` alone and of a
    bare interpreter (medians of ``repeats``; warm disk cache), and ``-X importtime``'s
    cumulative seconds of the heaviest packages loaded."""
    heavy: dict[str, float] = {}
    cmd = [sys.executable, "-X", "importtime", "-c", "import fedgaze.labels.release"]
    for line in subprocess.run(cmd, check=True, capture_output=True, text=True).stderr.split("\n"):
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] in ("torch", "opacus", "dp_accounting", "polars"):
            heavy[parts[2]] = max(heavy.get(parts[2], 0.0), int(parts[1]) / 1e6)
    out: dict[str, Any] = {"repeats": repeats}
    release = "import torch, fedgaze.labels.release"
    for name, code in (("bare", "pass"), ("torch", "import torch"), ("release", release)):
        runs = [_child_run(code) for _ in range(repeats)]
        out[f"{name}_wall_s"] = statistics.median(w for w, _ in runs)
        out[f"{name}_cpu_s"] = statistics.median(c for _, c in runs)
    out["importtime_cumulative_s"] = heavy
    out["load_average_1min"] = os.getloadavg()[0]
    return out


# ---- output ---------------------------------------------------------------------------------


def reading(summary: Mapping[str, Mapping[str, Any]], diagnostics: Mapping[str, float]) -> str:
    """A short reading of the numbers, worded from the numbers only."""

    def acc(protocol: str, share: float, labeller: str, eps: float | None = None) -> float:
        return float(summary[cell_key(protocol, share, labeller, eps)]["accuracy_mean"])

    def n_eff(share: float, eps: float | None) -> str:
        return f"{summary[cell_key('grouped', share, DP_MODEL, eps)]['n_eff']:.0f}"

    g, c = PROTOCOLS
    cells = [(p, s, e) for p in PROTOCOLS for s in SHARES[:-1] for e in EPSILONS]
    above = sum(acc(p, s, DP_MODEL, e) > acc(p, s, LONGER, e) for p, s, e in cells)
    gap = max(
        abs(v["accuracy_mean"] - v["expected_from_no_noise"])
        for v in summary.values()
        if "expected_from_no_noise" in v
    )
    return (
        "Without explicit choices or noise, the labels agree with the person's choice "
        f"{acc(g, 0, DP_MODEL):.3f} (DP-trained model) / {acc(g, 0, NP_MODEL):.3f} (non-private) "
        f"/ {acc(g, 0, LONGER):.3f} (longer answer) of the time for unseen people and "
        f"{acc(c, 0, DP_MODEL):.3f} / {acc(c, 0, NP_MODEL):.3f} / {acc(c, 0, LONGER):.3f} on "
        f"later comparisons. The DP-trained model's labels are more accurate than the "
        f"longer-answer rule's in {above} of the {len(cells)} cells below 100% explicit (both "
        "protocols, every epsilon), and its bits equal the length rule's on "
        f"{diagnostics[f'{g}|{DP_MODEL}|agrees with longer']:.0%} (grouped) and "
        f"{diagnostics[f'{c}|{DP_MODEL}|agrees with longer']:.0%} (chronological) of the "
        f"comparisons. Of the {summary[cell_key(g, 0, DP_MODEL, None)]['n']} grouped "
        f"comparisons, the DP-model labels at epsilon_label 1 are worth "
        f"{' / '.join(n_eff(s, 1.0) for s in SHARES)} correct labels with 0 / 10 / 30 / 100% "
        f"explicit choices ({' / '.join(n_eff(s, None) for s in SHARES)} without noise). "
        f"epsilon_label 8 flips {flip_rate(8.0):.2%} of the bits and 1 flips "
        f"{flip_rate(1.0):.0%}; every noised cell's mean is within {gap:.3f} of what its "
        "no-noise accuracy predicts (`expected_accuracy`; one noise draw per seed)."
    )


def render(result: Mapping[str, Any], command: str) -> str:
    """The markdown section for docs/results.md."""
    cfg, cost, imp = result["config"], result["label_cost"], result["import_cost"]
    lines = [
        f"Produced by `{command}` ({cfg['devices']} devices with labelled comparisons, "
        f"{cfg['comparisons']} comparisons; seeds {cfg['seeds']}; wall {cfg['wall_s']:.0f} s on "
        f"{cfg['cpus']} CPUs). Cells: accuracy of the released labels against the person's true "
        "left/right choice, mean ± std over seeds, and in brackets " + N_EFF + ". A share of "
        "each labelled person's comparisons (drawn per seed, nested) keeps the explicit choice; "
        "the rest are labelled by the labeller (explicit-first; 0% is implicit-only). Behaviour "
        f"model: the shipped central recipe ({RECIPE['epochs']} epochs, lr {RECIPE['lr']}, "
        f"hidden {RECIPE['hidden']}; DP-SGD at epsilon {MODEL_EPSILON:g}, delta "
        f"{RECIPE['delta']:g}, as `fedgaze train --mode central --epsilon 8`), trained on the "
        "training side only; labels come from `fedgaze.labels.release.preference_bits` on each "
        "comparison's own traces. Longer answer: more characters wins, ties go right. "
        "Randomized response flips a bit with probability 1/(1+e^eps); every labeller and share "
        "of a seed sees the same flip draws.",
        "",
    ]
    for protocol in PROTOCOLS:
        n = result["summary"][cell_key(protocol, 0.0, DP_MODEL, None)]["n"]
        what = (
            f"{cfg['folds']}-fold by worker, labels for unseen people"
            if protocol == "grouped"
            else f"model on each device's earlier {1 - cfg['holdout']:.0%}, labels for the "
            f"later {cfg['holdout']:.0%}"
        )
        lines += [f"**{protocol}** ({what}; n = {n} comparisons per seed)", ""]
        lines += render_table(result["summary"], protocol)
        lines.append("")
    lines += [
        f"CPU cost on a device (device {cost['device']}, {cost['labels']} releasable "
        f"comparisons, one thread, median of {cost['repeats']} after a warm-up): "
        f"{cost['cpu_ms_per_label']:.2f} ms CPU ({cost['wall_ms_per_label']:.2f} ms wall) per "
        "released label for featurize + predict + randomized response "
        "(`preference_bits` + `randomized_response`), of which featurizing alone is "
        f"{cost['feat_cpu_ms_per_label']:.2f} ms CPU; {cost['cpu_ms_per_device']:.0f} ms CPU for "
        "the whole device. One-off, per process: a fresh `python -c 'import torch, "
        f"fedgaze.labels.release'` takes {imp['release_cpu_s']:.2f} s CPU "
        f"({imp['release_wall_s']:.2f} s wall), against {imp['torch_cpu_s']:.2f} s CPU for "
        f"`import torch` alone and {imp['bare_cpu_s']:.2f} s for a bare interpreter (median "
        f"of {imp['repeats']}); `-X importtime` puts "
        + ", ".join(f"{k} at {v:.2f} s" for k, v in imp["importtime_cumulative_s"].items())
        + " (cumulative; opacus comes in through `fedgaze.privacy.accounting`). The machine "
        f"was shared with other work (1-minute load average {cost['load_average_1min']:.1f} and "
        f"{imp['load_average_1min']:.1f} on 2 cores at the two measurements), so wall times "
        "are upper bounds; CPU times are the better guide.",
        "",
        "Reading: " + result["reading"],
    ]
    return "\n".join(lines)


def main() -> None:
    """Load once, run every split (2 processes), score, time a device, write docs and JSON."""
    global _COHORT
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/ifllm")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 folds, no files")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.folds = 1, 2
    else:
        args.out = args.out or ROOT / "docs" / "results.md"
        args.json = args.json or ROOT / "bench/results/alignment_labels.json"
    t0 = time.monotonic()
    _COHORT = cohort = load_cohort(args.data)
    print(f"{len(cohort.devices)} devices, {len(cohort.y)} comparisons", flush=True)
    seeds = list(range(args.seeds))
    tasks = [
        Task(p, s, f, args.folds)
        for p in PROTOCOLS
        for s in seeds
        for f in range(args.folds if p == "grouped" else 1)
    ]
    results = []
    import torch  # each worker trains on one thread

    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(args.jobs, ctx, torch.set_num_threads, (1,)) as ex:
        for i, r in enumerate(ex.map(run_task, tasks), 1):
            results.append(r)
            print(f"[{i}/{len(tasks)}] {r['task']} {r['cpu_s']:.0f} s CPU", flush=True)
    summary, diagnostics = score(cohort, results)
    state = next(r["dp_state"] for r in results if r["task"]["protocol"] == "chronological")
    from fedgaze.labels.release import releasable

    device = max(cohort.devices, key=lambda d: len(releasable(d.queries)))
    cost = label_cost(device, state, repeats=3 if args.quick else 7)
    imp = import_cost()
    result: dict[str, Any] = {
        "config": {
            "devices": len(cohort.devices),
            "comparisons": len(cohort.y),
            "seeds": seeds,
            "folds": args.folds,
            "holdout": _rb().HOLDOUT,
            "shares": list(SHARES),
            "epsilons": ["none" if e is None else e for e in EPSILONS],
            "recipe": RECIPE,
            "model_epsilon": MODEL_EPSILON,
            "cpus": args.jobs,
            "wall_s": round(time.monotonic() - t0, 1),
            "n_eff": N_EFF,
        },
        "summary": summary,
        "diagnostics": diagnostics,
        "label_cost": cost,
        "import_cost": imp,
        "splits": [{"task": r["task"], **r["info"], "cpu_s": r["cpu_s"]} for r in results],
    }
    result["reading"] = reading(summary, diagnostics)
    publish(
        render(result, command_line("bench/alignment_labels.py", args.quick, args.seeds)),
        result,
        markdown=args.out,
        json_path=args.json,
        marker=MARKER,
        heading=HEADING,
    )


if __name__ == "__main__":
    main()
