"""The device's answer to a labels message: its preference labels, released with label DP.

The device reads its own comparisons, infers each one's preference from its own traces with the
global model the message carries (or takes the person's explicit choice, per the plan's source),
and releases it through randomized response (:mod:`fedgaze.labels.release`). Before any bit
leaves, the device checks its budget, saves the release in its privacy state (so a retried
message replays it and a crash can only over-count) and signs a ``label-release`` record into
its ledger; the reply carries the rows and that record. Nothing else about a comparison leaves
the device: not its traces, not the bit before noise, not whether the person chose explicitly.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import RecordDict

from fedgaze.client.device.data import load_node_device
from fedgaze.client.device.layout import DeviceLayout
from fedgaze.client.device.pause import is_paused
from fedgaze.federation.arrays import from_array_record
from fedgaze.federation.protocol import (
    Record,
    ReplyMetrics,
    ReplyStatus,
    labels_record,
    reply_content,
)
from fedgaze.federation.settings import LabelPlan, NodeSettings
from fedgaze.labels.release import release_labels
from fedgaze.ledger.contract import RecordKind
from fedgaze.ledger.device import sync_ledger
from fedgaze.privacy.accounting import BudgetExhausted
from fedgaze.privacy.state import PrivacyState


def release(content: RecordDict, node: NodeSettings) -> RecordDict:
    """The reply content to a labels message's ``content`` (see the module docstring)."""
    plan = LabelPlan.from_config(content.config_records[Record.CONFIG])
    budget = node.budget

    def reply(status: ReplyStatus, metrics: ReplyMetrics) -> RecordDict:
        return reply_content(node.device_id, status, metrics)

    if is_paused(node.device_dir):
        return reply(ReplyStatus.PAUSED, ReplyMetrics(plan.server_round, 0))
    path = DeviceLayout(Path(node.device_dir)).privacy_state
    privacy = PrivacyState.load(path)
    sync_ledger(node.device_dir, privacy, budget)
    device = load_node_device(node)
    try:
        outcome = release_labels(
            privacy,
            device.queries,
            device.calibration,
            from_array_record(content.array_records[Record.ARRAYS]),
            run_id=plan.run_key,
            round=plan.server_round,
            epsilon_label=plan.epsilon_label,
            source=plan.label_source,
            budget=budget,
        )
    except BudgetExhausted as err:
        return reply(
            ReplyStatus.BUDGET_EXHAUSTED,
            ReplyMetrics(plan.server_round, 0, err.spent, budget.delta),
        )
    if not outcome.replayed:
        outcome.new_state.save(path)
    record = sync_ledger(node.device_dir, outcome.new_state, budget, RecordKind.LABEL_RELEASE)[
        (plan.run_key, plan.server_round)
    ]
    released = reply_content(
        node.device_id,
        ReplyStatus.RELEASED,
        ReplyMetrics(plan.server_round, len(outcome.rows), outcome.epsilon, budget.delta),
        dp_record=record.line(),
    )
    released[Record.LABELS.value] = labels_record(outcome.rows)
    return released
