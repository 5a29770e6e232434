"""A self-contained HTML privacy report of a run: plots, per-device table, and a plain statement.

The report is built from what ``fedgaze audit export`` produces (the DP events of every device,
and of the client-level mechanism when there is one) plus, optionally, the run's evaluations
(accuracy per round) and the verification problems. Every epsilon in it is recomputed here with
Google's ``dp_accounting`` (RDP) from the exported events, not copied from the ledgers, so the
plots are an independent check of what the devices recorded. Figures are PNGs embedded as data
URIs: the file can be mailed or archived on its own.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from fedgaze.audit.recompute import cumulative_epsilons as recompute_epsilons
from fedgaze.audit.verify import exported_device_events

__all__ = ["cumulative_epsilons", "privacy_statement", "render_report"]


def cumulative_epsilons(events: Sequence[Mapping[str, Any]], delta: float) -> list[float]:
    """Epsilon at ``delta`` after each exported event (DP-SGD charges and label releases)."""
    return recompute_epsilons(exported_device_events(events), delta)


def _charges(events: Sequence[Mapping[str, Any]]) -> int:
    """How many of a device's exported events are DP-SGD rounds (not label releases)."""
    return sum(e.get("mechanism") != "randomized-response" for e in events)


def privacy_statement(export: Mapping[str, Any]) -> str:
    """A plain-language statement in the spirit of TF Privacy's
    ``compute_dp_sgd_privacy_statement``: unit protected, epsilon and delta, sampling assumption,
    and what the guarantee does not cover."""
    devices = export.get("devices", [])
    if not devices:
        return "No device took part in a DP-SGD round: no privacy was spent and none is claimed."
    recomputed = [
        cumulative_epsilons(d["events"], float(d["delta"]))[-1] for d in devices if d["events"]
    ]
    worst = max(recomputed) if recomputed else 0.0
    deltas = sorted({float(d["delta"]) for d in devices})
    rounds = max((_charges(d["events"]) for d in devices), default=0)
    releases = [
        e for d in devices for e in d["events"] if e.get("mechanism") == "randomized-response"
    ]
    text = (
        f"Each of {len(devices)} devices trained the reward model on its own data with DP-SGD "
        "(Opacus): per-example gradient clipping and Gaussian noise, with each step's batch drawn "
        "by Poisson sampling of the device's comparisons. The protected unit is one labelled "
        "comparison of one device (the two answers shown, the preference, and the gaze and "
        "mouse traces recorded while they were read). Over at most "
        f"{rounds} rounds, the largest cumulative privacy loss of any device is epsilon = "
        f"{worst:.3f} at delta = {', '.join(f'{d:g}' for d in deltas)} (RDP accountant of "
        "dp_accounting, recomputed from the exported events, assuming the Poisson sampling that "
        "Opacus implements). The guarantee holds against the server and anyone who sees a "
        "device's model updates. It covers each comparison separately: a person with k "
        "comparisons is protected as a whole only at the weaker level given by group privacy "
        "(at most about k times epsilon). It does not cover the declared releases outside DP: "
        "example counts, DP parameters, and held-out evaluation metrics (docs/privacy.md)."
    )
    if releases:
        epsilons = sorted({float(e["epsilon_label"]) for e in releases})
        text += (
            f" Devices also released {sum(int(e['released']) for e in releases)} preference "
            "labels with label DP: each comparison's bit (the person's choice or the behaviour "
            "model's inference from that comparison alone) flipped by randomized response at "
            f"epsilon_label = {', '.join(f'{x:g}' for x in epsilons)}, each comparison released "
            "once; the epsilon above includes it. The ids of the prompts and answers released "
            "are not protected (the service that served them knows them)."
        )
    central = export.get("central")
    if central:
        eps = cumulative_epsilons(central["events"], float(central["delta"]))
        text += (
            " Client-level DP was also applied to the aggregate: every person as a whole has "
            f"epsilon = {eps[-1] if eps else 0.0:.3f} at delta = {float(central['delta']):g} "
            "against everyone who sees the released models, but not against the server."
        )
    else:
        text += " Client-level (per-person) DP of the aggregate was not applied in this run."
    return text


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figures(
    export: Mapping[str, Any], evaluations: Sequence[Mapping[str, Any]]
) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out: list[tuple[str, str]] = []
    devices = [d for d in export.get("devices", []) if d["events"]]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    finals = []
    for d in devices:
        eps = cumulative_epsilons(d["events"], float(d["delta"]))
        finals.append(eps[-1])
        ax.plot([int(e["round"]) for e in d["events"]], eps, marker="o", lw=1, label=d["device_id"])
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("cumulative epsilon")
    ax.set_title("Cumulative epsilon per device (recomputed)")
    if 0 < len(devices) <= 10:
        ax.legend(fontsize=7)
    out.append(("Cumulative epsilon per device over rounds", _png(fig)))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    ax.hist(finals or [0.0], bins=min(20, max(len(finals), 1)), color="#4c72b0")
    ax.set_xlabel("final epsilon")
    ax.set_ylabel("devices")
    ax.set_title("Distribution of final epsilon across devices")
    out.append(("Distribution across devices", _png(fig)))
    plt.close(fig)

    central = export.get("central")
    if central:
        fig, ax = plt.subplots(figsize=(6.4, 3.0))
        eps = cumulative_epsilons(central["events"], float(central["delta"]))
        ax.plot([int(e["round"]) for e in central["events"]], eps, marker="o")
        ax.set_xlabel("round")
        ax.set_ylabel("epsilon")
        ax.set_title("Client-level (central) epsilon of the population")
        out.append(("Central epsilon", _png(fig)))
        plt.close(fig)

    scored = [e for e in evaluations if e.get("accuracy") is not None]
    if scored:
        fig, ax = plt.subplots(figsize=(6.4, 3.0))
        rounds = [int(e["round"]) for e in scored]
        ax.plot(rounds, [float(e["accuracy"]) for e in scored], marker="o", label="shared model")
        personal = [
            float(e["accuracy_personal"]) for e in scored if e.get("accuracy_personal") is not None
        ]
        if len(personal) == len(scored):
            ax.plot(rounds, personal, marker="s", label="with personal head")
        ax.set_xlabel("model after round (0 = initial model)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("held-out accuracy")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
        ax.set_title("Held-out accuracy per round (devices' later comparisons)")
        out.append(("Accuracy per round", _png(fig)))
        plt.close(fig)
    return out


def render_report(
    export: Mapping[str, Any],
    *,
    source: str,
    evaluations: Sequence[Mapping[str, Any]] = (),
    problems: Sequence[str] = (),
    canary: Mapping[str, Any] | None = None,
) -> str:
    """The report as one HTML document. ``problems`` (from verification) are shown first: a
    report on a ledger that does not verify, or has gaps, says so before any number.
    ``canary`` is the last empirical audit recorded for the run (:mod:`fedgaze.audit.outcome`),
    shown beside the run's own largest epsilon."""
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>fedgaze privacy report: {esc(source)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
        "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:2px 8px}"
        ".bad{background:#fdd;border:2px solid #c00;padding:1em}"
        ".ok{background:#dfd;padding:0.5em 1em}</style></head><body>",
        "<h1>fedgaze privacy report</h1>",
        f"<p>Source: <code>{esc(source)}</code>. Generated "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}.</p>",
    ]
    if problems:
        items = "".join(f"<li>{esc(p)}</li>" for p in problems)
        parts.append(
            "<div class='bad'><b>The ledgers did NOT verify; the numbers below may not be "
            f"trustworthy.</b><ul>{items}</ul></div>"
        )
    else:
        parts.append("<p class='ok'>Every hash, signature and epsilon verified.</p>")
    parts += ["<h2>Statement</h2>", f"<p>{esc(privacy_statement(export))}</p>"]
    parts.append(
        "<h2>Devices</h2><table><tr><th>device</th><th>rounds</th><th>epsilon (recorded)</th>"
        "<th>epsilon (recomputed, RDP)</th><th>delta</th><th>accountant</th></tr>"
    )
    for d in export.get("devices", []):
        eps = cumulative_epsilons(d["events"], float(d["delta"])) if d["events"] else [0.0]
        parts.append(
            f"<tr><td>{esc(str(d['device_id']))}</td><td>{_charges(d['events'])}</td>"
            f"<td>{float(d['epsilon']):.4f}</td><td>{eps[-1]:.4f}</td>"
            f"<td>{float(d['delta']):g}</td><td>{esc(str(d.get('accountant', '')))}</td></tr>"
        )
    parts.append("</table>")
    if canary is not None:
        parts += _canary_section(canary, export)
    for title, uri in _figures(export, evaluations):
        parts.append(f"<h2>{esc(title)}</h2><img alt='{esc(title)}' src='{uri}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _canary_section(canary: Mapping[str, Any], export: Mapping[str, Any]) -> list[str]:
    """The last empirical audit's bound beside its claim and the run's largest epsilon."""
    esc = html.escape
    worst = [
        cumulative_epsilons(d["events"], float(d["delta"]))[-1]
        for d in export.get("devices", [])
        if d["events"]
    ]
    verdict = "VIOLATED" if canary["violated"] else "consistent"
    rows = [
        ("audit", f"{canary['kind']} canaries, {canary.get('mechanism', '')}"),
        ("threat model", str(canary.get("threat_model", ""))),
        ("claimed epsilon (the audited configuration)", f"{float(canary['claimed_epsilon']):.3f}"),
        (
            "empirical lower bound",
            f"{float(canary['epsilon_lower_bound']):.3f} at "
            f"{float(canary['confidence']):.1%} confidence",
        ),
        ("verdict", verdict),
        ("this run's largest device epsilon", f"{max(worst):.3f}" if worst else "none spent"),
        ("recorded", str(canary.get("recorded", ""))),
    ]
    if canary.get("broken"):
        rows.insert(4, ("self-test", f"mechanism broken on purpose: {canary['broken']}"))
    cells = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return [
        "<h2>Empirical privacy audit (last recorded)</h2>",
        f"<table>{cells}</table>",
        "<p>An audit can refute a claim, not prove it: a lower bound above the claim means the "
        "implementation or its accounting is broken. It audits the training path with its own "
        "configuration (<code>fedgaze audit canary --run-dir</code>), not this run's data.</p>",
    ]
