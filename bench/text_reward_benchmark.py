"""Does implicit feedback make a better text reward model when explicit labels are scarce?

The text reward model on frozen WordLlama features, trained on each split's training side with a
share (10%, 30%, 100%) of explicit choices, and in "+ implicit rest" rows the behaviour model's
soft P(right) for the rest (trained on the labelled comparisons only; DP at epsilon 8 for the
federated column), against the longer-answer rule; central non-private and federated at device
epsilon 8; the reward benchmark's protocols. Also: scoring throughput and peak RSS.

    python bench/text_reward_benchmark.py [--data DIR] [--seeds 3] [--quick]

Writes the section between this script's markers in docs/results.md and
bench/results/text_reward_benchmark.json (``--quick``: 1 seed, 2 folds, 5 rounds; writes neither
unless ``--out``/``--json`` name where). docs/results.md says the rest.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import alignment_labels as al
from _results import command_line, publish
from fedgaze import defaults
from fedgaze.text.encoder import load_encoder
from fedgaze.text.features import answer_features, comparison_features

ROOT = Path(__file__).resolve().parents[1]
MARKER = "text-reward"
HEADING = "## Text reward model (bench/text_reward_benchmark.py)"
PROTOCOLS = al.PROTOCOLS
LONGER = "longer answer (more characters wins)"
ROWS: tuple[tuple[str, float | None, bool], ...] = ((LONGER, None, False),)
for _share in (0.1, 0.3):
    ROWS += ((f"explicit {_share:.0%}", _share, False),)
    ROWS += ((f"explicit {_share:.0%} + implicit rest", _share, True),)
ROWS += (("explicit 100%", 1.0, False),)
"""(name, explicit share, implicit labels for the rest); the baseline has no share."""
CENTRAL = "central, non-private"
FEDERATED = "federated, device DP eps 8"
COLUMNS = (CENTRAL, FEDERATED)
DEVICE_EPSILON = 8.0
BEHAVIOUR_EPSILON = al.MODEL_EPSILON
FED: dict[str, Any] = {"rounds": 20, "local_epochs": defaults.LOCAL_EPOCHS, "lr": defaults.LR}
FED |= {"batch_size": defaults.BATCH_SIZE, "max_grad_norm": defaults.MAX_GRAD_NORM}
FED |= {"delta": defaults.DELTA}
GRID: tuple[dict[str, Any], ...] = tuple(
    {"hidden": h, "epochs": e, "lr": lr}
    for h in (0, defaults.HIDDEN)
    for e in (5, defaults.CENTRAL_EPOCHS, 30)
    for lr in (defaults.CENTRAL_LR, 0.003)
)
"""Candidate central recipes of the text model (the shipped one is among them)."""
INNER_FOLDS = 4
SCORE_LINES = 10_000
SCORE_BATCH = 256


# ---- pure parts ------------------------------------------------------------------------------


class CachedEncoder:
    """An encoder that embeds each distinct text once per process and answers from a cache."""

    def __init__(self, encoder: Any) -> None:
        self._encoder = encoder
        self.name, self.version, self.dim = encoder.name, encoder.version, encoder.dim
        self._cache: dict[str, np.ndarray] = {}
        self.encoded = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Rows of the cached embeddings; texts not seen before are encoded in one call."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            self._cache.update(zip(missing, self._encoder.encode(missing), strict=True))
            self.encoded += len(missing)
        rows = [self._cache[t] for t in texts]
        return np.stack(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)


def labelled_mask(draws: np.ndarray, share: float) -> np.ndarray:
    """The ``round(share * n)`` comparisons (at least one when ``share > 0``) with the smallest
    ``draws``: exact in size and nested (every comparison labelled at 10% is at 30%)."""
    n = len(draws)
    k = n if share >= 1 else min(n, max(1 if share > 0 else 0, round(share * n)))
    mask = np.zeros(n, dtype=bool)
    mask[np.argsort(draws, kind="stable")[:k]] = True
    return mask


def training_targets(
    y: np.ndarray, labelled: np.ndarray, p_implicit: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """(rows trained on, float32 targets): the labelled rows with their explicit 0/1, or with
    ``p_implicit`` every row, the explicit choice where labelled and P(right) elsewhere."""
    if p_implicit is None:
        rows = np.flatnonzero(labelled)
        return rows, np.asarray(y, dtype=np.float32)[rows]
    targets = np.where(labelled, np.asarray(y, np.float64), np.asarray(p_implicit, np.float64))
    return np.arange(len(y)), targets.astype(np.float32)


def longer_answer_logits(lengths: np.ndarray) -> np.ndarray:
    """Score of "right preferred" by length: right minus left characters, + 0.5 so that a tie
    goes right (as ``alignment_labels.longer_answer_bits``); ``lengths`` is (n, 2)."""
    lengths = np.asarray(lengths, dtype=np.float64).reshape(-1, 2)
    return lengths[:, 1] - lengths[:, 0] + 0.5


def metrics(y: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """Accuracy (logit > 0 predicts right), ROC-AUC and n."""
    from fedgaze.model.evaluation import roc_auc  # torch: the pure parts load without it

    y = np.asarray(y)
    acc = float(np.mean((np.asarray(logits) > 0) == (y == 1)))
    return {"accuracy": acc, "auc": roc_auc(y, logits), "n": len(y)}


def summarize(per_seed: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """Mean and population std over seeds of accuracy and AUC, with n and the per-seed values."""
    out: dict[str, Any] = {"n": int(per_seed[0]["n"])}
    for what in ("accuracy", "auc"):
        values = [float(m[what]) for m in per_seed]
        out |= {f"{what}_mean": statistics.mean(values), f"{what}_std": statistics.pstdev(values)}
    out["per_seed"] = [{k: float(m[k]) for k in ("accuracy", "auc")} for m in per_seed]
    return out


def cell_key(protocol: str, row: str, column: str) -> str:
    """The summary key of one cell."""
    return f"{protocol}|{row}|{column}"


def format_pair(cell: Mapping[str, Any] | None) -> str:
    """``acc ± std | auc ± std`` of a cell, or dashes when it is missing."""
    if not cell:
        return "- | -"
    return " | ".join(
        f"{cell[f'{w}_mean']:.3f} ± {cell[f'{w}_std']:.3f}" for w in ("accuracy", "auc")
    )


def render_table(summary: Mapping[str, Mapping[str, Any]], protocol: str) -> list[str]:
    """One protocol's table: a row per training-label setting, accuracy and AUC per column."""
    head = " | ".join(f"{c}: accuracy | {c}: AUC" for c in COLUMNS)
    lines = [f"| training labels | {head} |", "|---|" + "---|" * (2 * len(COLUMNS))]
    for name, _, _ in ROWS:
        cells = [format_pair(summary.get(cell_key(protocol, name, c))) for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def pick_recipe(
    results: Sequence[Mapping[str, Any]],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per ``GRID`` candidate the mean over outer folds of its pooled inner accuracy and AUC, and
    the recipe with the highest mean AUC (then accuracy, then the earlier candidate)."""
    scores = []
    for c, recipe in enumerate(GRID):
        mine = [r for r in results if r["task"]["candidate"] == c]
        scores.append({"recipe": recipe, "outer_folds": len(mine)})
        scores[-1] |= {
            f"{w}_mean": statistics.mean(r[w] for r in mine) for w in ("accuracy", "auc")
        }
    best = max(
        range(len(GRID)), key=lambda c: (scores[c]["auc_mean"], scores[c]["accuracy_mean"], -c)
    )
    return dict(GRID[best]), scores


# ---- one cell of work -----------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One split of one protocol and seed, one row (labels) and one column (training)."""

    protocol: str
    seed: int
    fold: int
    share: float
    implicit: bool
    column: str
    recipe: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class SelectTask:
    """One candidate recipe on the inner folds of one outer training fold (seed 0, grouped)."""

    fold: int
    candidate: int


_COHORT: al.Cohort | None = None
_TEXT_X: np.ndarray | None = None
_RUN: dict[str, int] = {"folds": 5, "inner_folds": INNER_FOLDS, "rounds": FED["rounds"]}


def _train_text(X: np.ndarray, y: np.ndarray, recipe: Mapping[str, Any], seed: int) -> Any:
    from fedgaze.privacy.dp_train import train_central

    kw = {k: recipe[k] for k in ("epochs", "lr", "hidden")}
    return train_central(X, y, seed=seed, kind="text", soft_labels=True, **kw)[0]


def _logits(state: Mapping[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    from fedgaze.model.reward import model_from_state, predict_logits

    return predict_logits(model_from_state(state), X)


def implicit_targets(cohort: al.Cohort, rows: np.ndarray, state: Any) -> np.ndarray:
    """P(right) of each comparison in ``rows`` from its own traces, device by device."""
    from fedgaze.labels.release import implicit_p_right

    out = np.zeros(len(rows))
    for dev in np.unique(cohort.owner[rows]):
        at = np.flatnonzero(cohort.owner[rows] == dev)
        queries = [cohort.queries[i] for i in rows[at]]
        out[at] = implicit_p_right(queries, cohort.devices[dev].calibration, state)
    return out


def _federate(
    cohort: al.Cohort, X: np.ndarray, rows: np.ndarray, y: np.ndarray, task: Task
) -> tuple[Any, dict[str, Any]]:
    from fedgaze.local.simulation import DeviceRows, SimulationPlan, simulate_federation

    owners = cohort.owner[rows]
    devices = [
        DeviceRows(cohort.devices[d].device_id, X[rows[owners == d]], y[owners == d])
        for d in np.unique(owners)
    ]
    kw = FED | {"rounds": _RUN["rounds"], "hidden": dict(task.recipe)["hidden"], "seed": task.seed}
    kw |= {"device_epsilon": DEVICE_EPSILON, "kind": "text", "soft_labels": True}
    result = simulate_federation(devices, SimulationPlan(mode="device_dp", **kw))
    info = {"devices": len(devices), "noise_multiplier": result.noise_multiplier}
    eps = max(result.device_epsilons.values())
    return result.state, info | {"max_device_epsilon": eps, "declined": result.declined}


def run_task(task: Task) -> dict[str, Any]:
    """Label the split's training side, train the text model, score its test side."""
    assert _COHORT is not None and _TEXT_X is not None
    cohort, X = _COHORT, _TEXT_X
    t0 = time.process_time()
    train, test = al.split_indices(cohort, task.protocol, task.seed, _RUN["folds"])[task.fold]
    draws = al.explicit_draws(len(cohort.y), task.seed, task.protocol)[train]
    labelled = labelled_mask(draws, task.share)
    info: dict[str, Any] = {"train_n": len(train), "labelled_n": int(labelled.sum())}
    p = None
    if task.implicit:
        eps = BEHAVIOUR_EPSILON if task.column == FEDERATED else None
        lab = train[labelled]
        behaviour, spent = al.train_model(cohort.X[lab], cohort.y[lab], task.seed, eps)
        p = implicit_targets(cohort, train, behaviour)
        rest, info["behaviour_epsilon"] = ~labelled, spent
        info["implicit_label_accuracy"] = float(np.mean((p[rest] >= 0.5) == cohort.y[train][rest]))
    rows, targets = training_targets(cohort.y[train], labelled, p)
    if task.column == CENTRAL:
        state = _train_text(X[train[rows]], targets, dict(task.recipe), task.seed)
    else:
        state, fed_info = _federate(cohort, X, train[rows], targets, task)
        info.update(fed_info)
    out = {"task": asdict(task), "test": test, "logits": _logits(state, X[test]), "info": info}
    return out | {"cpu_s": time.process_time() - t0}


def run_select(task: SelectTask) -> dict[str, Any]:
    """Inner grouped CV of one candidate inside one outer training fold: pooled metrics."""
    assert _COHORT is not None and _TEXT_X is not None
    cohort, X = _COHORT, _TEXT_X
    train, _ = al.split_indices(cohort, "grouped", 0, _RUN["folds"])[task.fold]
    inner_devices = [cohort.index_rows[d] for d in np.unique(cohort.owner[train])]
    recipe = GRID[task.candidate]
    ys, logits = [], []
    for split in al._rb().grouped_splits(inner_devices, _RUN["inner_folds"], 0):
        tr = np.concatenate([d.X for d in split.train]).astype(np.intp)
        va = split.test_X.astype(np.intp)
        state = _train_text(X[tr], cohort.y[tr].astype(np.float32), recipe, 0)
        ys.append(cohort.y[va])
        logits.append(_logits(state, X[va]))
    return {"task": asdict(task), **metrics(np.concatenate(ys), np.concatenate(logits))}


def score_results(
    cohort: al.Cohort, results: Sequence[dict[str, Any]], seeds: Sequence[int], folds: int
) -> dict[str, Any]:
    """Per-seed metrics pooled over a seed's splits, then mean/std per cell; plus the baseline."""
    per: dict[str, list[dict[str, float]]] = {}
    groups: dict[tuple[str, int, str, str], list[dict[str, Any]]] = {}
    names = {(share, imp): name for name, share, imp in ROWS}
    for r in results:
        t = r["task"]
        key = (t["protocol"], t["seed"], names[(t["share"], t["implicit"])], t["column"])
        groups.setdefault(key, []).append(r)
    for (protocol, _, row, column), parts in sorted(groups.items()):
        parts.sort(key=lambda r: r["task"]["fold"])
        test = np.concatenate([r["test"] for r in parts])
        m = metrics(cohort.y[test], np.concatenate([r["logits"] for r in parts]))
        per.setdefault(cell_key(protocol, row, column), []).append(m)
    for protocol in PROTOCOLS:
        for seed in seeds:
            test = np.concatenate([t for _, t in al.split_indices(cohort, protocol, seed, folds)])
            m = metrics(cohort.y[test], longer_answer_logits(cohort.lengths[test]))
            for column in COLUMNS:
                per.setdefault(cell_key(protocol, LONGER, column), []).append(m)
    return {k: summarize(v) for k, v in per.items()}


# ---- cost of scoring ------------------------------------------------------------------------


LAUNCHER = r"""
import os, subprocess, sys
if sys.argv[1] == "pin":  # before the child starts: every thread it makes inherits one CPU
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
_, status, usage = os.wait4(subprocess.Popen(sys.argv[2:]).pid, 0)
cpu = usage.ru_utime + usage.ru_stime
print(f"MEASURED {usage.ru_maxrss} {cpu} {os.waitstatus_to_exitcode(status)}", file=sys.stderr)
"""


def measured(cmd: Sequence[str], pin: bool = False) -> dict[str, Any]:
    """Stdout, wall and CPU s and peak RSS (MiB, by ``wait4``) of ``cmd`` run by a small launcher
    (Linux counts a forked child's pre-exec memory in its peak RSS); ``pin``: on one CPU."""
    threads = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    env = {**os.environ, **dict.fromkeys(threads, "1"), "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    launch = [sys.executable, "-c", LAUNCHER, "pin" if pin else "-"]
    done = subprocess.run([*launch, *cmd], capture_output=True, env=env)
    wall = time.perf_counter() - t0
    err = done.stderr.decode(errors="replace")
    last = (err.strip().splitlines() or [""])[-1].split()
    if done.returncode or last[:1] != ["MEASURED"] or last[3] != "0":
        raise RuntimeError(f"{list(cmd[:4])} failed: {err[-2000:]}")
    out = {"wall_s": wall, "cpu_s": float(last[2]), "rss_mib": int(last[1]) / 1024}
    return out | {"stdout": done.stdout.decode()}


def throughput(
    encoder: Any, state: Mapping[str, np.ndarray], lines: Sequence[Mapping[str, str]], batch: int
) -> dict[str, float]:
    """Responses per CPU and wall second of ``answer_features`` + ``TextRewardModel.reward`` in
    batches, one torch thread, after a warm-up batch (run pinned: ``--throughput-child``)."""
    import torch

    from fedgaze.model.reward import TextRewardModel, model_from_state

    model = model_from_state(state).eval()
    assert isinstance(model, TextRewardModel)

    def score(chunk: Sequence[Mapping[str, str]]) -> np.ndarray:
        x = answer_features(encoder, [r["prompt"] for r in chunk], [r["response"] for r in chunk])
        with torch.no_grad():
            return model.reward(torch.from_numpy(x)).numpy()

    torch.set_num_threads(1)
    score(lines[:batch])
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, len(lines), batch):
        score(lines[i : i + batch])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"responses_per_s_cpu": len(lines) / cpu, "responses_per_s_wall": len(lines) / wall}


def scoring_cost(cohort: al.Cohort, X: np.ndarray, recipe: Mapping[str, Any]) -> dict[str, Any]:
    """Throughput on one core and peak RSS of ``fedgaze reward score`` on ``SCORE_LINES`` real
    lines, for the picked recipe trained on every comparison (weights do not change the cost)."""
    from fedgaze.text.model_dir import encoder_info, save_text_model

    state = _train_text(X, cohort.y.astype(np.float32), recipe, 0)
    answers = [(q.prompt, r) for q in cohort.queries for r in (q.response_left, q.response_right)]
    pairs = [{"prompt": prompt, "response": r or ""} for prompt, r in answers]
    lines = [pairs[i % len(pairs)] for i in range(SCORE_LINES)]  # no answer twice in a batch
    encoder = load_encoder(defaults.TEXT_ENCODER)
    out: dict[str, Any] = {"lines": len(lines), "batch": SCORE_BATCH}
    out["mean_response_chars"] = statistics.mean(len(x["response"]) for x in lines)
    out["distinct_responses"] = len({x["response"] for x in lines})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        src, model, npz = folder / "lines.jsonl", folder / "model", folder / "state.npz"
        src.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
        np.savez(npz, **state)
        child = [sys.executable, __file__, "--throughput-child", str(npz), str(src)]
        out |= json.loads(measured(child, pin=True)["stdout"].strip().splitlines()[-1])
        info = encoder_info(encoder, defaults.TEXT_ENCODER)
        note = {"kind": "central", "note": "bench/text_reward_benchmark.py timing model"}
        save_text_model(model, state, encoder=info, hidden=recipe["hidden"], provenance=note)
        cli = [str(Path(sys.executable).with_name("fedgaze")), "reward", "score"]
        try:
            run = measured([*cli, "--model", str(model), "--in", str(src), "--out", f"{src}.out"])
            out["cli"] = {k: run[k] for k in ("wall_s", "cpu_s", "rss_mib")}
            out["cli"]["lines_out"] = len(Path(f"{src}.out").read_text().splitlines())
        except (RuntimeError, OSError) as err:
            out["cli"] = {"error": str(err)[-500:]}
        out["import_only_rss_mib"] = measured(
            [sys.executable, "-c", "import torch, fedgaze.text.reward_model"]
        )["rss_mib"]
    out["load_average_1min"] = os.getloadavg()[0]
    return out


# ---- output ---------------------------------------------------------------------------------


def reading(
    summary: Mapping[str, Mapping[str, Any]], agree: Mapping[str, float]
) -> tuple[str, str]:
    """The verdict and a reading from the numbers only (``agree``: implicit label accuracy)."""

    def m(p: str, row: str, col: str, what: str = "accuracy") -> float:
        return float(summary[cell_key(p, row, col)][f"{what}_mean"])

    def gaps(p: str, row: str, col: str, base: str = LONGER) -> tuple[float, float]:
        acc, auc = (100 * (m(p, row, col, w) - m(p, base, col, w)) for w in ("accuracy", "auc"))
        return acc, auc

    def gap(p: str, row: str, col: str) -> str:
        return "{:+.1f} / {:+.1f}".format(*gaps(p, row, col))

    g = "grouped"
    word = {c: "met" if min(gaps(g, "explicit 100%", c)) >= 3 else "not met" for c in COLUMNS}
    verdict = (
        "Target (grouped, 100% labels: the text model at least 3 points above the longer answer "
        f"in accuracy and AUC): {word[CENTRAL]} centrally (accuracy / AUC "
        f"{gap(g, 'explicit 100%', CENTRAL)} points), {word[FEDERATED]} federated at eps 8 "
        f"({gap(g, 'explicit 100%', FEDERATED)}). Central, explicit labels only: "
        f"{gap(g, 'explicit 10%', CENTRAL)} at 10%, {gap(g, 'explicit 30%', CENTRAL)} at 30%; "
        f"with the implicit rest: {gap(g, 'explicit 10% + implicit rest', CENTRAL)} at 10%, "
        f"{gap(g, 'explicit 30% + implicit rest', CENTRAL)} at 30%."
    )
    cells = [(p, s, c) for p in PROTOCOLS for s in ("10%", "30%") for c in COLUMNS]
    diffs = [gaps(p, f"explicit {s} + implicit rest", c, f"explicit {s}") for p, s, c in cells]
    text = (
        "Adding implicit labels for the unlabelled rest raised both mean accuracy and mean AUC "
        f"in {sum(min(d) > 0 for d in diffs)} of the {len(cells)} (protocol, share, column) "
        f"cells and lowered both in {sum(max(d) < 0 for d in diffs)}; accuracy changed by "
        f"{min(a for a, _ in diffs):+.1f} to {max(a for a, _ in diffs):+.1f} points, AUC by "
        f"{min(u for _, u in diffs):+.1f} to {max(u for _, u in diffs):+.1f}. The implicit "
        "labels (P(right) >= 0.5) matched the withheld explicit choice on "
        f"{agree[CENTRAL]:.3f} (non-private behaviour model) and {agree[FEDERATED]:.3f} (DP) of "
        "the unlabelled training comparisons (mean over every split, share and seed)."
    )
    return verdict, text


def render(result: Mapping[str, Any], command: str) -> str:
    """The markdown section for docs/results.md."""
    cfg, cost, r = result["config"], result["scoring_cost"], result["selection"]["picked"]
    fed = cfg["federated"]
    lines = [
        f"Produced by `{command}` ({cfg['devices']} devices, {cfg['comparisons']} comparisons "
        f"with a left/right choice; seeds {cfg['seeds']}; wall {cfg['wall_s']:.0f} s on "
        f"{cfg['cpus']} CPUs). Cells: accuracy and ROC-AUC of the text reward model on the test "
        "side's explicit choices, pooled over a seed's splits, mean ± std over seeds. A share of "
        "the training comparisons (drawn per seed, nested) keeps its explicit choice; '+ "
        "implicit rest' gives every other training comparison the soft target P(right) of the "
        "behaviour model on its own traces (`implicit_p_right`), trained with the shipped "
        "central recipe on the labelled training comparisons only (non-private for the central "
        f"column, DP-SGD at epsilon {BEHAVIOUR_EPSILON:g} for the federated one). Text model: "
        f"WordLlama 256-d features, hidden {r['hidden']}, central Adam {r['epochs']} epochs lr "
        f"{r['lr']} batch 32, picked among {len(GRID)} recipes by grouped "
        f"{cfg['inner_folds']}-fold inner CV (100% labels, mean inner AUC) inside seed 0's "
        f"{cfg['folds']} outer grouped training folds (no outer test fold was scored, but every "
        f"comparison was inner data once: a mild selection effect). Federated: {fed['rounds']} "
        f"rounds, device DP-SGD defaults (SGD lr {fed['lr']}, batch {fed['batch_size']}, clip "
        f"{fed['max_grad_norm']}, 1 local epoch), noise calibrated so every device stays within "
        f"epsilon {fed['device_epsilon']:g} (delta {fed['delta']:g}); explicit-only rows "
        "federate the labelled comparisons only.",
        "",
    ]
    h, what = cfg["holdout"], {"grouped": f"{cfg['folds']}-fold by worker, test people unseen"}
    what["chronological"] = f"each device's earlier {1 - h:.0%} train, later {h:.0%} test"
    for p in PROTOCOLS:
        n = result["summary"][cell_key(p, LONGER, CENTRAL)]["n"]
        lines += [f"**{p}** ({what[p]}; n = {n} test comparisons per seed)", ""]
        lines += [*render_table(result["summary"], p), ""]
    cli = cost["cli"]
    memory = (
        f"peak RSS of `fedgaze reward score` on {cost['lines']} lines: {cli['rss_mib']:.0f} MiB "
        f"({cli['cpu_s']:.1f} s CPU, {cli['wall_s']:.1f} s wall, start-up included)"
        if "rss_mib" in cli
        else f"`fedgaze reward score` did not run ({cli['error']})"
    )
    lines += [
        f"Scoring cost: {cost['responses_per_s_cpu']:.0f} responses per CPU second "
        f"({cost['responses_per_s_wall']:.0f} per wall second) in a process pinned to one core "
        "(one torch thread), encoder + "
        f"head in batches of {cost['batch']} over {cost['lines']} real IFLLM (prompt, answer) "
        f"lines (mean {cost['mean_response_chars']:.0f} characters, "
        f"{cost['distinct_responses']} distinct answers, none twice in a batch); {memory}; a "
        f"process that only imports torch and `fedgaze.text.reward_model` peaks at "
        f"{cost['import_only_rss_mib']:.0f} MiB. 1-minute load average "
        f"{cost['load_average_1min']:.1f} on 2 cores (shared machine: wall times are upper "
        "bounds).",
        "",
        result["verdict"],
        "",
        "Reading: " + result["reading"],
    ]
    return "\n".join(lines)


def main() -> None:
    """Load and embed once, pick the recipe, run every cell (2 processes), write docs and JSON."""
    global _COHORT, _TEXT_X
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    opts: list[tuple[str, Any, Any]] = [("data", Path, ROOT.parent / "shared/datasets/ifllm")]
    opts += [("seeds", int, 3), ("folds", int, 5), ("jobs", int, 2)]
    for flag, kind, default in [*opts, ("out", Path, None), ("json", Path, None)]:
        parser.add_argument(f"--{flag}", type=kind, default=default)
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 folds, 5 rounds")
    parser.add_argument("--throughput-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.throughput_child:  # STATE.npz LINES.jsonl: see ``scoring_cost``
        with np.load(args.throughput_child[0]) as z:
            state = {k: z[k] for k in z.files}
        lines = [json.loads(x) for x in Path(args.throughput_child[1]).read_text().splitlines()]
        encoder = load_encoder(defaults.TEXT_ENCODER)
        print(json.dumps(throughput(encoder, state, lines, SCORE_BATCH)))
        return
    if args.quick:
        args.seeds, args.folds, _RUN["rounds"], _RUN["inner_folds"] = 1, 2, 5, 2
    else:
        args.out = args.out or ROOT / "docs" / "results.md"
        args.json = args.json or ROOT / "bench/results/text_reward_benchmark.json"
    t0 = time.monotonic()
    _COHORT = cohort = al.load_cohort(args.data)
    import torch

    encoder = CachedEncoder(load_encoder(defaults.TEXT_ENCODER))
    rows = [(q.prompt, q.response_left, q.response_right or "") for q in cohort.queries]
    texts = zip(*rows, strict=True)
    _TEXT_X = X = comparison_features(encoder, *texts)
    print(f"{len(cohort.y)} comparisons, {encoder.encoded} distinct texts embedded", flush=True)
    _RUN["folds"], seeds = args.folds, list(range(args.seeds))
    select = [SelectTask(f, c) for f in range(args.folds) for c in range(len(GRID))]
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(args.jobs, ctx, torch.set_num_threads, (1,)) as ex:
        recipe, scores = pick_recipe(list(ex.map(run_select, select)))
        print(f"picked {recipe}", flush=True)
        tasks = [
            Task(p, s, f, share, imp, col, tuple(recipe.items()))
            for col in (FEDERATED, CENTRAL)  # the long ones first
            for p in PROTOCOLS
            for s in seeds
            for f in range(args.folds if p == "grouped" else 1)
            for _, share, imp in ROWS
            if share is not None
        ]
        results = []
        for i, r in enumerate(ex.map(run_task, tasks), 1):
            results.append(r)
            print(f"[{i}/{len(tasks)}] {r['task']} {r['cpu_s']:.0f} s CPU", flush=True)
    summary = score_results(cohort, results, seeds, args.folds)
    cost = scoring_cost(cohort, X, recipe)
    config = {"devices": len(cohort.devices), "comparisons": len(cohort.y), "seeds": seeds}
    config |= {"folds": args.folds, "inner_folds": _RUN["inner_folds"], "holdout": al._rb().HOLDOUT}
    config |= {"federated": FED | {"rounds": _RUN["rounds"], "device_epsilon": DEVICE_EPSILON}}
    config |= {"behaviour_recipe": al.RECIPE, "behaviour_epsilon_fed": BEHAVIOUR_EPSILON}
    config |= {"cpus": args.jobs, "wall_s": round(time.monotonic() - t0, 1)}
    result: dict[str, Any] = {"config": config, "summary": summary, "scoring_cost": cost}
    result["selection"] = {"candidates": scores, "picked": recipe}
    result["cells"] = [{"task": r["task"], **r["info"], "cpu_s": r["cpu_s"]} for r in results]
    ok = [(r["task"]["column"], r["info"].get("implicit_label_accuracy")) for r in results]
    agree = {c: statistics.mean(a for k, a in ok if k == c and a is not None) for c in COLUMNS}
    result["verdict"], result["reading"] = reading(summary, agree)
    publish(
        render(result, command_line("bench/text_reward_benchmark.py", args.quick, args.seeds)),
        result,
        markdown=args.out,
        json_path=args.json,
        marker=MARKER,
        heading=HEADING,
    )


if __name__ == "__main__":
    main()
