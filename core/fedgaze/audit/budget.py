"""``fedgaze client budget``: what a device has spent, per run and in total, from its ledger.

The ledger is verified first (chain, signatures, the device's own key when its key file is
there) and every epsilon is recomputed with dp_accounting (see :mod:`fedgaze.audit.verify`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedgaze.audit.recompute import cumulative_epsilons
from fedgaze.audit.verify import audit_device_ledger, export_event, exported_device_events
from fedgaze.ledger.contract import device_key_path, device_ledger_path
from fedgaze.ledger.keys import load_or_create_signing_key, public_key_b64


@dataclass
class BudgetView:
    device: str | None
    ledger: Path
    runs: list[dict[str, Any]] = field(default_factory=list)
    rounds: int = 0
    epsilon: float = 0.0
    epsilon_rdp: float = 0.0
    delta: float = 0.0
    epsilon_budget: float | None = None
    problems: list[str] = field(default_factory=list)


def device_budget(device_dir: str | Path) -> BudgetView:
    """The verified spending of the device at ``device_dir`` (its ``ledger.jsonl``)."""
    ledger = device_ledger_path(device_dir)
    if not ledger.exists():
        return BudgetView(device=None, ledger=ledger)  # nothing charged yet
    trusted = None
    if device_key_path(device_dir).exists():
        trusted = {public_key_b64(load_or_create_signing_key(device_key_path(device_dir)))}
    audit = audit_device_ledger(ledger, trusted_signers=trusted, pld=False)
    view = BudgetView(device=audit.summary.get("device"), ledger=ledger, problems=audit.problems)
    by_run: dict[str, list[dict[str, Any]]] = {}
    delta: dict[str, float] = {}
    for rec in audit.device_records:
        by_run.setdefault(str(rec.body["run_id"]), []).append(export_event(rec))
        delta[str(rec.body["run_id"])] = float(rec.body["delta"])
    for run_id, events in by_run.items():
        charges = sum(e["mechanism"] == "dp-sgd" for e in events)
        view.runs.append(
            {
                "run_id": run_id,
                "rounds": charges,
                "labels_released": sum(int(e.get("released", 0)) for e in events),
                "epsilon": cumulative_epsilons(exported_device_events(events), delta[run_id])[-1],
                "delta": delta[run_id],
            }
        )
    view.rounds = sum(r["rounds"] for r in view.runs)
    view.epsilon = float(audit.summary.get("epsilon_stated") or 0.0)
    view.epsilon_rdp = float(audit.summary.get("epsilon_rdp") or 0.0)
    view.delta = float(audit.summary.get("delta") or 0.0)
    budget = audit.summary.get("epsilon_budget")
    view.epsilon_budget = float(budget) if budget is not None else None
    return view
