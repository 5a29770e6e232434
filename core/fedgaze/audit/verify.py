"""Audit of signed ledgers: verify every hash and signature, recompute every epsilon.

Epsilon is recomputed independently of Opacus with Google's ``dp_accounting``
(:mod:`fedgaze.audit.recompute`): each ``dp-round`` record ``(noise_multiplier q=sample_rate,
steps)`` is ``SelfComposed(PoissonSampled(q, Gaussian(sigma)), steps)`` and each
``label-release`` record one binary randomized response at its ``epsilon_label``, composed over
the ledger's records in order (after every record; PLD for the DP-SGD total too). A record
whose stated cumulative epsilon differs from the recomputation by more than
:data:`RDP_TOLERANCE` (relative) is a problem, and so is a label release whose flip rate is
not ``1 / (1 + e^epsilon_label)``. Opacus' and dp_accounting's RDP differ by up to ~0.04% at
fractional orders.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedgaze.audit.recompute import (
    DeviceEvent,
    LabelRelease,
    SgdCharge,
    cumulative_epsilons,
    pld_epsilon,
    rdp_epsilons,
)
from fedgaze.ledger.contract import (
    DEVICE_LEDGER_FILE,
    SECRET_FIELDS,
    SERVER_LEDGER_FILE,
    RecordKind,
)
from fedgaze.ledger.keys import pseudonym
from fedgaze.ledger.records import LedgerRecord, VerifyReport, verify_jsonl, verify_sqlite
from fedgaze.privacy.label_dp import flip_rate_matches

RDP_TOLERANCE = 1e-2
"""Largest relative difference allowed between a stated epsilon and dp_accounting's RDP."""

DEVICE_RECORD_KINDS = (RecordKind.DP_ROUND, RecordKind.LABEL_RELEASE)


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

    @property
    def device_records(self) -> list[LedgerRecord]:
        """Every ``dp-round`` and ``label-release`` record, in ledger order."""
        return [r for r in self.report.records if r.kind in DEVICE_RECORD_KINDS]


def _number(body: dict[str, Any], name: str) -> float:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} {value!r} is not a finite number")
    return float(value)


def _device_event(record: LedgerRecord) -> tuple[DeviceEvent, float, float]:
    """``(event, delta, stated epsilon)`` of a ``dp-round`` or ``label-release`` record;
    ValueError naming the field when it is malformed."""
    b = record.body
    delta, epsilon = _number(b, "delta"), _number(b, "epsilon")
    if not 0 < delta < 1:
        raise ValueError(f"delta {delta!r} is not in (0, 1)")
    if epsilon < 0:
        raise ValueError(f"epsilon {epsilon!r} is not a number >= 0")
    if record.kind == RecordKind.LABEL_RELEASE:
        eps_label = _number(b, "epsilon_label")
        if eps_label <= 0:
            raise ValueError(f"epsilon_label {eps_label!r} is not > 0")
        if not flip_rate_matches(eps_label, b.get("flip_rate")):  # type: ignore[arg-type]
            raise ValueError(
                f"flip_rate {b.get('flip_rate')!r} is not 1/(1+e^{eps_label:g}), the flip rate of "
                "its epsilon_label"
            )
        counts = [b.get(k) for k in ("released", "resent", "rows")]
        whole = [c for c in counts if isinstance(c, int) and not isinstance(c, bool) and c >= 0]
        if len(whole) != 3 or whole[0] + whole[1] != whole[2]:
            raise ValueError(f"released/resent/rows {counts} are not consistent counts")
        return LabelRelease(eps_label, whole[0]), delta, epsilon
    sigma, q, steps = _number(b, "noise_multiplier"), _number(b, "sample_rate"), b.get("steps")
    if not (isinstance(steps, int) and steps >= 1 and sigma > 0 and 0 < q <= 1):
        raise ValueError("dp-round body has an invalid noise, sample rate or steps")
    return SgdCharge(sigma, q, steps), delta, epsilon


