"""What a device releases when asked for preference labels: one noised bit per comparison.

Which comparisons: every pairwise query the device holds whose prompt and two answers carry the
answering service's ids (:class:`fedgaze.data.schema.ServedIds`), labelled or not. The set
depends on what was served (known to the service), never on what the person did, so whether a
comparison is released says nothing about it.

The bit before noise: the person's explicit choice where the source is ``explicit-first`` and
they gave one (a tie is no choice), else the behaviour model's inference from the comparison's
own traces, ``P(right preferred) >= 0.5`` with the DP-trained global model the server pushed.
The personal head is left out on purpose: it is fitted on all of the device's labelled
comparisons without DP, so a bit computed with it would depend on every one of them. With the
global model (a DP release already paid for) and the comparison's own data, a comparison's bit
depends on that comparison only, and releases compose in parallel
(:mod:`fedgaze.privacy.label_dp`).

The bit after noise: randomized response at ``epsilon_label``, from OS entropy. A comparison is
released once: a later labels message sends the stored bit again (free: nothing new is drawn),
and a retried message for the same ``(run_id, round)`` replays the stored reply exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedgaze.data.schema import Query
from fedgaze.features.v2 import featurize_for_scoring
from fedgaze.labels.rows import LABEL_SOURCES, ComparisonKey, LabelSource, ReleasedLabel
from fedgaze.model.reward import model_from_state, predict_logits
from fedgaze.privacy.accounting import BudgetExhausted, epsilon_for
from fedgaze.privacy.label_dp import flip_rate, randomized_response
from fedgaze.privacy.params import DeviceBudget
from fedgaze.privacy.state import LabelEvent, PrivacyState


def comparison_key(query: Query) -> ComparisonKey | None:
    """The service ids ``(prompt_id, left_id, right_id)`` of a pairwise query, or None."""
    ids = query.served
    if not query.pairwise or query.response_right is None or ids is None:
        return None
    if ids.response_right_id is None:
        return None
    return (ids.prompt_id, ids.response_left_id, ids.response_right_id)


def releasable(queries: Sequence[Query]) -> list[Query]:
    """The pairwise queries that can be released (they carry the service's ids), in order."""
    return [q for q in queries if comparison_key(q) is not None]


def implicit_p_right(
    queries: Sequence[Query],
    calibration: Mapping[int, float] | None,
    model_state: Mapping[str, np.ndarray],
) -> np.ndarray:
    """P(right preferred) of each pairwise query from its own traces, by the global model."""
    if not queries:
        return np.zeros(0)
    fm = featurize_for_scoring(queries, calibration)
    if len(fm.y) != len(queries):
        raise ValueError(f"{len(queries)} comparisons gave {len(fm.y)} feature rows")
    logits = predict_logits(model_from_state(model_state), fm.X)
    return np.asarray(1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64))))


def preference_bits(
    queries: Sequence[Query],
    calibration: Mapping[int, float] | None,
    model_state: Mapping[str, np.ndarray],
    source: LabelSource,
) -> np.ndarray:
    """The bit each comparison would release before noise (1: right preferred)."""
    bits = (implicit_p_right(queries, calibration, model_state) >= 0.5).astype(np.int64)
    if source == "explicit-first":
        for i, query in enumerate(queries):
            if query.is_labelled_comparison:
                bits[i] = query.label_right
    return bits


@dataclass(frozen=True)
class LabelOutcome:
    """A device's answer to a labels message.

    ``rows`` is what the reply carries (earlier releases, then this one's new ones);
    ``new_state`` must be saved before any of it leaves the device (it is ``state`` itself on a
    replay). ``epsilon`` is the device's cumulative epsilon with this release.
    """

    new_state: PrivacyState
    event: LabelEvent
    rows: tuple[ReleasedLabel, ...]
    epsilon: float
    replayed: bool = False


def release_labels(
    state: PrivacyState,
    queries: Sequence[Query],
    calibration: Mapping[int, float] | None,
    model_state: Mapping[str, np.ndarray],
    *,
    run_id: str,
    round: int,
    epsilon_label: float,
    source: LabelSource,
    budget: DeviceBudget,
) -> LabelOutcome:
    """Release this device's not yet released comparisons at ``epsilon_label``.

    Raises :class:`BudgetExhausted` before drawing anything when the release would take the
    device's epsilon over its budget.
    """
    if source not in LABEL_SOURCES:
        raise ValueError(f"label source must be one of {LABEL_SOURCES}, got {source!r}")
    rate = flip_rate(epsilon_label)
    previous = state.find_labels(run_id, round)
    if previous is not None:
        return LabelOutcome(
            state,
            previous,
            (*state.rows_before(previous), *previous.rows),
            state.epsilon(budget.delta, budget.accountant),
            replayed=True,
        )
    released = state.released()
    fresh = [q for q in releasable(queries) if comparison_key(q) not in released]
    label_epsilon = state.label_epsilon
    if fresh:
        label_epsilon = max(label_epsilon or 0.0, epsilon_label)
    spent = state.epsilon(budget.delta, budget.accountant)
    after = epsilon_for(state.history, budget.delta, budget.accountant, label_epsilon)
    if after > budget.epsilon_budget:
        raise BudgetExhausted(spent, after, budget.epsilon_budget, budget.delta)
    bits = randomized_response(
        preference_bits(fresh, calibration, model_state, source), epsilon_label
    )
    rows = []
    for query, bit in zip(fresh, bits, strict=True):
        key = comparison_key(query)
        assert key is not None
        rows.append(
            ReleasedLabel(
                prompt_id=key[0],
                left_id=key[1],
                right_id=key[2],
                right_preferred=int(bit),
                flip_rate=rate,
            )
        )
    event = LabelEvent(
        run_id=run_id,
        round=round,
        epsilon_label=epsilon_label,
        flip_rate=rate,
        source=source,
        after_charges=len(state.events),
        rows=tuple(rows),
    )
    earlier = tuple(released.values())
    new_state = state.with_labels(event)
    return LabelOutcome(new_state, event, (*earlier, *event.rows), after)
