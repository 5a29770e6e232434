"""The fedgaze ServerApp: rounds of on-device DP training, FedAvg, on-device evaluation.

Every round the current global model is pushed to every connected device; each first scores it
on its held-out (later) comparisons, then trains locally with DP-SGD from it and replies with
its new weights, its cumulative epsilon and that score. The server accepts an update only when
the device's signed DP record holds (:mod:`fedgaze.server.ledger`) and the update itself passes
:func:`fedgaze.server.validate.validate_update` (names, shapes, dtype, finite values, the round
it answers, optionally a norm bound); it combines the accepted ones with FedAvg weighted by
examples (or the trimmed mean / median, or DP-FedAvg) and commits a checkpoint and a progress
record; after the last round one evaluate message scores the final model.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid, ServerApp

from fedgaze.atomic import append_line_durable, write_json_atomic
from fedgaze.federation import protocol
from fedgaze.federation.arrays import ModelState, from_array_record, to_array_record
from fedgaze.federation.settings import RoundPlan, ServerSettings
from fedgaze.model.factory import FEATURE_SET, initial_state, n_features
from fedgaze.model.store import ModelDirError, SavedModel, load_model, save_model
from fedgaze.server.aggregate import (
    coordinate_median,
    dp_fedavg,
    fedavg,
    trimmed_mean,
    weighted_mean,
)
from fedgaze.server.ledger import (
    SERVER_LEDGER_FILE,
    ResumeError,
    RoundBook,
    ServerLedger,
    check_start,
    ledger_progress,
)
from fedgaze.server.validate import validate_update

app = ServerApp()

PROGRESS_FILE = "progress.jsonl"
RESULT_FILE = "server_result.json"


class NotEnoughNodes(RuntimeError):
    """Fewer devices connected than the run needs, within the configured wait."""


@dataclass
class DeviceLedgerView:
    """What the server has learned about one device's privacy spending (from its replies)."""

    device_id: str
    epsilon: float = 0.0
    delta: float = 0.0
    examples: int = 0
    rounds_participated: int = 0
    status: str = "unknown"
    events: list[dict[str, float]] = field(default_factory=list)


def emit(run_dir: Path, event: str, **payload: Any) -> None:
    """Append a progress event (one JSON line, fsynced) that the launcher tails."""
    record = {"event": event, "time": time.time(), **payload}
    append_line_durable(run_dir / PROGRESS_FILE, json.dumps(record))


