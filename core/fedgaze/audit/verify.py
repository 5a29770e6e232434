"""Audit of signed ledgers: verify every hash and signature, recompute every epsilon.

Epsilon is recomputed independently of Opacus with Google's ``dp_accounting``: each
``dp-round`` record ``(noise_multiplier q=sample_rate, steps)`` is
``SelfComposed(PoissonSampled(q, Gaussian(sigma)), steps)``, composed over the ledger's records
in order (RDP after every record, PLD for the final total). A record whose stated cumulative
epsilon differs from the RDP recomputation by more than :data:`RDP_TOLERANCE` (relative) is a
problem. Opacus' and dp_accounting's RDP differ by up to ~0.04% at fractional orders.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedgaze.ledger.contract import (
    DEVICE_LEDGER_FILE,
    SECRET_FIELDS,
    SERVER_LEDGER_FILE,
    RecordKind,
)
from fedgaze.ledger.keys import pseudonym
from fedgaze.ledger.records import LedgerRecord, VerifyReport, verify_jsonl, verify_sqlite
from fedgaze.privacy.central import quiet_absl

RDP_TOLERANCE = 1e-2
"""Largest relative difference allowed between a stated epsilon and dp_accounting's RDP."""


def _event(sigma: float, q: float, steps: int) -> Any:
    from dp_accounting import dp_event

    return dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), steps
    )


def rdp_epsilons(entries: Sequence[tuple[float, float, int, float]]) -> list[float]:
    """Cumulative RDP epsilon after each ``(sigma, q, steps, delta)`` entry (dp_accounting)."""
    from dp_accounting import rdp

    acc = rdp.RdpAccountant()
    out = []
    with quiet_absl():
        for sigma, q, steps, delta in entries:
            acc.compose(_event(sigma, q, steps))
            out.append(float(acc.get_epsilon(delta)))
    return out


def pld_epsilon(entries: Sequence[tuple[float, float, int]], delta: float) -> float:
    """PLD epsilon of all ``(sigma, q, steps)`` entries at ``delta`` (dp_accounting)."""
    from dp_accounting import pld

    if not entries:
        return 0.0
    acc = pld.PLDAccountant()
    with quiet_absl():
        for sigma, q, steps in entries:
            acc.compose(_event(sigma, q, steps))
        return float(acc.get_epsilon(delta))


@dataclass
class LedgerAudit:
    """One ledger's verification: the chain report plus the accounting and cross checks."""

    path: Path
    kind: str  # "device" or "server"
    report: VerifyReport
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def dp_records(self) -> list[LedgerRecord]:
        return [r for r in self.report.records if r.kind == RecordKind.DP_ROUND]


