"""Do behaviour features help a linear reward model on unseen people? The levers of issue 14.

Every model is a Bradley-Terry logistic regression without intercept on right-minus-left v2
features of a labelled comparison (the reward benchmark's cohort: `alignment_labels.load_cohort`),
each column scaled by its training-side RMS, with an L2 penalty. Recipes:

1. the longer-answer rule (more characters wins, ties go right; no fitting);
2. text only (the 9 text columns);
3. text + raw behaviour (every behaviour column whose right-minus-left difference varies);
4. text + behaviour z-scored per worker (mean and std of each column over both sides of all
   the worker's pairwise queries, labelled or not: the person's own traces, no labels, so it
   works on the device for someone with no labels yet);
5. text + behaviour as per-worker ranks (the within-worker percentile, same pool);
6. text + share/ratio behaviour only (between-answer shares and ratios, reading-window shares);
7. top-k screening: text + the k raw behaviour columns with the largest univariate training
   AUC distance from 0.5 (k picked in the inner CV; k = 0 is text only);
8. sign-constrained + z-scored: recipe 4 with each weight bounded to the sign of its column's
   univariate training AUC;
9. joint training with pointwise ratings: recipes 2 and 3 plus a least-squares loss tying the
   same per-answer reward to the 1-5 ratings of single-answer queries (features and ratings
   demeaned within worker; only training-side workers' ratings, weight picked in the inner CV).

Grouped by worker (`alignment_labels.split_indices`: 5 folds, seeds 0, 1, 2); the L2 value
and the recipe's own hyperparameters are picked by 4-fold grouped inner CV inside each outer
training side (pooled inner AUC, ties to the earlier candidate). Then, per worker with 8+
comparisons, whether key behaviour signals point the pooled direction (heterogeneity).

    python bench/behaviour_levers.py [--data DIR] [--out FILE] [--json FILE]

Writes the section between this script's markers in docs/results.md and
bench/results/behaviour_levers.json (``--out``/``--json`` name other places). Numpy and
scipy only; a few minutes on one core.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

sys.path.insert(0, str(Path(__file__).resolve().parent))

import alignment_labels as al
from _linear import fit_bt, gaps, inner_splits, jsonable, mean_std, metrics, pair, rule_logits
from _results import command_line, publish
from fedgaze.features import v2
from fedgaze.model.evaluation import roc_auc

ROOT = Path(__file__).resolve().parents[1]
MARKER = "behaviour-levers"
HEADING = "## Behaviour model on unseen people: levers (bench/behaviour_levers.py)"
SEEDS = (0, 1, 2)
FOLDS = 5
INNER_FOLDS = 4
INNER_SEED = 1000  # inner folds of outer seed s are dealt with seed INNER_SEED + s
LAMBDAS = (1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
TOP_K = (0, 2, 4, 8, 16, None)  # None: every behaviour column
POINTWISE_WEIGHTS = (0.0, 0.1, 0.3, 1.0, 3.0)
MIN_WORKER = 8
BOOTSTRAP = 200
TARGET = (0.64, 0.70)  # issue 14: grouped accuracy and AUC of text + implicit feedback
RULE = "longer answer (rule)"
TEXT = list(v2.columns(["text"]))
NAMES = list(v2.SIDE_FEATURE_NAMES)
SHARE_NAMES = {
    f"{m}_{k}"
    for m in ("gaze", "mouse")
    for k in ("time_ratio", "time_rel", "share", "count_rel", "completion_rel")
}
SHARE_NAMES |= {"cross_both_on_share", "cross_agree"} | {n for n in NAMES if "_window" in n}
SIGNALS = ("mouse_share", "cross_both_on_share", "gaze_time_ratio", "gaze_regressions_log1p")
REFERENCE = "text_words_log1p"

RECIPES: dict[str, dict[str, Any]] = {
    "text only": {"rep": "text", "grid": [{"lam": lam} for lam in LAMBDAS]},
    "text + raw behaviour": {"rep": "raw", "grid": [{"lam": lam} for lam in LAMBDAS]},
    "text + per-worker z-scored behaviour": {
        "rep": "z",
        "grid": [{"lam": lam} for lam in LAMBDAS],
    },
    "text + per-worker ranked behaviour": {
        "rep": "rank",
        "grid": [{"lam": lam} for lam in LAMBDAS],
    },
    "text + share/ratio behaviour": {"rep": "share", "grid": [{"lam": lam} for lam in LAMBDAS]},
    "text + top-k screened raw behaviour": {
        "rep": "raw",
        "grid": [{"lam": lam, "k": k} for lam in LAMBDAS for k in TOP_K],
    },
    "text + z-scored behaviour, sign-constrained": {
        "rep": "z",
        "grid": [{"lam": lam, "sign": True} for lam in LAMBDAS],
    },
    "text only, joint with pointwise ratings": {
        "rep": "text",
        "grid": [{"lam": lam, "pw": p} for lam in LAMBDAS for p in POINTWISE_WEIGHTS],
    },
    "text + raw behaviour, joint with pointwise ratings": {
        "rep": "raw",
        "grid": [{"lam": lam, "pw": p} for lam in LAMBDAS for p in POINTWISE_WEIGHTS],
    },
}
"""Recipe -> its representation (right-minus-left design) and hyperparameter grid."""
N_CANDIDATES = sum(len(r["grid"]) for r in RECIPES.values())


# ---- data -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Data:
    """Labels, owners, lengths, the designs of every representation, and pointwise ratings."""

    cohort: al.Cohort
    y: np.ndarray
    owner: np.ndarray
    reps: dict[str, np.ndarray]  # name -> (n, p) right-minus-left, text columns first
    columns: dict[str, list[str]]
    point_X: np.ndarray  # (m, p of "raw"): per-answer features, demeaned within worker
    point_t: np.ndarray  # (m,): ratings, demeaned within worker
    point_owner: np.ndarray
    n_pool: int


def per_worker(X: np.ndarray, owner: np.ndarray, pools: Sequence[np.ndarray], cols: list[int]):
    """``X`` (n, 2, F) with ``cols`` z-scored, and as within-worker percentiles (mid-rank / n),
    each worker against its own pool (both sides of all its pairwise queries)."""
    z, r = X.copy(), X.copy()
    for k, pool in enumerate(pools):
        ref = pool[:, :, cols].reshape(-1, len(cols))
        sd = ref.std(0)
        sd[sd < 1e-6] = 1.0
        rows = np.flatnonzero(owner == k)
        block = X[np.ix_(rows, [0, 1], cols)]
        z[np.ix_(rows, [0, 1], cols)] = (block - ref.mean(0)) / sd
        ref = np.sort(ref, axis=0)
        pct = np.empty_like(block)
        for j in range(len(cols)):
            lo = np.searchsorted(ref[:, j], block[:, :, j], "left")
            hi = np.searchsorted(ref[:, j], block[:, :, j], "right")
            pct[:, :, j] = (lo + hi) / 2 / len(ref)
        r[np.ix_(rows, [0, 1], cols)] = pct
    return z, r


def demean(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``values`` minus their mean within each group."""
    out = values.astype(np.float64).copy()
    for g in np.unique(groups):
        out[groups == g] -= out[groups == g].mean(0)
    return out