def wait_for_nodes(grid: Grid, min_nodes: int, timeout: float, poll: float = 0.5) -> list[int]:
    """Wait, bounded by ``timeout`` seconds, until at least ``min_nodes`` devices are connected."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= min_nodes:
            return nodes
        if time.monotonic() >= deadline:
            raise NotEnoughNodes(
                f"only {len(nodes)} of the {min_nodes} required devices connected "
                f"within {timeout:.0f} s"
            )
        time.sleep(poll)


def _messages(
    node_ids: Iterable[int], state: ModelState, config: dict[str, Any], kind: str, rnd: int
) -> list[Message]:
    content = RecordDict(
        {protocol.ARRAYS: to_array_record(state), protocol.CONFIG: ConfigRecord(config)}
    )
    return [
        Message(content=content, dst_node_id=node, message_type=kind, group_id=str(rnd))
        for node in node_ids
    ]


@dataclass(frozen=True)
class Exchange:
    """The outcome of one push/pull exchange: usable reports and what went wrong, per node."""

    reports: list[tuple[protocol.DeviceReport, Message]]
    failures: list[str]


def _resend(msg: Message) -> Message:
    """A fresh copy of ``msg`` (same content and destination) to push again."""
    meta = msg.metadata
    return Message(
        content=msg.content,
        dst_node_id=meta.dst_node_id,
        message_type=meta.message_type,
        group_id=meta.group_id,
    )


def exchange(
    grid: Grid,
    messages: list[Message],
    timeout: float,
    poll: float = 0.25,
    max_resends: int = 3,
) -> Exchange:
    """Push ``messages``, collect replies until all arrive or ``timeout`` seconds pass.

    Like ``Grid.send_and_receive`` but polling every ``poll`` seconds instead of Flower's fixed
    3 s (which dominates round time for small models), and naming the destination node of every
    error reply, malformed reply and missing reply.

    A device whose connection dropped (Flower answers "Node Unavailable" when its heartbeats
    stop) gets the message again, up to ``max_resends`` times, as soon as it is back online
    within the timeout: after a SuperLink restart (``--resume``) devices reconnect with backoff,
    and a device that briefly lost its network should not miss the round. A device replays a
    round it was already charged for, so a resend costs it nothing.
    """
    deadline = time.monotonic() + timeout
    node_of: dict[str, int] = {}
    original: dict[int, Message] = {}
    unsent: list[int] = []
    resends: dict[int, int] = {}
    away: set[int] = set()  # nodes to resend to once they are online again

    def push(batch: list[Message]) -> None:
        ids = list(grid.push_messages(batch))
        for mid, msg in zip(ids, batch, strict=True):
            node = msg.metadata.dst_node_id
            original[node] = msg
            if mid:
                node_of[mid] = node
            else:
                unsent.append(node)

    push(messages)
    pending = set(node_of)
    replies: list[Message] = []
    unavailable: dict[int, str] = {}
    while pending or away:
        for msg in grid.pull_messages(pending) if pending else []:
            pending.discard(msg.metadata.reply_to_message_id)
            node = node_of.get(msg.metadata.reply_to_message_id, msg.metadata.src_node_id)
            if (
                msg.has_error()
                and msg.error.code == ErrorCode.NODE_UNAVAILABLE
                and resends.get(node, 0) < max_resends
            ):
                away.add(node)
                unavailable[node] = msg.error.reason or "Node Unavailable"
                continue
            replies.append(msg)
        if away:
            back = away & set(grid.get_node_ids())
            if back:
                away -= back
                for node in back:
                    resends[node] = resends.get(node, 0) + 1
                    unavailable.pop(node, None)
                before = set(node_of)
                push([_resend(original[node]) for node in sorted(back)])
                pending |= set(node_of) - before
        if time.monotonic() >= deadline or not (pending or away):
            break
        time.sleep(poll)
    reports: list[tuple[protocol.DeviceReport, Message]] = []
    failures = [f"node {node}: message could not be pushed to the SuperLink" for node in unsent]
    for msg in replies:
        node = node_of.get(msg.metadata.reply_to_message_id, msg.metadata.src_node_id)
        if msg.has_error():
            failures.append(f"node {node}: {msg.error.reason}")
            continue
        try:
            reports.append((protocol.parse_report(msg), msg))
        except (ValueError, KeyError) as err:
            failures.append(f"node {node}: malformed reply ({err})")
    failures.extend(
        f"node {node}: {unavailable.get(node, 'unavailable')} (not back within {timeout:.0f} s)"
        for node in sorted(away)
    )
    failures.extend(f"node {node_of[mid]}: no reply within {timeout:.0f} s" for mid in pending)
    return Exchange(reports, failures)


def _evaluation(reports: Iterable[protocol.DeviceReport], model_round: int) -> dict[str, Any]:
    """Example-weighted held-out accuracy and loss of the model after ``model_round``."""
    scored = [r for r in reports if r.metrics.get(protocol.EVAL_EXAMPLES, 0) > 0]

    def mean(key: str) -> float | None:
        return weighted_mean(
            [
                (r.metrics[key], int(r.metrics[protocol.EVAL_EXAMPLES]))
                for r in scored
                if key in r.metrics
            ]
        )

    return {
        "round": model_round,
        "accuracy": mean(protocol.EVAL_ACCURACY),
        "accuracy_personal": mean(protocol.EVAL_ACCURACY_PERSONAL),
        "loss": mean(protocol.EVAL_LOSS),
        "eval_examples": sum(int(r.metrics[protocol.EVAL_EXAMPLES]) for r in scored),
        "eval_devices": len(scored),
    }


def _record_training(
    devices: dict[str, DeviceLedgerView],
    report: protocol.DeviceReport,
    rnd: int,
    refused: bool = False,
) -> None:
    view = devices.setdefault(report.device_id, DeviceLedgerView(report.device_id))
    view.status = "refused" if refused else report.status
    if "epsilon" in report.metrics:
        view.epsilon = report.metrics["epsilon"]
        view.delta = report.metrics.get("delta", view.delta)
    if report.status == protocol.STATUS_TRAINED and report.examples > 0:
        view.rounds_participated += 1
        view.examples = report.examples
        # A hostile reply may omit keys; that must not crash the server's round.
        event = {k: report.metrics[k] for k in protocol.DP_EVENT_KEYS if k in report.metrics}
        view.events.append({"round": rnd, **event})


def _client_dp_aggregate(
    state: ModelState,
    updates: list[tuple[ModelState, int]],
    settings: ServerSettings,
    expected: int,
    rnd: int,
) -> tuple[ModelState, dict[str, Any]]:
    """DP-FedAvg with a secret noise seed; returns the new state and the round's DP record."""
    assert settings.client_dp_noise_multiplier is not None
    assert settings.client_dp_clip_norm is not None
    new, norms = dp_fedavg(
        state,
        [u for u, _ in updates],
        clip_norm=settings.client_dp_clip_norm,
        noise_multiplier=settings.client_dp_noise_multiplier,
        expected_devices=expected,
        rng=np.random.default_rng(secrets.randbits(128)),
    )
    record = {
        **(settings.client_dp_spent(rnd) or {}),
        "expected_devices": expected,
        "clipped": sum(n > settings.client_dp_clip_norm for n in norms),
        "updates": len(norms),
    }
    return new, record


