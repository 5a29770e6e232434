"""Signed, hash-chained ledgers: round trip, tamper detection naming the record, device sync."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from dp_accounting import dp_event, rdp

from fedgaze.audit.verify import RDP_TOLERANCE, audit_path, export_events
from fedgaze.ledger.contract import device_key_path as key_path
from fedgaze.ledger.contract import device_ledger_path as ledger_path
from fedgaze.ledger.device import missing_events, sync_ledger
from fedgaze.ledger.keys import (
    KeyFileError,
    load_or_create_signing_key,
    pseudonym,
    public_key_b64,
)
from fedgaze.ledger.records import (
    JsonlLedger,
    LedgerRecord,
    SqliteLedger,
    verify_jsonl,
    verify_sqlite,
)
from fedgaze.privacy.params import DeviceBudget
from fedgaze.privacy.state import PrivacyEvent, PrivacyState

BUDGET = DeviceBudget(delta=1e-5, epsilon_budget=20.0)
SECRET_SEED = 4_242_424_242_424_242


def _event(rnd: int, run: str = "run-a", rate: float = 1 / 13) -> PrivacyEvent:
    return PrivacyEvent(
        run_id=run,
        round=rnd,
        noise_multiplier=1.1,
        sample_rate=rate,
        steps=13 if rate < 1 else 1,
        max_grad_norm=1.0,
        input_digest="ab" * 32,
        output_digest="cd" * 32,
        noise_seed=SECRET_SEED + rnd,
    )


def _state(*events: PrivacyEvent) -> PrivacyState:
    return PrivacyState(tuple(events))


@pytest.fixture
def device(tmp_path: Path) -> Path:
    """A device directory whose ledger holds 3 dp-round records (seq 0, 1, 2)."""
    directory = tmp_path / "dev"
    sync_ledger(directory, _state(_event(1), _event(2), _event(3, rate=1.0)), BUDGET)
    return directory


def _problems_at(report_problems: list[object], where: str) -> list[str]:
    return [str(p) for p in report_problems if getattr(p, "where", None) == where]


# ------------------------------------------------------------------------ keys and records


def test_key_created_owner_only_and_wider_mode_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    key = load_or_create_signing_key(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert public_key_b64(load_or_create_signing_key(path)) == public_key_b64(key)
    assert len(pseudonym(public_key_b64(key))) == 16
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match=r"k\.pem.*0644"):
        load_or_create_signing_key(path)


def test_round_trip_and_verify(device: Path) -> None:
    report = verify_jsonl(ledger_path(device))
    assert report.ok and [r.seq for r in report.records] == [0, 1, 2]
    assert report.signer == public_key_b64(load_or_create_signing_key(key_path(device)))
    for line in ledger_path(device).read_text().splitlines():
        assert LedgerRecord.parse_checked(line).line() == line
    with JsonlLedger.open(ledger_path(device), load_or_create_signing_key(key_path(device))) as led:
        rec = led.append("note", {"x": 1})
    assert rec.seq == 3 and verify_jsonl(ledger_path(device)).ok


def test_ledger_never_holds_the_secret_seed_or_digests(device: Path) -> None:
    text = ledger_path(device).read_text()
    for secret in (str(SECRET_SEED + 1), "noise_seed", "input_digest", "ab" * 32, "cd" * 32):
        assert secret not in text
    body = json.loads(text.splitlines()[0])["body"]
    assert body["run_id"] == "run-a" and body["round"] == 1 and body["steps"] == 13
    assert set(body["versions"]) == {"fedgaze", "opacus", "torch", "dp_accounting"}


def test_other_signer_is_refused(device: Path, tmp_path: Path) -> None:
    other = public_key_b64(load_or_create_signing_key(tmp_path / "other.pem"))
    report = verify_jsonl(ledger_path(device), {other})
    assert not report.ok and "not a trusted key" in str(report.problems[0])


# ----------------------------------------------------------------- tampering: device JSONL


def test_every_single_byte_flip_of_a_record_fails_naming_it(device: Path, tmp_path: Path) -> None:
    data = ledger_path(device).read_bytes()
    start = data.index(b"\n") + 1
    end = data.index(b"\n", start) + 1  # record 1 (line 2), its line end included
    copy = tmp_path / "ledger.jsonl"
    for pos in range(start, end):
        for mask in (0x01, 0x20, 0x80):
            tampered = bytearray(data)
            tampered[pos] ^= mask
            copy.write_bytes(bytes(tampered))
            report = verify_jsonl(copy)
            assert not report.ok, f"flip {mask:#x} at byte {pos - start} went unnoticed"
            assert _problems_at(report.problems, "line 2"), (pos - start, report.problems)


def test_dropped_record_is_a_gap(device: Path) -> None:
    lines = ledger_path(device).read_text().splitlines(keepends=True)
    ledger_path(device).write_text(lines[0] + lines[2])
    problems = [str(p) for p in verify_jsonl(ledger_path(device)).problems]
    assert any(p.startswith("record 2 (line 2)") and "record 1 is missing" in p for p in problems)


def test_swapped_records_are_out_of_order(device: Path) -> None:
    lines = ledger_path(device).read_text().splitlines(keepends=True)
    ledger_path(device).write_text(lines[0] + lines[2] + lines[1])
    problems = [str(p) for p in verify_jsonl(ledger_path(device)).problems]
    assert any(p.startswith("record 2 (line 2): out of order") for p in problems)
    assert any(p.startswith("record 1 (line 3)") for p in problems)


def test_duplicated_record_is_a_replay(device: Path) -> None:
    lines = ledger_path(device).read_text().splitlines(keepends=True)
    ledger_path(device).write_text(lines[0] + lines[1] + lines[1] + lines[2])
    problems = [str(p) for p in verify_jsonl(ledger_path(device)).problems]
    assert any(p.startswith("record 1 (line 3): duplicate") and "replayed" in p for p in problems)
    assert not any("line 4" in p for p in problems)  # the rest of the chain still holds


def test_truncated_file_names_the_torn_record(device: Path) -> None:
    data = ledger_path(device).read_bytes()
    ledger_path(device).write_bytes(data[: len(data) - 40])
    problems = [str(p) for p in verify_jsonl(ledger_path(device)).problems]
    assert problems == [
        "record 2 (line 3): is truncated (the final line has no line end: a torn append)"
    ]


def test_writer_sets_a_torn_line_aside_and_continues(device: Path) -> None:
    path = ledger_path(device)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])  # crash in the middle of appending record 2
    with JsonlLedger.open(path, load_or_create_signing_key(key_path(device))) as led:
        assert [r.seq for r in led.records] == [0, 1]
    assert len(list(device.glob("ledger.jsonl.torn-*"))) == 1
    # The charge of the torn record is still in the state: the next sync re-appends it.
    sync_ledger(device, _state(_event(1), _event(2), _event(3, rate=1.0)), BUDGET)
    report = verify_jsonl(path)
    assert report.ok and [r.body["round"] for r in report.records] == [1, 2, 3]


# ---------------------------------------------------------------- tampering: server SQLite


@pytest.fixture
def server_db(tmp_path: Path) -> Path:
    path = tmp_path / "srv" / "server_ledger.db"
    key = load_or_create_signing_key(tmp_path / "srv" / "server_key.pem")
    with SqliteLedger(path, key) as led:
        led.append("run-start", {"settings": {"run_key": "r"}})
        for rnd in (1, 2, 3):
            led.append("server-round", {"round": rnd, "accepted": [], "refused": []})
    return path


def _sql(path: Path, statement: str, *params: object) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(statement, params)
    conn.close()


def _line(path: Path, seq: int) -> str:
    conn = sqlite3.connect(path)
    (line,) = conn.execute("SELECT line FROM records WHERE seq = ?", (seq,)).fetchone()
    conn.close()
    return str(line)


def test_sqlite_ledger_verifies_and_every_char_flip_fails(server_db: Path) -> None:
    assert verify_sqlite(server_db).ok
    original = _line(server_db, 2)
    for pos in range(len(original)):
        tampered = original[:pos] + chr(ord(original[pos]) ^ 0x01) + original[pos + 1 :]
        _sql(server_db, "UPDATE records SET line = ? WHERE seq = 2", tampered)
        report = verify_sqlite(server_db)
        assert _problems_at(report.problems, "row seq=2"), (pos, report.problems)
    _sql(server_db, "UPDATE records SET line = ? WHERE seq = 2", original)
    assert verify_sqlite(server_db).ok


def test_sqlite_drop_swap_duplicate_truncate(server_db: Path, tmp_path: Path) -> None:
    def variant(name: str) -> Path:
        copy = tmp_path / f"{name}.db"
        shutil.copy(server_db, copy)
        return copy

    dropped = variant("dropped")
    _sql(dropped, "DELETE FROM records WHERE seq = 2")
    assert any("record 2 is missing" in str(p) for p in verify_sqlite(dropped).problems)

    swapped = variant("swapped")
    one, two = _line(swapped, 1), _line(swapped, 2)
    _sql(swapped, "UPDATE records SET line = ? WHERE seq = 1", two)
    _sql(swapped, "UPDATE records SET line = ? WHERE seq = 2", one)
    problems = [str(p) for p in verify_sqlite(swapped).problems]
    assert any(p.startswith("record 2 (row seq=1)") for p in problems)
    assert any(p.startswith("record 1 (row seq=2)") for p in problems)

    duplicated = variant("duplicated")
    _sql(duplicated, "INSERT INTO records (seq, line) VALUES (4, ?)", _line(duplicated, 1))
    problems = [str(p) for p in verify_sqlite(duplicated).problems]
    assert any(p.startswith("record 1 (row seq=4): duplicate") for p in problems)

    truncated = variant("truncated")
    _sql(truncated, "UPDATE records SET line = ? WHERE seq = 3", _line(truncated, 3)[:50])
    problems = [str(p) for p in verify_sqlite(truncated).problems]
    assert any(p.startswith("record 3 (row seq=3): not valid JSON") for p in problems)


# ------------------------------------------------------------------------ device sync


def test_sync_appends_a_missed_charge_once_and_replays_add_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "dev"
    state = _state(_event(1))
    sync_ledger(directory, state, BUDGET)
    # Crash between saving the state (round 2 charged) and appending its record:
    state = state.with_event(_event(2))
    with JsonlLedger.open(
        ledger_path(directory), load_or_create_signing_key(key_path(directory))
    ) as led:
        assert [e.key for _, e in missing_events(state, led.records)] == [("run-a", 2)]
    records = sync_ledger(directory, state, BUDGET)
    assert set(records) == {("run-a", 1), ("run-a", 2)}
    # A retried round 2 is replayed (the state does not change): no second record.
    again = sync_ledger(directory, state, BUDGET)
    assert again[("run-a", 2)] == records[("run-a", 2)]
    assert len(ledger_path(directory).read_text().splitlines()) == 2
    assert audit_path(ledger_path(directory), pld=False)[0].ok


def test_stated_epsilon_must_match_dp_accounting(tmp_path: Path) -> None:
    """A record that is validly signed but overstates or understates epsilon is flagged."""
    directory = tmp_path / "dev"
    records = sync_ledger(directory, _state(_event(1)), BUDGET)
    body = dict(records[("run-a", 1)].body, round=2, epsilon=0.1)
    with JsonlLedger.open(
        ledger_path(directory), load_or_create_signing_key(key_path(directory))
    ) as led:
        led.append("dp-round", body)
    (audit,) = audit_path(ledger_path(directory), pld=False)
    assert audit.report.ok and not audit.ok
    assert any(p.startswith("record 1: stated cumulative epsilon 0.1") for p in audit.problems)


def test_export_recomputes_to_the_recorded_epsilons(device: Path) -> None:
    audits = audit_path(ledger_path(device))
    assert audits[0].ok
    assert audits[0].summary["epsilon_pld"] < audits[0].summary["epsilon_rdp"]
    exported = json.loads(json.dumps(export_events(audits)))
    assert exported["central"] is None and exported["verified"] is True
    (dev,) = exported["devices"]
    acc = rdp.RdpAccountant()
    for ev in dev["events"]:
        assert set(ev) == {
            "mechanism",
            "round",
            "run_id",
            "noise_multiplier",
            "sample_rate",
            "steps",
        }
        assert ev["mechanism"] == "dp-sgd"
        acc.compose(
            dp_event.PoissonSampledDpEvent(
                ev["sample_rate"], dp_event.GaussianDpEvent(ev["noise_multiplier"])
            ),
            ev["steps"],
        )
    assert acc.get_epsilon(dev["delta"]) == pytest.approx(dev["epsilon"], rel=RDP_TOLERANCE)
    assert dev["device_id"] == audits[0].summary["device"] and dev["accountant"] == "rdp"