def load(data: Path) -> Data:
    """The benchmark cohort, its designs, per-worker pools and pointwise ratings."""
    cohort = al.load_cohort(data)
    X, owner = cohort.X.astype(np.float64), cohort.owner
    varies = [j for j in range(X.shape[2]) if np.any(X[:, 1, j] != X[:, 0, j])]
    beh = [j for j in varies if j not in TEXT]
    share = [j for j in beh if NAMES[j] in SHARE_NAMES]
    pools, point_rows, point_y, point_owner = [], [], [], []
    for k, device in enumerate(cohort.devices):
        pools.append(v2.featurize_device(device, scoring=True).X.astype(np.float64))
        for q in device.queries:
            if not q.pairwise and q.likert_left is not None:
                point_rows.append(v2.side_features(q, device.calibration.get(q.task_id))[0])
                point_y.append(q.likert_left)
                point_owner.append(k)
    Xz, Xr = per_worker(X, owner, pools, [j for j in range(X.shape[2]) if j not in TEXT])

    def diff(M: np.ndarray, cols: list[int]) -> np.ndarray:
        return M[:, 1, cols] - M[:, 0, cols]

    reps = {
        "text": diff(X, TEXT),
        "raw": diff(X, TEXT + beh),
        "z": np.hstack([diff(X, TEXT), diff(Xz, beh)]),
        "rank": np.hstack([diff(X, TEXT), diff(Xr, beh)]),
        "share": diff(X, TEXT + share),
    }
    columns = {"text": TEXT, "raw": TEXT + beh, "z": TEXT + beh, "rank": TEXT + beh}
    columns["share"] = TEXT + share
    po = np.array(point_owner)
    keep = np.isin(po, [g for g in np.unique(po) if np.sum(po == g) >= 2])  # demeaning needs 2+
    P = np.array(point_rows, dtype=np.float64)[keep][:, TEXT + beh]
    return Data(
        cohort=cohort,
        y=cohort.y.astype(np.float64),
        owner=owner,
        reps=reps,
        columns={k: [NAMES[j] for j in v] for k, v in columns.items()},
        point_X=demean(P, po[keep]),
        point_t=demean(np.array(point_y)[keep], po[keep]),
        point_owner=po[keep],
        n_pool=sum(len(p) for p in pools),
    )