def check_device_records(
    records: Sequence[LedgerRecord], *, pld: bool = True
) -> tuple[list[str], dict[str, Any]]:
    """Problems and a summary of a device's ``dp-round`` and ``label-release`` records (in
    ledger order)."""
    problems: list[str] = []
    rows: list[tuple[LedgerRecord, DeviceEvent, float, float]] = []
    seen: dict[tuple[str, str, int], int] = {}
    for rec in records:
        where = f"record {rec.seq}"
        leaked = [f for f in SECRET_FIELDS if f in rec.body]
        if leaked:
            problems.append(f"{where}: holds secret fields {leaked} (must stay on the device)")
        try:
            rows.append((rec, *_device_event(rec)))
        except ValueError as err:
            problems.append(f"{where}: {rec.kind} body: {err}")
            continue
        key = (rec.kind, str(rec.body.get("run_id")), int(rec.body.get("round", -1)))
        if key in seen:
            what = "charges" if rec.kind == RecordKind.DP_ROUND else "releases labels of"
            problems.append(
                f"{where}: {what} run {key[1]!r} round {key[2]} again "
                f"(already in record {seen[key]})"
            )
        seen.setdefault(key, rec.seq)
        if rec.body.get("device") != pseudonym(rec.signer):
            problems.append(f"{where}: names device {rec.body.get('device')!r}, not its signer")
        budget = rec.body.get("epsilon_budget")
        if isinstance(budget, int | float) and rows[-1][3] > budget * (1 + 1e-9):
            problems.append(f"{where}: epsilon {rows[-1][3]:.6g} exceeds its budget {budget:g}")
    delta = rows[-1][2] if rows else None
    recomputed = cumulative_epsilons([e for _, e, _, _ in rows], delta) if delta else []
    for (rec, _, _, stated), eps in zip(rows, recomputed, strict=True):
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
    charges = [e for _, e, _, _ in rows if isinstance(e, SgdCharge)]
    labels = [(r, e) for r, e, _, _ in rows if isinstance(e, LabelRelease)]
    summary: dict[str, Any] = {
        "charges": len(charges),
        "label_releases": len(labels),
        "labels_released": sum(int(r.body.get("released", 0)) for r, _ in labels),
        "epsilon_label": max((e.epsilon_label for _, e in labels), default=None),
        "runs": len({r.body.get("run_id") for r, *_ in rows}),
        "delta": delta,
        "epsilon_stated": rows[-1][3] if rows else 0.0,
        "epsilon_rdp": recomputed[-1] if recomputed else 0.0,
        "epsilon_pld": (
            pld_epsilon([(c.noise_multiplier, c.sample_rate, c.steps) for c in charges], delta)
            if pld and delta is not None and not labels
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
    problems, summary = check_device_records(audit.device_records, pld=pld)
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
    labels_rounds = 0
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
        if rec.kind == RecordKind.LABELS_ROUND:
            labels_rounds += 1
            if labels_rounds > 1 or rec.body.get("round") != committed:
                audit.problems.append(
                    f"record {rec.seq}: labels round {labels_rounds} for the model after round "
                    f"{rec.body.get('round')!r}, but the run had committed {committed}"
                )
        elif rec.kind != RecordKind.SERVER_ROUND:
            audit.problems.append(f"record {rec.seq}: unknown kind {rec.kind!r}")
            continue
        # Rounds are committed once each, in order: a gap is a lost round, a repeat a round
        # counted twice.
        elif rec.body.get("round") != committed + 1:
            audit.problems.append(
                f"record {rec.seq}: round {rec.body.get('round')!r} follows round {committed}"
            )
        if rec.kind == RecordKind.SERVER_ROUND:
            committed = int(rec.body.get("round") or committed)
        refused += len(rec.body.get("refused", []))
        if rec.body.get("central_dp") is not None:
            central_rounds.append(rec)
        for inner in _accepted(rec, run_key, audit.problems):
            per_device.setdefault(inner.signer, []).append(inner)
    epsilon: dict[str, float] = {}
    for signer, records in per_device.items():
        who = pseudonym(signer)
        try:
            rows = [_device_event(r) for r in records]
        except ValueError as err:
            audit.problems.append(f"device {who}: {err}")
            continue
        # The server sees only this run: the device's stated (cumulative) epsilon must be at
        # least what these charges and releases alone cost.
        floor = cumulative_epsilons([e for e, _, _ in rows], rows[-1][1])[-1]
        if rows[-1][2] < floor * (1 - RDP_TOLERANCE):
            audit.problems.append(
                f"device {who}: states epsilon {rows[-1][2]:.6g}, below the {floor:.6g} its "
                f"accepted records of this run cost (dp_accounting RDP)"
            )
        epsilon[who] = rows[-1][2]
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
        "labels_rounds": labels_rounds,
        "epsilon_stated": epsilon,
        **({"central_epsilon_stated": central} if central is not None else {}),
    }
    return audit


_INNER_KIND = {
    RecordKind.SERVER_ROUND: RecordKind.DP_ROUND,
    RecordKind.LABELS_ROUND: RecordKind.LABEL_RELEASE,
}


def _accepted(rec: LedgerRecord, run_key: str | None, problems: list[str]) -> list[LedgerRecord]:
    """The verified device records a ``server-round`` or ``labels-round`` record accepted;
    each one that does not verify, is of the wrong kind or run, or names another round is a
    problem."""
    out = []
    for line in rec.body.get("accepted", []):
        try:
            inner = LedgerRecord.parse_checked(line)
        except (ValueError, TypeError) as err:
            problems.append(f"record {rec.seq}: an accepted device record {err}")
            continue
        who = pseudonym(inner.signer)
        if inner.kind != _INNER_KIND[RecordKind(rec.kind)]:
            problems.append(f"record {rec.seq}: accepted device {who}'s {inner.kind} record")
            continue
        if inner.body.get("round") != rec.body.get("round") or (
            run_key is not None and inner.body.get("run_id") != run_key
        ):
            problems.append(
                f"record {rec.seq}: accepted device {who}'s record for run "
                f"{inner.body.get('run_id')!r} round {inner.body.get('round')!r}"
            )
        out.append(inner)
    return out


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
        for line in rec.body.get("accepted", []) if rec.kind in _INNER_KIND else []:
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


def export_event(rec: LedgerRecord) -> dict[str, Any]:
    """The exported DP event of a ``dp-round`` or ``label-release`` record."""
    b = rec.body
    if rec.kind == RecordKind.LABEL_RELEASE:
        return {
            "mechanism": "randomized-response",
            "run_id": b["run_id"],
            "round": b["round"],
            "epsilon_label": b["epsilon_label"],
            "flip_rate": b["flip_rate"],
            "released": b["released"],
            "resent": b["resent"],
        }
    return {
        "mechanism": "dp-sgd",
        "run_id": b["run_id"],
        "round": b["round"],
        "noise_multiplier": b["noise_multiplier"],
        "sample_rate": b["sample_rate"],
        "steps": b["steps"],
    }


def exported_device_events(events: Sequence[Mapping[str, Any]]) -> list[DeviceEvent]:
    """The accounting events of a device's exported events (see :func:`export_event`)."""
    return [
        LabelRelease(float(e["epsilon_label"]), int(e["released"]))
        if e.get("mechanism") == "randomized-response"
        else SgdCharge(float(e["noise_multiplier"]), float(e["sample_rate"]), int(e["steps"]))
        for e in events
    ]


def export_events(audits: Sequence[LedgerAudit]) -> dict[str, Any]:
    """The DP events of every device, for anyone to recompute epsilon (no secrets in them)."""
    devices: dict[str, dict[str, Any]] = {}

    def add(records: Iterable[LedgerRecord], source: str) -> None:
        for rec in records:
            if rec.kind not in DEVICE_RECORD_KINDS:
                continue
            who = pseudonym(rec.signer)
            entry = devices.setdefault(
                who,
                {"device_id": who, "public_key": rec.signer, "source": source, "events": []},
            )
            event = export_event(rec)
            if any(
                (e["mechanism"], e["run_id"], e["round"])
                == (event["mechanism"], event["run_id"], event["round"])
                for e in entry["events"]
            ):
                continue
            entry["events"].append(event)
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
                if rec.kind in _INNER_KIND:
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
        "format": 2,
        "verified": all(a.ok for a in audits),
        "unit": "one comparison on one device (example-level DP-SGD; label DP for releases)",
        "mechanism": (
            "dp-sgd event: steps x PoissonSampled(sample_rate, Gaussian(noise_multiplier)); "
            "randomized-response event: each released comparison's preference bit flipped with "
            "probability flip_rate = 1/(1+e^epsilon_label), each comparison released once "
            "(parallel composition: the device pays one randomized response at its largest "
            "epsilon_label); composed in order (fedgaze.audit.recompute)"
        ),
        "devices": sorted(devices.values(), key=lambda d: d["device_id"]),
        "central": central,
    }
