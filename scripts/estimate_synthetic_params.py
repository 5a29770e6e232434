"""Estimate the synthetic cohort's parameters from IFLLM and write ``synthetic_params.json``.

Usage (from the repository root, in the venv):

    python scripts/estimate_synthetic_params.py            # fit on all workers, write the JSON
    python scripts/estimate_synthetic_params.py --check    # KS table: packaged params vs IFLLM

Every parameter of :class:`fedgaze.data.synthetic.SyntheticParams` is estimated here from the
devices that :func:`fedgaze.data.ifllm.load_ifllm` returns; the JSON records the date, the
worker count and headline statistics of the data it came from. ``--check`` generates a
synthetic cohort from the packaged (or ``--params``) JSON and prints, per marginal, the
two-sample KS statistic against the real data, plus the label balance and the strength of the
behaviour-preference link on both.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
from scipy import stats
from scipy.special import expit

from fedgaze.data.schema import SIDE_LEFT, SIDE_NONE, SIDE_RIGHT, Device
from fedgaze.data.synthetic import (
    COMPLETION_MIN_SAMPLES,
    PARAMS_RESOURCE,
    Box,
    FloatArray,
    Gaussian2D,
    LogNormal,
    MixedEffect,
    Provenance,
    SyntheticParams,
    compare_marginals,
    generate_cohort,
    label_right_share,
    load_default_params,
    query_rows,
    sampling_intervals,
)
from fedgaze.data.synthetic.fit import (
    beta_moments,
    categorical,
    fit_betabinom,
    fit_logistic,
    fit_mixed,
    fit_negbinom,
    logit_share,
    lognormal,
    normal_scores,
    quantile_box,
    quantile_table,
    round_sig,
    run_lengths,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "datasets" / "ifllm"
#: The JSON that :func:`load_default_params` reads: in a checkout, the one in the package folder.
DEFAULT_OUT = Path(str(resources.files("fedgaze.data.synthetic").joinpath(PARAMS_RESOURCE)))
#: Minimum samples behind a per-query share for it to enter a fit.
MIN_SHARE_SAMPLES = 20
GAP_MS = 1000.0
#: Minimum gaze samples on a panel for a device's panel box to count.
MIN_PANEL_SAMPLES = 200
#: WebGazer's ~4 degree accuracy in CSS px (IFLLM README: ~170-210 px). Not identifiable from
#: the traces (no ground-truth gaze), so taken as documented rather than estimated.
WEBGAZER_ERROR_PX = 190.0


# --------------------------------------------------------------------------------------------
# Estimation
# --------------------------------------------------------------------------------------------


def _cohort_shape(devices: Sequence[Device]) -> dict[str, object]:
    """Tasks per device, the pairwise share, queries per task and pairwise label outcomes."""
    tasks: list[int] = []
    pw_tasks: list[int] = []
    sizes: dict[bool, list[int]] = {True: [], False: []}
    for d in devices:
        per_task = Counter(q.task_id for q in d.queries)
        pw = {q.task_id for q in d.queries if q.pairwise}
        tasks.append(len(per_task))
        pw_tasks.append(len(pw))
        for task, count in per_task.items():
            sizes[task in pw].append(count)
    t = np.asarray(tasks, np.float64)
    keep = t > 0
    outcome = Counter(
        "labelled" if q.is_labelled_comparison else "tie" if q.preference == 0 else "none"
        for d in devices
        for q in d.queries
        if q.pairwise
    )
    total = sum(outcome.values())
    return {
        "tasks_extra": fit_negbinom(t[keep] - 1),
        "pairwise_task_share": fit_betabinom(np.asarray(pw_tasks, np.float64)[keep], t[keep]),
        "queries_per_pairwise_task": categorical(sizes[True]),
        "queries_per_pointwise_task": categorical(sizes[False]),
        "pairwise_outcome": tuple(
            round_sig(outcome[k] / total) for k in ("labelled", "tie", "none")
        ),
    }


def _text_and_labels(devices: Sequence[Device], r: dict[str, FloatArray]) -> dict[str, object]:
    """Answer and prompt lengths, the length-preference link, Likert and calibration."""
    pw = r["pairwise"] > 0
    len_l, len_r = np.maximum(r["len_left"][pw], 1), np.maximum(r["len_right"][pw], 1)
    mean = np.sqrt(len_l * len_r)
    ratio = np.log(len_r / len_l)
    lab = r["labelled"] > 0
    log_rl = np.log(np.maximum(r["len_right"], 1) / np.maximum(r["len_left"], 1))
    preferred, other, pointwise, better = [], [], [], []
    for d in devices:
        for q in d.queries:
            if q.is_labelled_comparison:
                lk = (q.likert_left, q.likert_right)
                if q.label_right:
                    lk = lk[::-1]
                if lk[0] is not None and lk[1] is not None:
                    preferred.append(lk[0])
                    other.append(lk[1])
            elif not q.pairwise:
                if q.likert_left is not None:
                    pointwise.append(q.likert_left)
                if q.preference is not None:
                    better.append(q.preference == 1)
    calib = [v for d in devices for v in d.calibration.values() if math.isfinite(v)]
    return {
        "pointwise_chars": quantile_table(r["len_left"][~pw]),
        "pair_mean_chars": quantile_table(mean),
        "pair_abs_log_ratio": quantile_table(np.abs(ratio)),
        "pair_ratio_corr": round_sig(
            np.corrcoef(normal_scores(mean), normal_scores(np.abs(ratio)))[0, 1]
        ),
        "pair_right_longer_share": round_sig(np.mean(ratio > 0) + 0.5 * np.mean(ratio == 0)),
        "prompt_chars": quantile_table(r["prompt_len"]),
        "prefer_right": fit_logistic(r["label_right"][lab], {"log_len_ratio_rl": log_rl[lab]}),
        "likert_preferred": categorical(preferred),
        "likert_other": categorical(other),
        "likert_pointwise": categorical(pointwise),
        "pointwise_better_share": round_sig(np.mean(better)),
        "calibration": quantile_table(np.asarray(calib), knots=101),
    }


def _timing(devices: Sequence[Device], r: dict[str, FloatArray]) -> dict[str, object]:
    """Clock range, idle gaps between tasks, query durations and sampling intervals."""
    shown = r["shown_at_ms"][np.isfinite(r["shown_at_ms"])]
    # idle time between the last sample of a task and the first query of the next task
    gaps = []
    for d in devices:
        last_end: float | None = None
        prev_task: int | None = None
        for q in d.queries:
            if q.task_id != prev_task and last_end is not None and q.shown_at_ms is not None:
                gaps.append((q.shown_at_ms - last_end) / 1000.0)
            if len(q.gaze):
                last_end = float(q.gaze.t_ms[-1])
            elif q.shown_at_ms is not None:
                last_end = q.shown_at_ms
            prev_task = q.task_id
    g = np.asarray(gaps)
    ok = np.isfinite(r["duration_s"]) & (r["duration_s"] > 0)
    pw = r["pairwise"]
    log_chars = np.log(np.maximum(r["len_left"] + r["len_right"], 1) / 1000.0)
    medians, shapes = [], []
    for d in devices:
        iv = sampling_intervals([d])
        iv = iv[iv > 0]
        if len(iv) >= 100:
            med = float(np.median(iv))
            medians.append(med)
            shapes.append(iv[iv <= GAP_MS] / med)
    iv_all = sampling_intervals(devices)
    big = iv_all[iv_all > GAP_MS]
    return {
        "first_epoch_ms": float(shown.min()),
        "last_epoch_ms": float(shown.max()),
        "task_gap_s": lognormal(g[g > 1.0]),
        "duration_s": fit_mixed(
            np.where(ok, r["duration_s"], np.nan),
            {"pairwise": pw, "log_chars": log_chars},
            r["device"],
        ),
        "median_interval_ms": quantile_table(np.asarray(medians), knots=21),
        "interval_shape": quantile_table(np.concatenate(shapes)),
        "gap_share": round_sig(np.mean(iv_all > GAP_MS)),
        "gap_ms": lognormal(big) if len(big) > 1 else LogNormal(mu=math.log(2000), sigma=0.5),
    }


class _TraceStats:
    """Per-sample statistics gathered in one pass over all queries' traces."""

    def __init__(self, devices: Sequence[Device]) -> None:
        diffs, g_runs, v_runs = [], [], []
        boxes: dict[str, list[Box]] = {"L": [], "R": [], "S": []}
        off: list[tuple[FloatArray, FloatArray]] = []
        tau, vpos = [], []
        on_total = on_nochar = m_on_total = m_on_nochar = 0
        rest_runs: list[FloatArray] = []
        move_runs: list[FloatArray] = []
        first_q = first_nan = 0
        dev_valid: list[float] = []
        for d in devices:
            known = good = 0
            prev_task: int | None = None
            panel: dict[str, list[tuple[FloatArray, FloatArray]]] = {"L": [], "R": [], "S": []}
            for q in d.queries:
                g, m = q.gaze, q.mouse
                if q.task_id != prev_task and len(m):
                    first_q += 1
                    first_nan += int(np.isnan(m.x[0]))
                prev_task = q.task_id
                if len(g) < 2:
                    continue
                fast = np.diff(g.t_ms) < 200
                diffs.append(np.c_[np.diff(g.x), np.diff(g.y)][fast])
                g_runs.append(run_lengths(g.side.astype(np.float64)))
                kv = g.validate >= 0
                known += int(kv.sum())
                good += int((g.validate == 1).sum())
                if kv.any():
                    v_runs.append(run_lengths(g.validate[kv].astype(np.float64)))
                on = g.side != SIDE_NONE
                on_total += int(on.sum())
                on_nochar += int((on & (g.char_index < 0)).sum())
                off.append((g.x[~on], g.y[~on]))
                for side, text in ((SIDE_LEFT, q.response_left), (SIDE_RIGHT, q.response_right)):
                    sel = g.side == side
                    key = "S" if not q.pairwise else ("L" if side == SIDE_LEFT else "R")
                    panel[key].append((g.x[sel], g.y[sel]))
                    c = g.char_index[sel & (g.char_index >= 0)]
                    if text and len(c) >= COMPLETION_MIN_SAMPLES:
                        frac = c / len(text)
                        comp = float(np.quantile(frac, 0.9))
                        if comp > 0:
                            tau.append(np.arange(len(c)) / (len(c) - 1))
                            vpos.append(frac / comp)
                mon = m.side != SIDE_NONE
                m_on_total += int(mon.sum())
                m_on_nochar += int((mon & (m.char_index < 0)).sum())
                known_xy = ~np.isnan(m.x)
                both = known_xy[1:] & known_xy[:-1]
                moved = ((np.diff(m.x) != 0) | (np.diff(m.y) != 0))[both]
                runs = run_lengths(moved.astype(np.float64))
                starts_moving = np.r_[moved[:1], moved[1:][moved[1:] != moved[:-1]]]
                move_runs.append(runs[starts_moving])
                rest_runs.append(runs[~starts_moving])
            if known:
                dev_valid.append(good / known)
            for k, parts in panel.items():
                px = np.concatenate([a for a, _ in parts]) if parts else np.empty(0)
                py = np.concatenate([b for _, b in parts]) if parts else np.empty(0)
                if len(px) >= MIN_PANEL_SAMPLES:
                    boxes[k].append(quantile_box(px, py))
        dxy = np.concatenate(diffs)
        mad = np.median(np.abs(dxy - np.median(dxy, axis=0)), axis=0) * 1.4826
        self.gaze_jitter_px = round_sig(float(mad.mean()) / math.sqrt(2))
        self.gaze_bout_samples = round_sig(np.concatenate(g_runs).mean())
        self.validate_bout_samples = round_sig(np.concatenate(v_runs).mean()) if v_runs else 50.0
        self.dev_valid = np.asarray(dev_valid)
        self.gaze_no_char_share = round_sig(on_nochar / max(on_total, 1))
        self.mouse_no_char_share = round_sig(m_on_nochar / max(m_on_total, 1))
        self.mouse_rest_samples = round_sig(np.concatenate(rest_runs).mean())
        self.mouse_move_samples = round_sig(np.concatenate(move_runs).mean())
        self.mouse_nan_start_share = round_sig(first_nan / max(first_q, 1))
        # one screen per device: the median of the per-device panel boxes
        self.panels = {
            k: Box(
                **{
                    e: round_sig(np.median([getattr(b, e) for b in v]))
                    for e in ("x0", "y0", "x1", "y1")
                }
            )
            for k, v in boxes.items()
        }
        ox = np.concatenate([a for a, _ in off])
        oy = np.concatenate([b for _, b in off])
        ok = np.isfinite(ox) & np.isfinite(oy)
        ox, oy = ox[ok], oy[ok]
        self.gaze_off = Gaussian2D(
            mean_x=round_sig(np.median(ox)),
            mean_y=round_sig(np.median(oy)),
            sd_x=round_sig(stats.iqr(ox) / 1.349),
            sd_y=round_sig(stats.iqr(oy) / 1.349),
        )
        t, v = np.concatenate(tau), np.concatenate(vpos)
        dec = np.minimum((t * 10).astype(int), 9)
        means = np.bincount(dec, v, 10) / np.maximum(np.bincount(dec, minlength=10), 1)
        self.progression_mean = tuple(round_sig(x) for x in means)
        self.progression_sd = round_sig(np.std(v - means[dec]))