# ---- models and metrics ---------------------------------------------------------------------


def column_aucs(y: np.ndarray, A: np.ndarray) -> np.ndarray:
    """Univariate AUC of every column of ``A``."""
    r = rankdata(A, axis=0)
    n1 = float(np.sum(y == 1))
    return (r[y == 1].sum(0) - n1 * (n1 + 1) / 2) / (n1 * (len(y) - n1))


def fit_predict(
    data: Data, recipe: str, hp: Mapping[str, Any], train: np.ndarray, test: np.ndarray
) -> np.ndarray:
    """Train ``recipe`` with ``hp`` on ``train``; its logits (> 0: right preferred) on ``test``."""
    D = data.reps[RECIPES[recipe]["rep"]]
    rms = np.sqrt(np.mean(D[train] ** 2, axis=0))
    rms[rms < 1e-9] = 1.0  # scaled, not centred: centring would break antisymmetry
    A, y = D / rms, data.y[train]
    nt = len(TEXT)
    cols = np.arange(A.shape[1])
    if hp.get("k") is not None or hp.get("sign"):
        uni = column_aucs(y, A[train]) - 0.5
    if hp.get("k") is not None:
        top = nt + np.argsort(-np.abs(uni[nt:]), kind="stable")[: hp["k"]]
        cols = np.concatenate([cols[:nt], top])
    bounds = None
    if hp.get("sign"):
        bounds = [(0.0, None) if uni[c] > 0 else (None, 0.0) for c in cols]
    point = None
    if hp.get("pw"):
        mine = np.isin(data.point_owner, np.unique(data.owner[train]))
        P = data.point_X[mine][:, : D.shape[1]]  # "text" and "raw": the text columns lead
        point = (P[:, cols] / rms[cols], data.point_t[mine], hp["pw"])
    w = fit_bt(A[np.ix_(train, cols)], y, hp["lam"], bounds, point)
    return A[np.ix_(test, cols)] @ w


def nested(data: Data, recipe: str, splits: Sequence[tuple[Any, Any]], seed: int) -> dict:
    """One seed: per outer split, the hyperparameters with the best pooled inner AUC (ties to
    the earlier), refitted on the outer training side and scored on its test side."""
    grid = RECIPES[recipe]["grid"]
    logits, picks = np.zeros(len(data.y)), []
    tested = np.concatenate([te for _, te in splits])
    for train, test in splits:
        folds = inner_splits(data.owner, train, INNER_SEED + seed, INNER_FOLDS)
        held = np.concatenate([va for _, va in folds])
        scores = []
        for hp in grid:
            inner = np.concatenate([fit_predict(data, recipe, hp, tr, va) for tr, va in folds])
            scores.append(roc_auc(data.y[held], inner))
        best = grid[int(np.argmax(scores))]
        picks.append(dict(best))
        logits[test] = fit_predict(data, recipe, best, train, test)
    return metrics(data.y[tested], logits[tested]) | {"picks": picks}


# ---- worker heterogeneity -------------------------------------------------------------------


def heterogeneity(data: Data) -> dict[str, Any]:
    """Per signal (right minus left of a raw per-answer feature): its pooled AUC and, over the
    workers with ``MIN_WORKER``+ comparisons and both choices, the share whose own AUC points
    the pooled direction, the median worker AUC, and how many workers' 90% bootstrap interval
    lies wholly on the pooled side or wholly against it."""
    X, y, owner = data.cohort.X.astype(np.float64), data.y, data.owner
    rng = np.random.default_rng(0)
    workers = [
        k
        for k in np.unique(owner)
        if np.sum(owner == k) >= MIN_WORKER and 0 < y[owner == k].sum() < np.sum(owner == k)
    ]
    out = {}
    for name in (*SIGNALS, REFERENCE):
        d = X[:, 1, NAMES.index(name)] - X[:, 0, NAMES.index(name)]
        pooled = roc_auc(y, d)
        side = 1.0 if pooled >= 0.5 else -1.0
        own, with_, against = [], 0, 0
        for k in workers:
            idx = np.flatnonzero(owner == k)
            own.append(roc_auc(y[idx], d[idx]))
            boot = []
            for _ in range(BOOTSTRAP):
                b = rng.choice(idx, len(idx))
                if 0 < y[b].sum() < len(b):
                    boot.append(roc_auc(y[b], d[b]))
            lo, hi = side * (np.percentile(boot, (5, 95)) - 0.5)
            with_ += min(lo, hi) > 0
            against += max(lo, hi) < 0
        own_arr = np.array(own)
        out[name] = {
            "pooled_auc": pooled,
            "workers": len(workers),
            "share_pooled_direction": float(np.mean(side * (own_arr - 0.5) > 0)),
            "median_worker_auc": float(np.median(own_arr)),
            "ci_with": int(with_),
            "ci_against": int(against),
        }
    return out


