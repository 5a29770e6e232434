"""Private preference labels on a device: randomized response, accounting, release once, ledger."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from fedgaze.audit.recompute import LabelRelease, SgdCharge, cumulative_epsilons
from fedgaze.audit.verify import RDP_TOLERANCE, audit_path, export_events
from fedgaze.data.schema import PREF_LEFT, PREF_RIGHT, PREF_TIE, Device, Query
from fedgaze.data.synthetic.cohort import generate_cohort
from fedgaze.labels.release import (
    LabelOutcome,
    comparison_key,
    preference_bits,
    releasable,
    release_labels,
)
from fedgaze.labels.rows import ReleasedLabel, rows_digest
from fedgaze.ledger.contract import LABEL_RELEASE_FIELDS, RecordKind
from fedgaze.ledger.contract import device_ledger_path as ledger_path
from fedgaze.ledger.device import sync_ledger
from fedgaze.model.factory import initial_state
from fedgaze.model.weights import ModelState
from fedgaze.privacy.accounting import (
    BudgetExhausted,
    calibrate_noise_multiplier,
    epsilon_for,
    worst_case_epsilon,
)
from fedgaze.privacy.label_dp import (
    effective_labels,
    expected_accuracy,
    flip_rate,
    flip_rate_matches,
    randomized_response,
)
from fedgaze.privacy.params import DeviceBudget
from fedgaze.privacy.state import LabelEvent, PrivacyEvent, PrivacyState, PrivacyStateError

BUDGET = DeviceBudget(delta=1e-5, epsilon_budget=12.0)
SGD = (1.1, 0.1, 30)


@pytest.fixture(scope="module")
def device() -> Device:
    return generate_cohort(1, seed=3, comparisons_per_device=12)[0]


@pytest.fixture(scope="module")
def weights() -> ModelState:
    return initial_state(16, seed=0)


def _charge(rnd: int) -> PrivacyEvent:
    return PrivacyEvent(run_id="run", round=rnd, noise_multiplier=1.1, sample_rate=0.1, steps=30)


def test_flip_rate_is_the_randomized_response_probability() -> None:
    assert flip_rate(2.0) == pytest.approx(1 / (1 + math.e**2))
    assert flip_rate_matches(2.0, 1 / (1 + math.exp(2.0)))
    assert not flip_rate_matches(2.0, flip_rate(2.0) / 2) and not flip_rate_matches(2.0, "x")  # type: ignore[arg-type]
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="epsilon_label"):
            flip_rate(bad)
    bits = np.zeros(200_000, dtype=np.int64)
    flipped = randomized_response(bits, 1.0, seed=7).mean()
    assert flipped == pytest.approx(flip_rate(1.0), abs=0.003)
    assert not np.array_equal(
        randomized_response(bits[:64], 0.5), randomized_response(bits[:64], 0.5)
    )
    with pytest.raises(ValueError, match="bits 0 or 1"):
        randomized_response([0, 2], 1.0)


def test_debiasing_arithmetic() -> None:
    assert expected_accuracy(1.0, 2.0) == pytest.approx(1 - flip_rate(2.0))
    assert expected_accuracy(0.7, None) == 0.7
    assert effective_labels(100, 1.0) == 100 and effective_labels(100, 0.5) == 0


def test_a_label_release_composes_into_the_budget() -> None:
    alone = epsilon_for([], 1e-5, label_epsilon=2.0)
    assert alone == pytest.approx(2.0)  # pure epsilon_label-DP: basic composition is exact
    sgd = epsilon_for([SGD], 1e-5)
    both = epsilon_for([SGD], 1e-5, label_epsilon=2.0)
    assert sgd < both <= sgd + 2.0 + 1e-12
    assert epsilon_for([SGD], 1e-5, label_epsilon=4.0) > both
    assert epsilon_for([SGD], 1e-5, "prv", label_epsilon=2.0) <= both + 1e-9
    # dp_accounting, independently, in the order the device made them
    events = [SgdCharge(*SGD), LabelRelease(2.0), SgdCharge(*SGD)]
    recomputed = cumulative_epsilons(events, 1e-5)
    device = [sgd, both, epsilon_for([SGD, SGD], 1e-5, label_epsilon=2.0)]
    for mine, theirs in zip(device, recomputed, strict=True):
        assert mine == pytest.approx(theirs, rel=RDP_TOLERANCE)


def test_planning_leaves_room_for_the_label_release() -> None:
    sigma = calibrate_noise_multiplier(8.0, rounds=3, local_epochs=1, delta=1e-5, label_epsilon=2.0)
    assert sigma > calibrate_noise_multiplier(8.0, rounds=3, local_epochs=1, delta=1e-5)
    worst = worst_case_epsilon(sigma, rounds=3, local_epochs=1, delta=1e-5, label_epsilon=2.0)
    assert worst <= 8.0
    with pytest.raises(ValueError, match="leaves no room"):
        calibrate_noise_multiplier(2.0, rounds=3, local_epochs=1, delta=1e-5, label_epsilon=2.0)


def test_every_pairwise_comparison_with_ids_is_releasable_whatever_its_label(
    device: Device,
) -> None:
    pairwise = [q for q in device.queries if q.pairwise]
    assert releasable(device.queries) == pairwise
    tie = dataclasses.replace(pairwise[0], preference=PREF_TIE)
    unlabelled = dataclasses.replace(pairwise[1], preference=None)
    no_ids = dataclasses.replace(pairwise[2], served=None)
    assert releasable([tie, unlabelled, no_ids]) == [tie, unlabelled]
    assert comparison_key(pairwise[0]) == (
        pairwise[0].served.prompt_id,  # type: ignore[union-attr]
        pairwise[0].served.response_left_id,  # type: ignore[union-attr]
        pairwise[0].served.response_right_id,  # type: ignore[union-attr]
    )


def test_a_bit_depends_on_its_own_comparison_only(device: Device, weights: ModelState) -> None:
    """The accounting shipped (parallel composition) needs this: changing, relabelling or
    dropping one comparison leaves every other comparison's bit unchanged."""
    queries = releasable(device.queries)
    for source in ("implicit-only", "explicit-first"):
        bits = preference_bits(queries, device.calibration, weights, source)
        other = queries[3]
        changed = dataclasses.replace(
            other,
            preference=PREF_LEFT if other.preference == PREF_RIGHT else PREF_RIGHT,
            gaze=queries[5].gaze,
            mouse=queries[5].mouse,
        )
        swapped = [*queries[:3], changed, *queries[4:]]
        again = preference_bits(swapped, device.calibration, weights, source)
        keep = [i for i in range(len(queries)) if i != 3]
        assert np.array_equal(bits[keep], again[keep])
        dropped = preference_bits(queries[:3] + queries[4:], device.calibration, weights, source)
        assert np.array_equal(bits[keep], dropped)