def _share_models(r: dict[str, FloatArray], kind: str) -> tuple[MixedEffect, MixedEffect]:
    """The on-answer share and the pairwise left share of one trace, ``kind`` "gaze" or "mouse"."""
    pw = r["pairwise"]
    n_g = r["n_gaze"]
    log_ratio = np.log(np.maximum(r["len_left"], 1) / np.maximum(r["len_right"], 1))
    # number of on-answer samples, for the left-share clipping (the mouse shares the gaze instants)
    n_on = n_g * r[f"{kind}_on"]
    pw_rows = (pw > 0) & (n_on >= MIN_SHARE_SAMPLES)
    sub = {k: v[pw_rows] for k, v in r.items()}
    on_answer = fit_mixed(
        np.where(n_g >= MIN_SHARE_SAMPLES, r[f"{kind}_on"], np.nan),
        {"pairwise": pw},
        r["device"],
    )
    left_share = fit_mixed(
        sub[f"{kind}_left"],
        {"pref": sub["pref_left"], "log_len_ratio": log_ratio[pw_rows]},
        sub["device"],
    )
    return on_answer, left_share


def _behaviour(
    devices: Sequence[Device], r: dict[str, FloatArray], n_devices: int
) -> dict[str, object]:
    """Gaze, camera validity and mouse parameters, including the preference effects."""
    ts = _TraceStats(devices)
    pw = r["pairwise"]
    dev = r["device"]
    gaze_on, gaze_left = _share_models(r, "gaze")
    mouse_on, mouse_left = _share_models(r, "mouse")
    # per (query, side) completion rows
    comp = np.r_[r["completion_left"], r["completion_right"]]
    side_len = np.r_[r["len_left"], r["len_right"]]
    side_pref = np.r_[r["pref_left"], -r["pref_left"]]
    unknown = max(n_devices - len(ts.dev_valid), 0)
    return {
        "gaze_jitter_px": ts.gaze_jitter_px,
        "gaze_offset_px": WEBGAZER_ERROR_PX,
        "gaze_on_answer": gaze_on,
        "gaze_left_share": gaze_left,
        "gaze_bout_samples": ts.gaze_bout_samples,
        "completion": fit_mixed(
            comp,
            {
                "pairwise": np.r_[pw, pw],
                "log_chars": np.log(np.maximum(side_len, 1) / 1000.0),
                "pref": side_pref,
            },
            np.r_[dev, dev],
        ),
        "progression_mean": ts.progression_mean,
        "progression_sd": ts.progression_sd,
        "gaze_no_char_share": ts.gaze_no_char_share,
        "panel_left": ts.panels["L"],
        "panel_right": ts.panels["R"],
        "panel_single": ts.panels["S"],
        "gaze_off": ts.gaze_off,
        "validate_unknown_share": round_sig(unknown / max(n_devices, 1)),
        "validate_ratio": beta_moments(ts.dev_valid),
        "validate_bout_samples": ts.validate_bout_samples,
        "mouse_rest_samples": ts.mouse_rest_samples,
        "mouse_move_samples": ts.mouse_move_samples,
        "mouse_nan_start_share": ts.mouse_nan_start_share,
        "mouse_on_answer": mouse_on,
        "mouse_left_share": mouse_left,
        "mouse_no_char_share": ts.mouse_no_char_share,
    }


