"""What a device computes for each message of a round: train, evaluate, release labels.

Each handler takes the message's content and the device's :class:`NodeSettings` and returns the
reply's content (the contract of ``fedgaze.federation.protocol``). Raw traces are read from the
device's own storage and turned into features here; only the trained weights and the declared
metrics go back: the training example count, the DP-SGD parameters of the round (noise
multiplier, sample rate, steps), delta and the device's cumulative epsilon, and the held-out
evaluation (count, loss, accuracy, personalized accuracy) of the received model. The device's
personal head (:mod:`fedgaze.model.personal`) is fitted and stored here and never sent. The
device enforces its own privacy budget and persists its accountant history before it replies,
so a crash after training can only over-count spending, never under-count it; each charge then
also gets a signed ``dp-round`` record in the device's ledger (``fedgaze.ledger.device``), which
the reply carries. A labels message is answered by :mod:`fedgaze.client.labels`.

While the person has paused the device (``fedgaze client pause``) every message gets a
``paused`` reply at once: no data is read, nothing is trained, evaluated or charged. Otherwise
the global model a message carries is kept as ``last_model/`` in the device folder (a model
directory, with the run and round in its provenance) for ``fedgaze client status``.

This module loads the training stack (torch, Opacus): it runs in the ClientApp process, or in the
device's warm trainer (:mod:`fedgaze.client.trainer_service`), which has it loaded already.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, MessageType, RecordDict

from fedgaze.client.device.layout import DeviceLayout
from fedgaze.client.device.pause import is_paused
from fedgaze.client.labels import release
from fedgaze.client.local_rows import LocalRows, behaviour_rows, text_rows
from fedgaze.features.v2 import FEATURE_SET
from fedgaze.federation.arrays import from_array_record, to_array_record
from fedgaze.federation.protocol import (
    LABELS_MESSAGE_TYPE,
    Charge,
    HeldOut,
    Record,
    ReplyMetrics,
    ReplyStatus,
    reply_content,
)
from fedgaze.federation.settings import NodeSettings, RoundPlan
from fedgaze.ledger.device import sync_ledger
from fedgaze.model.evaluation import evaluate
from fedgaze.model.personal import fit_personal_head, save_personal_head
from fedgaze.model.reward import model_from_state, predict_logits
from fedgaze.model.store import SavedModel, save_model
from fedgaze.privacy.dp_train import BudgetExhausted, DPConfig, device_round_seed, train_local
from fedgaze.privacy.state import PrivacyState, RoundAlreadyCharged
from fedgaze.text.features import TEXT_FEATURE_SET


def _rows(
    node: NodeSettings, plan: RoundPlan, content: RecordDict, train: bool = True
) -> LocalRows:
    """This device's rows for the plan's model kind (see :mod:`fedgaze.client.local_rows`);
    without ``train`` a text model needs only its held-out rows."""
    if plan.model_kind == "behaviour":
        return behaviour_rows(node, plan.holdout)
    behaviour = content.array_records.get(Record.BEHAVIOUR_ARRAYS)
    state = None if behaviour is None else from_array_record(behaviour)
    return text_rows(node, plan, state, held_out_only=not train)


def save_last_model(
    node: NodeSettings, plan: RoundPlan, arrays: ArrayRecord, model_round: int
) -> None:
    """Keep the global model a message carried (the model after ``model_round``) as the
    device's ``last_model/``, replacing the one before atomically."""
    state = from_array_record(arrays)
    model = model_from_state(state)
    save_model(
        DeviceLayout(Path(node.device_dir)).last_model,
        SavedModel(
            state=state,
            feature_set=FEATURE_SET if plan.model_kind == "behaviour" else TEXT_FEATURE_SET,
            n_features=model.n_features,
            hidden=model.hidden,
            provenance={
                "run_key": plan.run_key,
                "round": model_round,
                "received": datetime.now(UTC).isoformat(timespec="seconds"),
                "kind": "received",
            },
        ),
    )


