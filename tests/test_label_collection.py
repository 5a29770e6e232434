"""The server's side of the labels round: the wire rows, the record check, the durable store."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, RecordDict

from fedgaze.data.synthetic.cohort import generate_cohort
from fedgaze.federation.events import DeviceEpsilon, Labelled, event_json, parse_event
from fedgaze.federation.protocol import (
    LabelKey,
    Record,
    ReplyMetrics,
    ReplyStatus,
    labels_record,
    parse_label_rows,
    reply_content,
)
from fedgaze.federation.settings import LabelPlan, ServerSettings, SettingsError
from fedgaze.labels.release import release_labels
from fedgaze.labels.rows import ReleasedLabel
from fedgaze.labels.store import DoubleRelease, add_releases, count_labels, stored_labels
from fedgaze.ledger.contract import RecordKind
from fedgaze.ledger.device import sync_ledger
from fedgaze.ledger.keys import load_or_create_signing_key, pseudonym, public_key_b64
from fedgaze.ledger.records import JsonlLedger, LedgerRecord
from fedgaze.model.factory import initial_state
from fedgaze.privacy.label_dp import flip_rate
from fedgaze.privacy.params import DeviceBudget
from fedgaze.privacy.state import PrivacyState
from fedgaze.server.ledger import RecordRefused, check_label_record
from settings_factory import server_settings

PLAN = LabelPlan(run_key="run", server_round=3, epsilon_label=2.0)
BUDGET = DeviceBudget(delta=1e-5, epsilon_budget=8.0)


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> tuple[tuple[ReleasedLabel, ...], str]:
    """A real device's rows and its signed label-release line for :data:`PLAN`."""
    device = generate_cohort(1, seed=5, comparisons_per_device=6)[0]
    outcome = release_labels(
        PrivacyState(),
        device.queries,
        device.calibration,
        initial_state(16, seed=0),
        run_id=PLAN.run_key,
        round=PLAN.server_round,
        epsilon_label=PLAN.epsilon_label,
        source=PLAN.label_source,
        budget=BUDGET,
    )
    directory = tmp_path_factory.mktemp("dev")
    record = sync_ledger(directory, outcome.new_state, BUDGET, RecordKind.LABEL_RELEASE)
    return outcome.rows, record[("run", 3)].line()


def _check(
    line: str | None, rows: tuple[ReleasedLabel, ...], plan: LabelPlan = PLAN
) -> LedgerRecord:
    return check_label_record(line, plan=plan, rows=rows, pinned_key=None, max_device_epsilon=None)


def test_a_valid_release_is_admitted(released: tuple[tuple[ReleasedLabel, ...], str]) -> None:
    rows, line = released
    record = _check(line, rows)
    assert record.kind == RecordKind.LABEL_RELEASE and record.body["rows"] == len(rows)


def _resigned(line: str, kind: RecordKind = RecordKind.LABEL_RELEASE, **changes: object) -> str:
    """The record with ``changes``, signed again by a fresh key (a hostile device)."""
    body = dict(LedgerRecord.parse(line).body)
    body.update(changes)
    with tempfile.TemporaryDirectory() as tmp:
        key = load_or_create_signing_key(Path(tmp) / "k.pem")
        body["device"] = pseudonym(public_key_b64(key))
        with JsonlLedger.open(Path(tmp) / "l.jsonl", key) as ledger:
            return ledger.append(kind, body).line()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("none", "no signed label-release record"),
        ("tampered", "does not verify"),
        ("flip", "flip_rate"),
        ("epsilon_label", "epsilon_label is 4.0, the server asked 2.0"),
        ("round", "round is 2"),
        ("rows", "the reply carries"),
        ("digest", "rows_sha256"),
        ("over", "exceeds its budget"),
        ("kind", "not 'label-release'"),
    ],
)
def test_bad_releases_are_refused_naming_why(
    released: tuple[tuple[ReleasedLabel, ...], str], case: str, reason: str
) -> None:
    rows, line = released
    bad_line: str | None = line
    bad_rows = rows
    if case == "none":
        bad_line = None
    elif case == "tampered":
        data = json.loads(line)
        data["body"]["epsilon"] = 0.0
        bad_line = json.dumps(data)
    elif case == "flip":
        bad_line = _resigned(line, flip_rate=flip_rate(2.0) / 2)
    elif case == "epsilon_label":
        bad_line = _resigned(line, epsilon_label=4.0, flip_rate=flip_rate(4.0))
    elif case == "round":
        bad_line = _resigned(line, round=2)
    elif case == "rows":
        bad_rows = rows[:-1]
    elif case == "digest":
        first = rows[0].model_copy(update={"right_preferred": 1 - rows[0].right_preferred})
        bad_rows = (first, *rows[1:])
    elif case == "over":
        bad_line = _resigned(line, epsilon=9.0, epsilon_budget=8.0)
    elif case == "kind":
        bad_line = _resigned(line, RecordKind.DP_ROUND)
    with pytest.raises(RecordRefused, match=reason):
        _check(bad_line, bad_rows)