def link_strength(devices: Sequence[Device]) -> dict[str, float]:
    """How strongly behaviour tracks preference on labelled comparisons.

    Mean left share of on-answer gaze when left was preferred minus when right was, and the
    same for reading completion (preferred minus other answer).
    """
    r = query_rows(devices)
    lab = r["labelled"] > 0
    right = r["label_right"] == 1
    gl = r["gaze_left"]
    d_comp = r["completion_left"] - r["completion_right"]
    sign = np.where(right, -1.0, 1.0)
    return {
        "gaze_left_share_gap": float(np.nanmean(gl[lab & ~right]) - np.nanmean(gl[lab & right])),
        "completion_gap_preferred": float(np.nanmean((sign * d_comp)[lab])),
    }


def grouped_accuracy(devices: Sequence[Device], folds: int = 5) -> float:
    """Accuracy of a tiny logistic model on behaviour features, cross-validated by device.

    Features: logit left gaze share, completion difference, log length ratio. A sanity check
    that the behaviour-preference link is learnable but weak, not a benchmark.
    """
    r = query_rows(devices)
    lab = r["labelled"] > 0
    feats = np.column_stack(
        [
            logit_share(r["gaze_left"], np.maximum(r["n_gaze"] * r["gaze_on"], 1)),
            np.nan_to_num(r["completion_left"] - r["completion_right"]),
            np.log(np.maximum(r["len_left"], 1) / np.maximum(r["len_right"], 1)),
        ]
    )[lab]
    y = r["label_right"][lab]
    g = r["device"][lab].astype(np.int64)
    feats = np.nan_to_num(feats)
    fold = g % folds
    correct = 0
    for f in range(folds):
        tr, te = fold != f, fold == f
        if not te.any() or not tr.any():
            continue
        cov = {f"x{i}": feats[tr, i] for i in range(feats.shape[1])}
        m = fit_logistic(y[tr], cov)
        b = np.r_[m.intercept, list(m.coefs.values())]
        p = expit(np.column_stack([np.ones(te.sum()), feats[te]]) @ b)
        correct += int(((p > 0.5) == (y[te] == 1)).sum())
    return correct / max(len(y), 1)