def test_explicit_first_takes_the_persons_choice(device: Device, weights: ModelState) -> None:
    queries = releasable(device.queries)
    labelled = [q for q in queries if q.is_labelled_comparison]
    bits = preference_bits(labelled, device.calibration, weights, "explicit-first")
    assert bits.tolist() == [q.label_right for q in labelled]
    implicit = preference_bits(labelled, device.calibration, weights, "implicit-only")
    assert set(implicit.tolist()) <= {0, 1}


def _release(
    state: PrivacyState,
    device: Device,
    weights: ModelState,
    rnd: int = 3,
    eps: float = 2.0,
    budget: DeviceBudget = BUDGET,
) -> LabelOutcome:
    return release_labels(
        state,
        device.queries,
        device.calibration,
        weights,
        run_id="run",
        round=rnd,
        epsilon_label=eps,
        source="explicit-first",
        budget=budget,
    )


def test_release_once_replay_and_resend(
    device: Device, weights: ModelState, tmp_path: Path
) -> None:
    state = PrivacyState((_charge(1), _charge(2)))
    first = _release(state, device, weights)
    n = len(releasable(device.queries))
    assert not first.replayed and len(first.rows) == n == len(first.event.rows)
    assert first.event.after_charges == 2 and first.new_state.label_epsilon == 2.0
    assert first.epsilon == pytest.approx(first.new_state.epsilon(BUDGET.delta))
    assert all(r.flip_rate == flip_rate(2.0) for r in first.rows)
    path = tmp_path / "privacy_state.json"
    first.new_state.save(path)
    loaded = PrivacyState.load(path)
    assert loaded == first.new_state
    retry = _release(loaded, device, weights)
    assert retry.replayed and retry.rows == first.rows and retry.new_state is loaded
    later = _release(loaded, device, weights, rnd=4)
    assert not later.event.rows and later.rows == first.rows  # resent, nothing drawn
    assert later.new_state.epsilon(BUDGET.delta) == pytest.approx(first.epsilon)