# ---- output ---------------------------------------------------------------------------------


def picks_text(cell: Mapping[str, Any]) -> str:
    """The hyperparameters picked most often over the outer splits, and how often."""
    seen = [tuple(sorted(p.items())) for s in cell["per_seed"] for p in s["picks"]]
    top = max(dict.fromkeys(seen), key=seen.count)  # ties to the first seen
    text = ", ".join(
        f"{k} {'all' if v is None else 'on' if v is True else f'{v:g}'}" for k, v in top
    )
    return f"{text} ({seen.count(top)}/{len(seen)})"


def render(result: Mapping[str, Any], command: str) -> str:
    """The markdown section."""
    cfg, rows, rule = result["config"], result["recipes"], result["rule"]
    text = rows["text only"]
    lines = [
        f"Produced by `{command}` ({cfg['devices']} workers, {cfg['comparisons']} comparisons, "
        f"{cfg['pool']} pairwise queries in the per-worker pools, {cfg['ratings']} pointwise "
        f"ratings; seeds {cfg['seeds']}; wall {cfg['wall_s']:.0f} s). Does implicit feedback "
        "help a reward model on people it has never seen? Models: Bradley-Terry logistic "
        "regression without intercept on right-minus-left v2 features, columns scaled by their "
        f"training RMS, L2 penalty; {cfg['text_columns']} text columns, "
        f"{cfg['behaviour_columns']} behaviour columns whose difference varies "
        f"({cfg['share_columns']} of them shares/ratios). Per-worker z-scores and ranks use "
        "each worker's own traces (both answers of all its pairwise queries, no labels). "
        f"Grouped: {cfg['folds']} folds by worker (the reward benchmark's splits), pooled over "
        "a seed's folds, mean ± std over seeds. Nested: each recipe's hyperparameters picked "
        f"by {INNER_FOLDS}-fold grouped inner CV inside each outer training side (pooled inner "
        f"AUC); {cfg['n_candidates']} candidates in all (L2 {list(LAMBDAS)}; top-k "
        f"k in {[k if k is not None else 'all' for k in TOP_K]}; pointwise weight in "
        f"{list(POINTWISE_WEIGHTS)}).",
        "",
        "| recipe | candidates | grouped accuracy | grouped AUC | vs text only (acc / AUC "
        "points) | vs rule | most-picked hyperparameters |",
        "|---|---|---|---|---|---|---|",
        f"| {RULE} | 0 | {pair(rule)} | {gaps(rule, text)[0]:+.1f} / "
        f"{gaps(rule, text)[1]:+.1f} | +0.0 / +0.0 | - |",
    ]
    for name, cell in rows.items():
        dt, dr = gaps(cell, text), gaps(cell, rule)
        lines.append(
            f"| {name} | {len(RECIPES[name]['grid'])} | {pair(cell)} | {dt[0]:+.1f} / "
            f"{dt[1]:+.1f} | {dr[0]:+.1f} / {dr[1]:+.1f} | {picks_text(cell)} |"
        )
    het = result["heterogeneity"]
    first = next(iter(het.values()))
    lines += [
        "",
        f"Heterogeneity: per worker with {MIN_WORKER}+ comparisons and both choices "
        f"({first['workers']} workers), does the signal (right minus left) point the pooled "
        "direction? Its AUC within the worker on the pooled side of 0.5; the last columns count "
        f"workers whose {BOOTSTRAP}-resample 90% bootstrap interval of that AUC lies wholly on "
        f"the pooled side, or wholly against it. {REFERENCE} (answer length) for reference.",
        "",
        "| signal | pooled AUC | share of workers in the pooled direction | median worker "
        "AUC | interval with / against |",
        "|---|---|---|---|---|",
    ]
    for name, h in het.items():
        lines.append(
            f"| {name} | {h['pooled_auc']:.3f} | {h['share_pooled_direction']:.2f} | "
            f"{h['median_worker_auc']:.3f} | {h['ci_with']} / {h['ci_against']} |"
        )
    lines += ["", result["verdict"]]
    return "\n".join(lines)