def estimate(devices: Sequence[Device], n_workers: int, root: Path) -> SyntheticParams:
    """Fit every synthetic parameter on the loaded IFLLM devices."""
    traced = [d for d in devices if any(len(q.gaze) for q in d.queries)]
    r = query_rows(devices)
    fields: dict[str, object] = {}
    fields.update(_cohort_shape(devices))
    fields.update(_text_and_labels(devices, r))
    rt = query_rows(traced)
    fields.update(_timing(traced, rt))
    fields.update(_behaviour(traced, rt, len(traced)))
    lab = r["labelled"] > 0
    iv = sampling_intervals(traced)
    link = link_strength(traced)
    provenance = Provenance(
        dataset=f"IFLLM ({root.name}), arXiv 2606.20482",
        estimated_at=dt.datetime.now(dt.UTC).date().isoformat(),
        script="scripts/estimate_synthetic_params.py",
        n_workers=n_workers,
        n_devices_with_traces=len(traced),
        n_queries=len(r["device"]),
        n_pairwise_queries=int((r["pairwise"] > 0).sum()),
        n_labelled_comparisons=int(lab.sum()),
        n_gaze_samples=int(sum(len(q.gaze) for d in devices for q in d.queries)),
        n_mouse_samples=int(sum(len(q.mouse) for d in devices for q in d.queries)),
        stats={
            "label_right_share": round_sig(label_right_share(devices)),
            "median_interval_ms": round_sig(np.median(iv)),
            "share_intervals_over_1s": round_sig(np.mean(iv > GAP_MS)),
            "median_query_duration_s": round_sig(np.nanmedian(rt["duration_s"])),
            "mean_gaze_on_answer_share": round_sig(np.nanmean(rt["gaze_on"])),
            "mean_mouse_on_answer_share": round_sig(np.nanmean(rt["mouse_on"])),
            "median_response_chars": round_sig(
                np.median(np.r_[r["len_left"], r["len_right"][r["pairwise"] > 0]])
            ),
            "max_comparisons_per_device": float(max(len(d.comparisons()) for d in devices)),
            "gaze_left_share_gap": round_sig(link["gaze_left_share_gap"]),
            "completion_gap_preferred": round_sig(link["completion_gap_preferred"]),
            "grouped_cv_accuracy_behaviour": round_sig(grouped_accuracy(traced)),
        },
    )
    return SyntheticParams(provenance=provenance, **fields)