def test_a_release_over_budget_is_refused_before_drawing(
    device: Device, weights: ModelState
) -> None:
    state = PrivacyState((_charge(1), _charge(2)))
    spent = state.epsilon(BUDGET.delta)
    tight = DeviceBudget(delta=1e-5, epsilon_budget=spent + 0.5)
    with pytest.raises(BudgetExhausted) as err:
        _release(state, device, weights, budget=tight)
    assert err.value.spent == pytest.approx(spent) and err.value.next_epsilon > tight.epsilon_budget
    assert _release(state, device, weights, eps=0.4, budget=tight).rows


def test_the_state_refuses_a_double_release(device: Device, weights: ModelState) -> None:
    first = _release(PrivacyState(), device, weights)
    again = first.event.model_copy(update={"round": 9})
    with pytest.raises(Exception, match="released twice"):
        first.new_state.with_labels(again)
    data = first.new_state.to_json()
    data["labels"].append(dict(data["labels"][0], round=9))
    with pytest.raises(PrivacyStateError, match="duplicate"):
        PrivacyState.from_json(data, "state.json")
    old = {"format": 1, "events": [_charge(1).model_dump()]}
    assert PrivacyState.from_json(old).labels == ()


def test_the_release_is_signed_into_the_ledger_and_verifies(
    device: Device, weights: ModelState, tmp_path: Path
) -> None:
    state = PrivacyState((_charge(1),))
    outcome = _release(state, device, weights)
    final = outcome.new_state.with_event(_charge(2))
    directory = tmp_path / "dev"
    records = sync_ledger(directory, final, BUDGET, RecordKind.LABEL_RELEASE)
    record = records[("run", 3)]
    assert set(record.body) == set(LABEL_RELEASE_FIELDS)
    assert record.body["rows_sha256"] == rows_digest(outcome.rows)
    assert record.body["released"] == len(outcome.rows) and record.body["resent"] == 0
    assert record.body["epsilon"] == pytest.approx(outcome.epsilon)
    (audit,) = audit_path(ledger_path(directory))
    assert audit.ok, audit.problems
    assert audit.summary["label_releases"] == 1 and audit.summary["charges"] == 2
    assert audit.summary["epsilon_stated"] == pytest.approx(final.epsilon(BUDGET.delta))
    exported = export_events([audit])
    mechanisms = [e["mechanism"] for e in exported["devices"][0]["events"]]
    assert mechanisms == ["dp-sgd", "randomized-response", "dp-sgd"]


def test_verify_refutes_a_record_whose_flip_rate_does_not_match(
    device: Device, weights: ModelState, tmp_path: Path
) -> None:
    from fedgaze.ledger.contract import device_key_path
    from fedgaze.ledger.keys import load_or_create_signing_key
    from fedgaze.ledger.records import JsonlLedger

    outcome = _release(PrivacyState(), device, weights)
    directory = tmp_path / "dev"
    record = sync_ledger(directory, outcome.new_state, BUDGET, RecordKind.LABEL_RELEASE)[("run", 3)]
    forged = dict(record.body, round=4, flip_rate=record.body["flip_rate"] / 2)
    key = load_or_create_signing_key(device_key_path(directory))
    with JsonlLedger.open(ledger_path(directory), key) as ledger:
        ledger.append(RecordKind.LABEL_RELEASE, forged)
    (audit,) = audit_path(ledger_path(directory))
    assert audit.report.ok and not audit.ok
    assert any("record 1" in p and "flip_rate" in p for p in audit.problems), audit.problems


def test_label_events_keep_their_place_in_the_history() -> None:
    label = LabelEvent(
        run_id="run",
        round=2,
        epsilon_label=1.0,
        flip_rate=flip_rate(1.0),
        source="implicit-only",
        after_charges=1,
        rows=(
            ReleasedLabel(
                prompt_id="p",
                left_id="a",
                right_id="b",
                right_preferred=1,
                flip_rate=flip_rate(1.0),
            ),
        ),
    )
    from fedgaze.ledger.device import timeline

    state = PrivacyState((_charge(1), _charge(2)), (label,))
    assert [type(e).__name__ for e in timeline(state)] == [
        "PrivacyEvent",
        "LabelEvent",
        "PrivacyEvent",
    ]
    assert json.loads(json.dumps(state.to_json()))["format"] == 2


def test_query_ids_survive_the_device_store(device: Device, tmp_path: Path) -> None:
    from fedgaze.client.device.store import load_device, save_device

    save_device(tmp_path / "store", device, key_path=tmp_path / "k")
    loaded = load_device(tmp_path / "store", key_path=tmp_path / "k")
    assert [q.served for q in loaded.queries] == [q.served for q in device.queries]
    assert all(isinstance(q, Query) and q.served is not None for q in loaded.queries)