def _round_id(value: float | None) -> int | None:
    """A whole-number round id from a reply's metrics; None when absent or not a whole number."""
    if value is None or not math.isfinite(value) or value != int(value):
        return None
    return int(value)


def _checked_update(
    msg: Message,
    report: protocol.DeviceReport,
    reference: ModelState,
    rnd: int,
    settings: ServerSettings,
) -> tuple[ModelState | None, str]:
    """The reply's update when it passes :func:`validate_update`, else None and the reason."""
    arrays = msg.content.array_records.get(protocol.ARRAYS)
    if arrays is None:
        return None, "trained reply carries no model arrays"
    try:
        update = from_array_record(arrays)
    except Exception as err:  # a hostile reply may carry anything that fails to decode
        return None, f"model arrays do not decode ({type(err).__name__}: {err})"
    reported = report.metrics.get(protocol.SERVER_ROUND)
    reason = validate_update(
        update,
        reference,
        server_round=rnd,
        reported_round=_round_id(reported),
        max_update_norm=settings.max_update_norm,
    )
    if reason is not None:
        return None, f"update refused: {reason}"
    return update, ""


def accept_updates(
    trained: list[tuple[protocol.DeviceReport, Message]],
    state: ModelState,
    plan: RoundPlan,
    book: RoundBook,
    ledger: ServerLedger,
    settings: ServerSettings,
    devices: dict[str, DeviceLedgerView],
) -> list[tuple[ModelState, int]]:
    """The updates of round ``plan.server_round`` that may be aggregated into ``state``.

    A trained reply counts only when the ledger admits its signed record and its update passes
    :func:`validate_update`; every refusal is noted in ``book`` with its reason.
    """
    updates = []
    for report, msg in trained:
        trained_update = report.status == protocol.STATUS_TRAINED and report.examples > 0
        accepted = trained_update and ledger.admit(report, plan, book, settings.max_device_epsilon)
        update = None
        if accepted:
            update, reason = _checked_update(msg, report, state, plan.server_round, settings)
            if update is None:
                book.reject_admitted(report, reason)
                accepted = False
        _record_training(
            devices, report, plan.server_round, refused=trained_update and not accepted
        )
        if update is not None:
            updates.append((update, report.examples))
    return updates


def aggregate(updates: list[tuple[ModelState, int]], settings: ServerSettings) -> ModelState:
    """Combine the accepted updates with the rule ``settings.aggregation`` names."""
    if settings.aggregation == "trimmed-mean":
        return trimmed_mean([u for u, _ in updates], settings.trim_fraction)
    if settings.aggregation == "median":
        return coordinate_median([u for u, _ in updates])
    return fedavg(updates)