# --------------------------------------------------------------------------------------------
# Check mode
# --------------------------------------------------------------------------------------------


def check(devices: Sequence[Device], params: SyntheticParams, n_synth: int, seed: int) -> None:
    """Print the KS table and label/link comparisons: synthetic cohort vs the real data."""
    traced = [d for d in devices if any(len(q.gaze) for q in d.queries)]
    synth = generate_cohort(n_synth, seed=seed, params=params)
    table = compare_marginals(devices, synth)
    # per-query marginals from traced devices only; comparisons per device from all devices
    print(f"{'marginal':<26}{'KS':>7}{'n_real':>10}{'n_synth':>10}")
    for name, (stat, n_a, n_b) in table.items():
        print(f"{name:<26}{stat:>7.3f}{n_a:>10}{n_b:>10}")
    print()
    print(f"{'':<34}{'real':>8}{'synth':>8}")
    rows = [
        ("label right share", label_right_share(devices), label_right_share(synth)),
    ]
    lr, ls = link_strength(traced), link_strength(synth)
    rows += [(k, lr[k], ls[k]) for k in lr]
    rows.append(
        ("grouped-CV accuracy (behaviour)", grouped_accuracy(traced), grouped_accuracy(synth))
    )
    for name, a, b in rows:
        print(f"{name:<34}{a:>8.3f}{b:>8.3f}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: estimate and write the JSON, or ``--check`` the packaged parameters."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="IFLLM folder")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON to write")
    ap.add_argument("--workers", type=int, default=None, help="use only the first N workers")
    ap.add_argument("--check", action="store_true", help="compare params with the real data")
    ap.add_argument("--params", type=Path, default=None, help="--check these params instead")
    ap.add_argument("--n-synthetic", type=int, default=300, help="--check cohort size")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from fedgaze.data.ifllm import list_workers, load_ifllm

    workers = list(list_workers(args.root))
    if args.workers is not None:
        workers = workers[: args.workers]
    ds = load_ifllm(args.root, workers=workers)
    for problem in list(ds.problems)[:5]:
        print(f"loader problem: {problem}", file=sys.stderr)
    if args.check:
        params = (
            SyntheticParams.model_validate_json(args.params.read_text("utf-8"))
            if args.params
            else load_default_params()
        )
        check(ds.devices, params, args.n_synthetic, args.seed)
        return 0
    params = estimate(ds.devices, len(workers), args.root)
    args.out.write_text(params.model_dump_json(indent=1) + "\n", "utf-8")
    print(f"wrote {args.out} from {len(ds.devices)} devices ({len(workers)} workers)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