def _held_out(plan: RoundPlan, node: NodeSettings, arrays: ArrayRecord, rows: LocalRows) -> HeldOut:
    """Score the received model on this device's later (held-out) comparisons. For the
    behaviour model also personalized: the personal head is refitted on the earlier ones and
    kept on the device (the text model has none)."""
    state = from_array_record(arrays)
    accuracy_personal = None
    if plan.model_kind == "behaviour":
        model = model_from_state(state)
        head = fit_personal_head(predict_logits(model, rows.train_X), rows.train_X, rows.train_y)
        save_personal_head(DeviceLayout(Path(node.device_dir)).personal_head, head)
        if len(rows.test_y):
            personal = head.adjust(predict_logits(model, rows.test_X), rows.test_X)
            accuracy_personal = float(np.mean((personal > 0) == (rows.test_y == 1)))
    if len(rows.test_y) == 0:
        return HeldOut(examples=0)
    loss, accuracy, n = evaluate(state, rows.test_X, rows.test_y)
    return HeldOut(examples=n, loss=loss, accuracy=accuracy, accuracy_personal=accuracy_personal)


def train(content: RecordDict, node: NodeSettings) -> RecordDict:
    """Score the pushed global model, then train it on this device's data with DP-SGD.

    Training happens only within the device's own budget; a refusal is reported, not hidden.
    """
    plan = RoundPlan.from_config(content.config_records[Record.CONFIG])
    if is_paused(node.device_dir):
        return reply_content(node.device_id, ReplyStatus.PAUSED, ReplyMetrics(plan.server_round, 0))
    arrays = content.array_records[Record.ARRAYS]
    save_last_model(node, plan, arrays, plan.server_round - 1)
    rows = _rows(node, plan, content)
    held_out = _held_out(plan, node, arrays, rows)
    path = DeviceLayout(Path(node.device_dir)).privacy_state
    privacy = PrivacyState.load(path)
    dp = DPConfig.for_device(plan, node.budget)
    # Every charge already saved gets its signed record first (a crash may have come between
    # saving the state and appending the record).
    sync_ledger(node.device_dir, privacy, dp.budget)
    idle = ReplyMetrics(
        server_round=plan.server_round,
        examples=0,
        epsilon=privacy.epsilon(dp.delta, dp.accountant),
        delta=dp.delta,
        held_out=held_out,
    )
    if len(rows.train_y) == 0:
        return reply_content(node.device_id, ReplyStatus.NO_DATA, idle)
    try:
        result = train_local(
            from_array_record(arrays),
            rows.train_X,
            rows.train_y,
            dp,
            privacy,
            run_id=plan.run_key,
            round=plan.server_round,
            seed=device_round_seed(plan.seed, plan.server_round, node.device_id),
            soft_labels=rows.soft,
        )
    except BudgetExhausted:
        return reply_content(node.device_id, ReplyStatus.BUDGET_EXHAUSTED, idle)
    except RoundAlreadyCharged:
        return reply_content(node.device_id, ReplyStatus.ROUND_ALREADY_CHARGED, idle)
    result.new_privacy_state.save(path)
    record = sync_ledger(node.device_dir, result.new_privacy_state, dp.budget)[
        (plan.run_key, plan.server_round)
    ]
    metrics = ReplyMetrics(
        server_round=plan.server_round,
        examples=result.examples,
        epsilon=result.epsilon,
        delta=result.delta,
        charge=Charge(result.steps, result.sample_rate, result.noise_multiplier),
        held_out=held_out,
    )
    return reply_content(
        node.device_id,
        ReplyStatus.TRAINED,
        metrics,
        to_array_record(result.state),
        dp_record=record.line(),
    )


def evaluate_global(content: RecordDict, node: NodeSettings) -> RecordDict:
    """Score the pushed global model on this device's later (held-out) comparisons."""
    plan = RoundPlan.from_config(content.config_records[Record.CONFIG])
    if is_paused(node.device_dir):
        return reply_content(node.device_id, ReplyStatus.PAUSED, ReplyMetrics(plan.server_round, 0))
    arrays = content.array_records[Record.ARRAYS]
    save_last_model(node, plan, arrays, plan.server_round)
    held_out = _held_out(plan, node, arrays, _rows(node, plan, content, train=False))
    return reply_content(node.device_id, ReplyStatus.EVALUATED, ReplyMetrics(held_out=held_out))


HANDLERS: dict[str, Callable[[RecordDict, NodeSettings], RecordDict]] = {
    MessageType.TRAIN: train,
    MessageType.EVALUATE: evaluate_global,
    LABELS_MESSAGE_TYPE: release,
}
"""The handler of each message type a device answers."""