def run_federation(grid: Grid, settings: ServerSettings) -> dict[str, Any]:
    """Run every round of the federation and return the server's result record.

    Round ``r``'s train message carries the model after round ``r - 1``; each device first
    scores it on its held-out comparisons, then trains from it. So every model is evaluated on
    the devices without a separate message per round (each message starts a ClientApp
    process); one final evaluate message scores the last model.

    With ``settings.resume`` the run recorded in ``run_dir`` continues after its last
    committed round (the last ``server-round`` record of the server ledger) from that round's
    checkpoint; a round that was under way when the server stopped is run again, and devices
    answer it by replaying what they already paid for (see ``fedgaze.privacy.dp_train``).
    """
    run_dir = Path(settings.run_dir)
    progress = _start_or_resume(run_dir, settings)
    emit(run_dir, "waiting", min_nodes=settings.min_nodes)
    nodes = wait_for_nodes(grid, settings.min_nodes, settings.node_wait_timeout)
    emit(
        run_dir,
        "started",
        nodes=len(nodes),
        rounds=settings.rounds,
        resumed_after=progress.completed if settings.resume else None,
    )
    ledger = ServerLedger(run_dir)
    try:
        if settings.resume:
            ledger.restore_pins(progress.pins)
            ledger.run_resume(settings, progress.completed)
        else:
            ledger.run_start(settings)
            _checkpoint(run_dir, progress, settings)
        return _run_rounds(grid, settings, run_dir, nodes, ledger, progress)
    finally:
        ledger.close()


@dataclass
class RunProgress:
    """Everything the server carries from round to round; each checkpoint stores it."""

    completed: int
    state: ModelState
    rounds: list[dict[str, Any]] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    devices: dict[str, DeviceLedgerView] = field(default_factory=dict)
    pins: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The checkpoint's record of the run so far (the weights are stored beside it)."""
        return {
            "completed": self.completed,
            "rounds": self.rounds,
            "evaluations": self.evaluations,
            "devices": [asdict(d) for d in self.devices.values()],
            "pins": self.pins,
        }

    @classmethod
    def from_checkpoint(cls, saved: SavedModel) -> RunProgress:
        """Rebuild the progress a checkpoint recorded."""
        data = saved.provenance[PROGRESS_KEY]
        views = [DeviceLedgerView(**d) for d in data["devices"]]
        return cls(
            completed=int(data["completed"]),
            state=saved.state,
            rounds=list(data["rounds"]),
            evaluations=list(data["evaluations"]),
            devices={v.device_id: v for v in views},
            pins=dict(data["pins"]),
        )


PROGRESS_KEY = "server_progress"


def checkpoint_dir(run_dir: Path, rnd: int) -> Path:
    """Where the model after round ``rnd`` (0: the initial model) is checkpointed."""
    return run_dir / "checkpoints" / f"round_{rnd:03d}"


def _start_or_resume(run_dir: Path, settings: ServerSettings) -> RunProgress:
    """The progress to start from: round 0 for a new run, the last committed round's
    checkpoint for a resumed one; :class:`ResumeError` when the run directory disagrees."""
    recorded = ledger_progress(run_dir)
    check_start(run_dir, recorded, settings)
    if not settings.resume:
        return RunProgress(0, initial_state(settings.hidden, settings.seed))
    try:
        saved = load_model(checkpoint_dir(run_dir, recorded.last_round))
        progress = RunProgress.from_checkpoint(saved)
    except (ModelDirError, KeyError, TypeError, ValueError) as err:
        raise ResumeError(
            f"the checkpoint of committed round {recorded.last_round} is unusable: {err}"
        ) from None
    if progress.completed != recorded.last_round:
        raise ResumeError(
            f"checkpoint round_{recorded.last_round:03d} records round {progress.completed}"
        )
    return progress


