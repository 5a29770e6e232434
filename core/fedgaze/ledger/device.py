"""The device's signed privacy ledger: one ``dp-round`` record per charged round, one
``label-release`` record per label release.

The device keeps two files: ``privacy_state.json`` (:mod:`fedgaze.privacy.state`, the working
accountant history with the secret noise seeds needed for exact replay) and ``ledger.jsonl``
(:mod:`fedgaze.ledger.records`, append-only, hash-chained, signed with ``device_key.pem``), the
auditable copy. The ledger never holds the noise seed or the data digests.

Order of writes: the privacy state is saved first (it is what the budget check reads), then
:func:`sync_ledger` appends a record for every event the ledger lacks. It runs on every train
message before anything else, so an event saved just before a crash is appended by the next
message; a retried round that was replayed adds nothing (its event is already recorded).
Records are appended in the order the device made its charges (a label release sits after the
DP-SGD charges it followed: :attr:`fedgaze.privacy.state.LabelEvent.after_charges`), each with
the cumulative epsilon of everything up to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedgaze.labels.rows import ReleasedLabel, rows_digest
from fedgaze.ledger.contract import (
    RecordKind,
    device_key_path,
    device_ledger_path,
    software_versions,
)
from fedgaze.ledger.keys import load_or_create_signing_key, pseudonym, public_key_b64
from fedgaze.ledger.records import JsonlLedger, LedgerRecord
from fedgaze.privacy.params import DeviceBudget
from fedgaze.privacy.state import LabelEvent, PrivacyEvent, PrivacyState


def dp_round_body(
    event: PrivacyEvent,
    *,
    device: str,
    epsilon: float,
    budget: DeviceBudget,
    time: str,
    versions: dict[str, str | None],
) -> dict[str, Any]:
    """The body of the ``dp-round`` record of ``event`` (pure)."""
    return {
        "run_id": event.run_id,
        "round": event.round,
        "device": device,
        "noise_multiplier": event.noise_multiplier,
        "sample_rate": event.sample_rate,
        "steps": event.steps,
        "max_grad_norm": event.max_grad_norm,
        "delta": budget.delta,
        "accountant": budget.accountant,
        "epsilon": epsilon,
        "epsilon_budget": budget.epsilon_budget,
        "versions": dict(versions),
        "time": time,
    }


def label_release_body(
    event: LabelEvent,
    *,
    earlier: tuple[ReleasedLabel, ...],
    device: str,
    epsilon: float,
    budget: DeviceBudget,
    time: str,
    versions: dict[str, str | None],
) -> dict[str, Any]:
    """The body of the ``label-release`` record of ``event`` (pure); ``earlier`` are the rows
    released before it, which its reply sends again."""
    return {
        "run_id": event.run_id,
        "round": event.round,
        "device": device,
        "epsilon_label": event.epsilon_label,
        "flip_rate": event.flip_rate,
        "source": event.source,
        "released": len(event.rows),
        "resent": len(earlier),
        "rows": len(earlier) + len(event.rows),
        "rows_sha256": rows_digest((*earlier, *event.rows)),
        "after_charges": event.after_charges,
        "delta": budget.delta,
        "accountant": budget.accountant,
        "epsilon": epsilon,
        "epsilon_budget": budget.epsilon_budget,
        "versions": dict(versions),
        "time": time,
    }


def recorded_keys(
    records: Iterable[LedgerRecord], kind: RecordKind = RecordKind.DP_ROUND
) -> set[tuple[str, int]]:
    """The ``(run_id, round)`` of every record of ``kind``."""
    return {
        (str(r.body.get("run_id")), int(r.body.get("round", -1))) for r in records if r.kind == kind
    }


def timeline(state: PrivacyState) -> list[PrivacyEvent | LabelEvent]:
    """Every charge and label release in the order the device made them."""
    out: list[PrivacyEvent | LabelEvent] = []
    labels = list(state.labels)
    for index, event in enumerate(state.events):
        while labels and labels[0].after_charges <= index:
            out.append(labels.pop(0))
        out.append(event)
    return out + labels


def epsilon_through(done: Sequence[PrivacyEvent | LabelEvent], budget: DeviceBudget) -> float:
    """Cumulative epsilon of a prefix ``done`` of :func:`timeline` (the state it was)."""
    charges = tuple(e for e in done if isinstance(e, PrivacyEvent))
    labels = tuple(e for e in done if isinstance(e, LabelEvent))
    return PrivacyState(charges, labels).epsilon(budget.delta, budget.accountant)


def missing_events(
    state: PrivacyState, records: Sequence[LedgerRecord]
) -> list[tuple[int, PrivacyEvent]]:
    """``(index in state, event)`` of every charged event that has no ledger record (pure)."""
    done = recorded_keys(records)
    return [(i, e) for i, e in enumerate(state.events) if e.key not in done]


def sync_ledger(
    device_dir: str | Path,
    state: PrivacyState,
    budget: DeviceBudget,
    kind: RecordKind = RecordKind.DP_ROUND,
) -> dict[tuple[str, int], LedgerRecord]:
    """Append a signed record for every charge and label release of ``state`` the ledger lacks.

    Creates the device key and the ledger on first use. A record's ``epsilon`` is the
    cumulative epsilon of everything the device did up to and including it. Returns every
    record of ``kind`` (``dp-round`` or ``label-release``) by ``(run_id, round)``.
    """
    key = load_or_create_signing_key(device_key_path(device_dir))
    device = pseudonym(public_key_b64(key))
    with JsonlLedger.open(device_ledger_path(device_dir), key) as ledger:
        charged = recorded_keys(ledger.records)
        released = recorded_keys(ledger.records, RecordKind.LABEL_RELEASE)
        events = timeline(state)
        for position, event in enumerate(events):
            if event.key in (charged if isinstance(event, PrivacyEvent) else released):
                continue
            common: dict[str, Any] = {
                "device": device,
                "epsilon": epsilon_through(events[: position + 1], budget),
                "budget": budget,
                "time": datetime.now(UTC).isoformat(timespec="seconds"),
                "versions": software_versions(),
            }
            if isinstance(event, PrivacyEvent):
                ledger.append(RecordKind.DP_ROUND, dp_round_body(event, **common))
            else:
                body = label_release_body(event, earlier=state.rows_before(event), **common)
                ledger.append(RecordKind.LABEL_RELEASE, body)
        return {
            (str(r.body["run_id"]), int(r.body["round"])): r
            for r in ledger.records
            if r.kind == kind
        }