def test_rows_travel_as_parallel_lists_and_bad_rows_are_named(
    released: tuple[tuple[ReleasedLabel, ...], str],
) -> None:
    rows, _ = released
    content = reply_content("d", ReplyStatus.RELEASED, ReplyMetrics(3, len(rows)))
    content[Record.LABELS.value] = labels_record(rows)
    assert parse_label_rows(content) == rows
    record = labels_record(rows)
    record[LabelKey.RIGHT_PREFERRED.value] = [2] + [r.right_preferred for r in rows[1:]]
    bad = RecordDict({Record.LABELS.value: record})
    with pytest.raises(ValueError, match="labels row 0: right_preferred"):
        parse_label_rows(bad)
    short = labels_record(rows)
    short[LabelKey.FLIP_RATES.value] = [0.1]
    with pytest.raises(ValueError, match="differ in length"):
        parse_label_rows(RecordDict({Record.LABELS.value: short}))
    twice = labels_record((*rows, rows[0]))
    with pytest.raises(ValueError, match=f"labels row {len(rows)}: comparison .* repeats row 0"):
        parse_label_rows(RecordDict({Record.LABELS.value: twice}))
    with pytest.raises(ValueError, match="lacks its 'labels' record"):
        parse_label_rows(RecordDict({"x": ConfigRecord({})}))


def test_the_store_keeps_each_release_once_and_refuses_a_double_release(
    tmp_path: Path, released: tuple[tuple[ReleasedLabel, ...], str]
) -> None:
    rows, _ = released
    db = tmp_path / "labels.db"
    assert count_labels(db) == (0, 0)
    added = add_releases(db, "dev-a", rows, run_key="run", round=3, record_hash="h1")
    assert (added.stored, added.already) == (len(rows), 0)
    again = add_releases(db, "dev-a", rows, run_key="run2", round=1, record_hash="h2")
    assert (again.stored, again.already) == (0, len(rows))
    add_releases(db, "dev-b", rows[:2], run_key="run", round=3, record_hash="h3")
    assert count_labels(db) == (len(rows) + 2, 2)
    flipped = rows[-1].model_copy(update={"right_preferred": 1 - rows[-1].right_preferred})
    extra = ReleasedLabel(
        prompt_id="new", left_id="a", right_id="b", right_preferred=1, flip_rate=0.1
    )
    with pytest.raises(DoubleRelease, match="double release"):
        add_releases(db, "dev-a", (extra, flipped), run_key="run", round=4, record_hash="h4")
    assert count_labels(db) == (len(rows) + 2, 2)  # the whole reply was refused
    stored = list(stored_labels(db))
    assert [s.label for s in stored[: len(rows)]] == list(rows)
    assert stored[0].device == "dev-a" and stored[0].run_key == "run"


def test_labels_settings_and_events() -> None:
    settings = server_settings(epsilon_label=2.0)
    plan = settings.label_plan()
    assert plan is not None and plan.server_round == settings.rounds
    assert LabelPlan.from_config(plan.to_config()) == plan
    assert server_settings().label_plan() is None
    with pytest.raises(SettingsError, match="label-source"):
        LabelPlan.from_config({**plan.to_config(), "label-source": "guess"})
    assert isinstance(settings, ServerSettings)
    event = Labelled(2, 10, 1, 0, 0, (DeviceEpsilon("d", 7.5, "released"),))
    back = parse_event(json.loads(json.dumps(event_json(event))))
    assert back == event