def _run_rounds(
    grid: Grid,
    settings: ServerSettings,
    run_dir: Path,
    nodes: list[int],
    ledger: ServerLedger,
    progress: RunProgress,
) -> dict[str, Any]:
    for rnd in range(progress.completed + 1, settings.rounds + 1):
        t0 = time.monotonic()
        round_plan = settings.plan(rnd)
        plan = round_plan.to_config()
        state = progress.state
        messages = _messages(sorted(grid.get_node_ids()), state, plan, MessageType.TRAIN, rnd)
        outcome = exchange(grid, messages, settings.round_timeout)
        trained, failures = outcome.reports, outcome.failures
        progress.evaluations.append(_evaluation((r for r, _ in trained), rnd - 1))
        emit(run_dir, "evaluation", **progress.evaluations[-1])
        book = RoundBook()
        updates = accept_updates(
            trained, state, round_plan, book, ledger, settings, progress.devices
        )
        central = None
        if updates and settings.client_dp:
            state, central = _client_dp_aggregate(state, updates, settings, len(nodes), rnd)
        elif updates:
            state = aggregate(updates, settings)
        progress.state = state
        progress.completed = rnd
        progress.pins = ledger.pins
        progress.rounds.append(
            {
                "round": rnd,
                "train_devices": len(updates),
                "train_examples": sum(n for _, n in updates),
                "replies": len(trained),
                "failures": failures,
                "refused": [
                    {"device_id": r.device_id, "device": r.device, "reason": r.reason}
                    for r in book.refused
                ],
                "seconds": round(time.monotonic() - t0, 3),
            }
        )
        # The checkpoint first, then the ledger record that commits the round: a crash
        # between the two leaves the round uncommitted, and a resumed run repeats it.
        _checkpoint(run_dir, progress, settings)
        ledger.round_end(rnd, book, failures, central, aggregation=settings.aggregation)
        emit(
            run_dir,
            "round",
            **progress.rounds[-1],
            devices=[
                {"device_id": d.device_id, "epsilon": d.epsilon, "status": d.status}
                for d in progress.devices.values()
            ],
        )

    state = progress.state
    plan = settings.plan(settings.rounds).to_config()
    messages = _messages(
        sorted(grid.get_node_ids()), state, plan, MessageType.EVALUATE, settings.rounds
    )
    final = exchange(grid, messages, settings.round_timeout)
    evaluated, eval_failures = final.reports, final.failures
    evaluations = [
        *progress.evaluations,
        {**_evaluation((r for r, _ in evaluated), settings.rounds), "failures": eval_failures},
    ]
    emit(run_dir, "evaluation", **evaluations[-1])
    _save(run_dir / "model", state, settings, settings.rounds)
    result = {
        "run_key": settings.run_key,
        "rounds": settings.rounds,
        "rounds_completed": len(progress.rounds),
        "nodes": len(nodes),
        "ledger": str(run_dir / SERVER_LEDGER_FILE),
        "rounds_log": progress.rounds,
        "evaluations": evaluations,
        "devices": [
            asdict(d) for d in sorted(progress.devices.values(), key=lambda d: d.device_id)
        ],
    }
    write_json_atomic(run_dir / RESULT_FILE, result)
    emit(run_dir, "done", rounds_completed=len(progress.rounds))
    return result


def _checkpoint(run_dir: Path, progress: RunProgress, settings: ServerSettings) -> None:
    """Commit the model after round ``progress.completed`` with the run's progress so far."""
    _save(
        checkpoint_dir(run_dir, progress.completed),
        progress.state,
        settings,
        progress.completed,
        {PROGRESS_KEY: progress.to_json()},
    )


def _save(
    directory: Path,
    state: ModelState,
    settings: ServerSettings,
    rnd: int,
    extra: dict[str, Any] | None = None,
) -> None:
    save_model(
        directory,
        SavedModel(
            state=state,
            feature_set=FEATURE_SET,
            n_features=n_features(),
            hidden=settings.hidden,
            provenance={
                "run_key": settings.run_key,
                "round": rnd,
                "kind": "federated",
                **(extra or {}),
            },
        ),
    )


@app.main()
def main(grid: Grid, context: Context) -> None:
    """ServerApp entry point: parse the run config, run the federation, report failures."""
    run_dir = Path(str(context.run_config.get("run-dir", ".")))
    try:
        settings = ServerSettings.from_run_config(context.run_config)
        run_federation(grid, settings)
    except Exception as err:
        emit(run_dir, "failed", error=f"{type(err).__name__}: {err}")
        raise