def verdict(result: Mapping[str, Any]) -> str:
    """The answer, from the numbers only."""
    rows, rule = result["recipes"], result["rule"]
    text = rows["text only"]
    behaviour = {k: v for k, v in rows.items() if RECIPES[k]["rep"] != "text"}
    best = max(behaviour, key=lambda k: sum(gaps(behaviour[k], text)))
    cell = behaviour[best]
    above = [k for k, v in behaviour.items() if min(gaps(v, text)) > 0]
    met = cell["accuracy_mean"] >= TARGET[0] and cell["auc_mean"] >= TARGET[1]
    se = 100 * np.sqrt(0.25 / result["config"]["comparisons"])
    het = result["heterogeneity"]
    within = ", ".join(f"{k} {v['share_pooled_direction']:.2f}" for k, v in het.items())
    return (
        f"Verdict: target {'met' if met else 'not met'} (issue 14: text + implicit feedback "
        f"at accuracy >= {TARGET[0]} and AUC >= {TARGET[1]} on unseen people, 4+ points above "
        f"text only). The best behaviour recipe ({best}, largest sum of the two gaps to text "
        f"only) scores {cell['accuracy_mean']:.3f} / {cell['auc_mean']:.3f}, "
        f"{gaps(cell, text)[0]:+.1f} / {gaps(cell, text)[1]:+.1f} points against text only "
        f"({text['accuracy_mean']:.3f} / {text['auc_mean']:.3f}) and "
        f"{gaps(cell, rule)[0]:+.1f} / {gaps(cell, rule)[1]:+.1f} against the rule "
        f"({rule['accuracy_mean']:.3f} / {rule['auc_mean']:.3f}); {len(above)} of the "
        f"{len(behaviour)} behaviour recipes beat text only on both (the binomial standard "
        f"error of one accuracy at n = {result['config']['comparisons']} is about {se:.1f} "
        f"points). Within workers ({het[SIGNALS[0]]['workers']} with {MIN_WORKER}+ "
        f"comparisons), the share whose own AUC points the pooled direction: {within}; a "
        "signal that flips between people cannot get one pooled weight that fits them all."
    )


def main() -> None:
    """Load, run every recipe nested on every split, write docs and JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/ifllm")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/behaviour_levers.json")
    args = parser.parse_args()
    t0 = time.monotonic()
    data = load(args.data)
    cohort = data.cohort
    print(f"{len(cohort.devices)} workers, {len(data.y)} comparisons", flush=True)
    print(f"{N_CANDIDATES} candidates over {len(RECIPES)} recipes (+ the rule)", flush=True)
    splits = {s: al.split_indices(cohort, "grouped", s, FOLDS) for s in SEEDS}
    rule_seeds = []
    for s in SEEDS:
        test = np.concatenate([te for _, te in splits[s]])
        rule_seeds.append(metrics(data.y[test], rule_logits(cohort.lengths[test])))
    recipes = {}
    for name in RECIPES:
        recipes[name] = mean_std([nested(data, name, splits[s], s) for s in SEEDS])
        print(f"{name}: {pair(recipes[name])} at {time.monotonic() - t0:.0f} s", flush=True)
    raw = data.reps["raw"].shape[1]
    result: dict[str, Any] = {
        "config": {
            "devices": len(cohort.devices),
            "comparisons": len(data.y),
            "pool": data.n_pool,
            "ratings": len(data.point_t),
            "seeds": list(SEEDS),
            "folds": FOLDS,
            "inner_folds": INNER_FOLDS,
            "lambdas": list(LAMBDAS),
            "top_k": list(TOP_K),
            "pointwise_weights": list(POINTWISE_WEIGHTS),
            "n_candidates": N_CANDIDATES,
            "text_columns": len(TEXT),
            "behaviour_columns": raw - len(TEXT),
            "share_columns": data.reps["share"].shape[1] - len(TEXT),
            "columns": data.columns,
        },
        "rule": mean_std(rule_seeds),
        "recipes": recipes,
        "heterogeneity": heterogeneity(data),
    }
    result["config"]["wall_s"] = round(time.monotonic() - t0, 1)
    result["verdict"] = verdict(result)
    publish(
        render(result, command_line("bench/behaviour_levers.py", False, len(SEEDS))),
        jsonable(result),
        markdown=args.out,
        json_path=args.json,
        marker=MARKER,
        heading=HEADING,
    )


if __name__ == "__main__":
    main()