def _dp_fields(record: LedgerRecord) -> tuple[float, float, int, float, float]:
    """``(sigma, q, steps, delta, epsilon)`` of a dp-round record; ValueError if malformed."""
    b = record.body
    try:
        sigma, q, steps = float(b["noise_multiplier"]), float(b["sample_rate"]), b["steps"]
        delta, epsilon = float(b["delta"]), float(b["epsilon"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"dp-round body lacks a valid {err}") from None
    if not (isinstance(steps, int) and steps >= 1 and sigma > 0 and 0 < q <= 1 and 0 < delta < 1):
        raise ValueError("dp-round body has an invalid noise, sample rate, steps or delta")
    if not math.isfinite(epsilon) or epsilon < 0:
        raise ValueError(f"dp-round epsilon {epsilon!r} is not a number >= 0")
    return sigma, q, steps, delta, epsilon


def check_dp_records(
    records: Sequence[LedgerRecord], *, pld: bool = True
) -> tuple[list[str], dict[str, Any]]:
    """Problems and a summary of a device's ``dp-round`` records (in ledger order)."""
    problems: list[str] = []
    rows: list[tuple[LedgerRecord, tuple[float, float, int, float, float]]] = []
    charged: dict[tuple[str, int], int] = {}
    for rec in records:
        where = f"record {rec.seq}"
        leaked = [f for f in SECRET_FIELDS if f in rec.body]
        if leaked:
            problems.append(f"{where}: holds secret fields {leaked} (must stay on the device)")
        try:
            rows.append((rec, _dp_fields(rec)))
        except ValueError as err:
            problems.append(f"{where}: {err}")
            continue
        key = (str(rec.body.get("run_id")), int(rec.body.get("round", -1)))
        if key in charged:
            problems.append(
                f"{where}: charges run {key[0]!r} round {key[1]} again "
                f"(already charged in record {charged[key]})"
            )
        charged.setdefault(key, rec.seq)
        if rec.body.get("device") != pseudonym(rec.signer):
            problems.append(f"{where}: names device {rec.body.get('device')!r}, not its signer")
        budget = rec.body.get("epsilon_budget")
        if isinstance(budget, int | float) and rows[-1][1][4] > budget * (1 + 1e-9):
            problems.append(f"{where}: epsilon {rows[-1][1][4]:.6g} exceeds its budget {budget:g}")
    recomputed = rdp_epsilons([(s, q, k, d) for _, (s, q, k, d, _) in rows])
    for (rec, (*_, stated)), eps in zip(rows, recomputed, strict=True):
        if rec.body.get("accountant", "rdp") != "rdp":
            if stated > eps * (1 + RDP_TOLERANCE):
                problems.append(f"record {rec.seq}: stated epsilon {stated:.6g} > RDP {eps:.6g}")
            continue
        diff = abs(stated - eps) / max(eps, 1e-12)
        if diff > RDP_TOLERANCE:
            problems.append(
                f"record {rec.seq}: stated cumulative epsilon {stated:.6g}, dp_accounting RDP "
                f"gives {eps:.6g} (relative difference {diff:.2e} > {RDP_TOLERANCE:g})"
            )
    delta = rows[-1][1][3] if rows else None
    summary: dict[str, Any] = {
        "charges": len(rows),
        "runs": len({r.body.get("run_id") for r, _ in rows}),
        "delta": delta,
        "epsilon_stated": rows[-1][1][4] if rows else 0.0,
        "epsilon_rdp": recomputed[-1] if recomputed else 0.0,
        "epsilon_pld": (
            pld_epsilon([(s, q, k) for _, (s, q, k, _, _) in rows], delta)
            if pld and delta is not None
            else None
        ),
        "epsilon_budget": rows[-1][0].body.get("epsilon_budget") if rows else None,
    }
    return problems, summary


def audit_device_ledger(
    path: str | Path, *, trusted_signers: set[str] | None = None, pld: bool = True
) -> LedgerAudit:
    """Verify a device's ``ledger.jsonl`` and recompute its epsilons."""
    file = Path(path)
    report = verify_jsonl(file, trusted_signers)
    audit = LedgerAudit(file, "device", report, problems=[str(p) for p in report.problems])
    problems, summary = check_dp_records(audit.dp_records, pld=pld)
    audit.problems.extend(problems)
    audit.summary = {
        "device": pseudonym(report.signer) if report.signer else None,
        "records": report.lines,
        **summary,
    }
    return audit


def audit_server_ledger(path: str | Path, *, pld: bool = True) -> LedgerAudit:
    """Verify a server ledger and every device record it embeds."""
    file = Path(path)
    report = verify_sqlite(file)
    audit = LedgerAudit(file, "server", report, problems=[str(p) for p in report.problems])
    run_key = None
    central_rounds: list[LedgerRecord] = []
    per_device: dict[str, list[LedgerRecord]] = {}
    refused = 0
    committed = 0
    for rec in report.records:
        if rec.kind == RecordKind.RUN_START:
            run_key = (rec.body.get("settings") or {}).get("run_key")
            continue
        if rec.kind == RecordKind.RUN_RESUME:
            resumed_key = (rec.body.get("settings") or {}).get("run_key")
            if rec.body.get("after_round") != committed or resumed_key != run_key:
                audit.problems.append(
                    f"record {rec.seq}: resumes run {resumed_key!r} after round "
                    f"{rec.body.get('after_round')!r}, but run {run_key!r} had committed "
                    f"{committed}"
                )
            continue
        if rec.kind != RecordKind.SERVER_ROUND:
            audit.problems.append(f"record {rec.seq}: unknown kind {rec.kind!r}")
            continue
        # Rounds are committed once each, in order: a gap is a lost round, a repeat a round
        # counted twice.
        if rec.body.get("round") != committed + 1:
            audit.problems.append(
                f"record {rec.seq}: round {rec.body.get('round')!r} follows round {committed}"
            )
        committed = int(rec.body.get("round") or committed)
        refused += len(rec.body.get("refused", []))
        if rec.body.get("central_dp") is not None:
            central_rounds.append(rec)
        for line in rec.body.get("accepted", []):
            try:
                inner = LedgerRecord.parse_checked(line)
            except (ValueError, TypeError) as err:
                audit.problems.append(f"record {rec.seq}: an accepted device record {err}")
                continue
            who = pseudonym(inner.signer)
            if inner.body.get("round") != rec.body.get("round") or (
                run_key is not None and inner.body.get("run_id") != run_key
            ):
                audit.problems.append(
                    f"record {rec.seq}: accepted device {who}'s record for run "
                    f"{inner.body.get('run_id')!r} round {inner.body.get('round')!r}"
                )
            per_device.setdefault(inner.signer, []).append(inner)
    epsilon: dict[str, float] = {}
    for signer, records in per_device.items():
        who = pseudonym(signer)
        try:
            rows = [_dp_fields(r) for r in records]
        except ValueError as err:
            audit.problems.append(f"device {who}: {err}")
            continue
        # The server sees only this run: the device's stated (cumulative) epsilon must be at
        # least what these charges alone cost.
        floor = rdp_epsilons([(s, q, k, d) for s, q, k, d, _ in rows])[-1]
        if rows[-1][4] < floor * (1 - RDP_TOLERANCE):
            audit.problems.append(
                f"device {who}: states epsilon {rows[-1][4]:.6g}, below the {floor:.6g} its "
                f"accepted records of this run cost (dp_accounting RDP)"
            )
        epsilon[who] = rows[-1][4]
    central = _check_central(central_rounds, audit.problems)
    audit.summary = {
        "server": pseudonym(report.signer) if report.signer else None,
        "records": report.lines,
        "run_key": run_key,
        "rounds_committed": committed,
        "resumes": sum(r.kind == RecordKind.RUN_RESUME for r in report.records),
        "devices": len(per_device),
        "accepted_device_records": sum(len(v) for v in per_device.values()),
        "refused_updates": refused,
        "epsilon_stated": epsilon,
        **({"central_epsilon_stated": central} if central is not None else {}),
    }
    return audit


def central_events(records: Sequence[LedgerRecord]) -> list[dict[str, Any]]:
    """One event per noised aggregation: the Gaussian mechanism on the clipped sum, once."""
    return [
        {
            "round": r.body["round"],
            "noise_multiplier": r.body["central_dp"]["noise_multiplier"],
            "sample_rate": r.body["central_dp"]["sample_rate"],
            "steps": 1,
            "clip_norm": r.body["central_dp"]["clip_norm"],
        }
        for r in records
    ]


def _check_central(records: Sequence[LedgerRecord], problems: list[str]) -> float | None:
    """Recompute the client-level epsilon after each noised round; note disagreements."""
    if not records:
        return None
    try:
        events = central_events(records)
        delta = float(records[-1].body["central_dp"]["delta"])
        entries = [(e["noise_multiplier"], e["sample_rate"], 1, delta) for e in events]
        recomputed = rdp_epsilons(entries)
    except (KeyError, TypeError, ValueError) as err:
        problems.append(f"record {records[-1].seq}: malformed central_dp ({err!r})")
        return None
    for rec, eps in zip(records, recomputed, strict=True):
        stated = float(rec.body["central_dp"]["epsilon"])
        if abs(stated - eps) > RDP_TOLERANCE * max(eps, 1e-12):
            problems.append(
                f"record {rec.seq}: central epsilon {stated:.6g} disagrees with dp_accounting "
                f"RDP {eps:.6g} (tolerance {RDP_TOLERANCE:g} relative)"
            )
    return float(records[-1].body["central_dp"]["epsilon"])


def _cross_check(server: LedgerAudit, devices: Sequence[LedgerAudit], devices_dir: Path) -> None:
    """Every device record the server holds must be byte-identical to a line of the device's own
    ledger. In a run directory every device that trained keeps its ledger under ``devices/``, so
    a record with no such ledger is a problem too (a deleted or rolled-back ledger)."""
    raw_of: dict[str, set[str]] = {}
    path_of: dict[str, Path] = {}
    for d in devices:
        if d.report.signer:
            text = d.path.read_bytes().decode("ascii", errors="replace")
            raw_of[d.report.signer] = set(text.splitlines())
            path_of[d.report.signer] = d.path
    for rec in server.report.records:
        for line in rec.body.get("accepted", []) if rec.kind == RecordKind.SERVER_ROUND else []:
            try:
                inner = LedgerRecord.parse(line)
            except ValueError:
                continue  # already reported
            who = pseudonym(inner.signer)
            what = (
                f"device {who}'s record for round {inner.body.get('round')!r} "
                f"(device seq {inner.seq})"
            )
            if inner.signer not in raw_of:
                server.problems.append(
                    f"record {rec.seq}: {what} is in no device ledger under {devices_dir}"
                )
            elif line not in raw_of[inner.signer]:
                server.problems.append(
                    f"record {rec.seq}: {what} is not byte-identical to any line of "
                    f"{path_of[inner.signer]}"
                )


def audit_path(path: str | Path, *, pld: bool = True) -> list[LedgerAudit]:
    """Audit a run directory (server ledger, every device ledger, cross-check) or one ledger."""
    target = Path(path)
    if target.is_dir():
        audits: list[LedgerAudit] = []
        server_db = target / SERVER_LEDGER_FILE
        device_files = sorted((target / "devices").glob(f"*/{DEVICE_LEDGER_FILE}"))
        if not server_db.exists() and not device_files:
            raise FileNotFoundError(f"{target}: no {SERVER_LEDGER_FILE} and no device ledgers")
        devices = [audit_device_ledger(f, pld=pld) for f in device_files]
        if server_db.exists():
            server = audit_server_ledger(server_db, pld=pld)
            _cross_check(server, devices, target / "devices")
            audits.append(server)
        else:
            devices_note = f"{target}: no {SERVER_LEDGER_FILE}"
            for d in devices:
                d.notes.append(devices_note)
        return audits + devices
    if not target.exists():
        raise FileNotFoundError(f"{target}: no such file or directory")
    if target.suffix == ".db":
        return [audit_server_ledger(target, pld=pld)]
    if target.suffix == ".jsonl":
        return [audit_device_ledger(target, pld=pld)]
    raise ValueError(f"{target}: expected a run directory, a .jsonl or a .db ledger")


def export_events(audits: Sequence[LedgerAudit]) -> dict[str, Any]:
    """The DP events of every device, for anyone to recompute epsilon (no secrets in them)."""
    devices: dict[str, dict[str, Any]] = {}

    def add(records: Iterable[LedgerRecord], source: str) -> None:
        for rec in records:
            if rec.kind != RecordKind.DP_ROUND:
                continue
            who = pseudonym(rec.signer)
            entry = devices.setdefault(
                who,
                {"device_id": who, "public_key": rec.signer, "source": source, "events": []},
            )
            if any(
                (e["run_id"], e["round"]) == (rec.body["run_id"], rec.body["round"])
                for e in entry["events"]
            ):
                continue
            entry["events"].append(
                {
                    "run_id": rec.body["run_id"],
                    "round": rec.body["round"],
                    "noise_multiplier": rec.body["noise_multiplier"],
                    "sample_rate": rec.body["sample_rate"],
                    "steps": rec.body["steps"],
                }
            )
            entry.update(
                delta=rec.body["delta"],
                epsilon=rec.body["epsilon"],
                accountant=rec.body.get("accountant", "rdp"),
                epsilon_budget=rec.body.get("epsilon_budget"),
            )

    for a in audits:
        if a.kind == "device":
            add(a.report.records, str(a.path))
    for a in audits:
        if a.kind == "server":
            for rec in a.report.records:
                if rec.kind == RecordKind.SERVER_ROUND:
                    inner = []
                    for line in rec.body.get("accepted", []):
                        try:
                            inner.append(LedgerRecord.parse_checked(line))
                        except ValueError:
                            continue
                    add(inner, str(a.path))
    central = None
    for a in audits:
        noised = [
            r
            for r in (a.report.records if a.kind == "server" else [])
            if r.kind == RecordKind.SERVER_ROUND and r.body.get("central_dp") is not None
        ]
        if noised:
            last = noised[-1].body["central_dp"]
            central = {
                "delta": last["delta"],
                "epsilon": last["epsilon"],
                "accountant": "rdp",
                "unit": "one person (all of a device's data), against anyone but the server",
                "events": central_events(noised),
            }
    return {
        "format": 1,
        "verified": all(a.ok for a in audits),
        "unit": "one labelled comparison on one device (example-level DP-SGD)",
        "mechanism": "per event: steps x PoissonSampled(sample_rate, Gaussian(noise_multiplier))",
        "devices": sorted(devices.values(), key=lambda d: d["device_id"]),
        "central": central,
    }
