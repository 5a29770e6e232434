"""The device's signed privacy ledger: one ``dp-round`` record per charged round.

The device keeps two files: ``privacy_state.json`` (:mod:`fedgaze.privacy.state`, the working
accountant history with the secret noise seeds needed for exact replay) and ``ledger.jsonl``
(:mod:`fedgaze.ledger.records`, append-only, hash-chained, signed with ``device_key.pem``), the
auditable copy. The ledger never holds the noise seed or the data digests.

Order of writes: the privacy state is saved first (it is what the budget check reads), then
:func:`sync_ledger` appends a record for every event the ledger lacks. It runs on every train
message before anything else, so an event saved just before a crash is appended by the next
message; a retried round that was replayed adds nothing (its event is already recorded).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedgaze.ledger.contract import (
    RecordKind,
    device_key_path,
    device_ledger_path,
    software_versions,
)
from fedgaze.ledger.keys import load_or_create_signing_key, pseudonym, public_key_b64
from fedgaze.ledger.records import JsonlLedger, LedgerRecord
from fedgaze.privacy.accounting import epsilon_for
from fedgaze.privacy.params import DeviceBudget
from fedgaze.privacy.state import PrivacyEvent, PrivacyState


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


def recorded_keys(records: Iterable[LedgerRecord]) -> set[tuple[str, int]]:
    """The ``(run_id, round)`` of every ``dp-round`` record."""
    return {
        (str(r.body.get("run_id")), int(r.body.get("round", -1)))
        for r in records
        if r.kind == RecordKind.DP_ROUND
    }


def missing_events(
    state: PrivacyState, records: Sequence[LedgerRecord]
) -> list[tuple[int, PrivacyEvent]]:
    """``(index in state, event)`` of every charged event that has no ledger record (pure)."""
    done = recorded_keys(records)
    return [(i, e) for i, e in enumerate(state.events) if e.key not in done]


def sync_ledger(
    device_dir: str | Path, state: PrivacyState, budget: DeviceBudget
) -> dict[tuple[str, int], LedgerRecord]:
    """Append a signed ``dp-round`` record for every event of ``state`` the ledger lacks.

    Creates the device key and the ledger on first use. The record's ``epsilon`` is the
    cumulative epsilon of the state's events up to and including that one. Returns every
    ``dp-round`` record by ``(run_id, round)``.
    """
    key = load_or_create_signing_key(device_key_path(device_dir))
    device = pseudonym(public_key_b64(key))
    with JsonlLedger.open(device_ledger_path(device_dir), key) as ledger:
        for index, event in missing_events(state, ledger.records):
            history = [e.entry for e in state.events[: index + 1]]
            body = dp_round_body(
                event,
                device=device,
                epsilon=epsilon_for(history, budget.delta, budget.accountant),
                budget=budget,
                time=datetime.now(UTC).isoformat(timespec="seconds"),
                versions=software_versions(),
            )
            ledger.append(RecordKind.DP_ROUND, body)
        return {
            (str(r.body["run_id"]), int(r.body["round"])): r
            for r in ledger.records
            if r.kind == RecordKind.DP_ROUND
        }
