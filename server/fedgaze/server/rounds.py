"""The federation's rounds: push the model, admit updates, aggregate, commit, evaluate.

Every round the current global model is pushed to every connected device (or, with client
sampling, to each one independently with probability ``fraction``); each first scores it
on its held-out (later) comparisons, then trains locally with DP-SGD from it and replies with
its new weights, its cumulative epsilon and that score. The server admits updates
(:mod:`fedgaze.server.admission`), combines them with FedAvg weighted by examples (or the
trimmed mean / median, or DP-FedAvg: :mod:`fedgaze.server.aggregate`), and commits a checkpoint,
then the round's ledger record, then a progress event. After the last round, when the run
asks for preference labels, a labels round collects them (:mod:`fedgaze.server.labels`); then
one evaluate message scores the final model (on every device, or on a sample drawn like a
round's).
"""

from __future__ import annotations

import contextlib
import random
import secrets
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from flwr.app import MessageType
from flwr.serverapp import Grid

from fedgaze.atomic import write_json_atomic
from fedgaze.federation.events import (
    DeviceEpsilon,
    Done,
    Evaluated,
    RoundDone,
    Started,
    Waiting,
)
from fedgaze.federation.protocol import DeviceReport, Metric
from fedgaze.federation.results import Evaluation, RefusedUpdate, RoundLog, ServerResult
from fedgaze.federation.rundir import RunLayout
from fedgaze.federation.secure import SecureAggregation
from fedgaze.federation.settings import ServerSettings
from fedgaze.model.weights import ModelState
from fedgaze.server.admission import accept_updates, screen_secure
from fedgaze.server.aggregate import aggregate, dp_fedavg, weighted_mean
from fedgaze.server.checkpoints import (
    RunProgress,
    behaviour_state,
    save_global_model,
    save_text_global_model,
    start_or_resume,
    write_checkpoint,
)
from fedgaze.server.exchange import (
    Exchange,
    NotEnoughNodes,
    exchange,
    round_content,
    round_messages,
    wait_for_nodes,
)
from fedgaze.server.labels import run_labels_round
from fedgaze.server.ledger import CentralRound, RoundBook, ServerLedger, ledger_progress
from fedgaze.server.progress import emit
from fedgaze.server.secure_round import secure_round
from fedgaze.server.validate import update_norm


def evaluation(
    reports: Iterable[DeviceReport], model_round: int, failures: list[str] | None = None
) -> Evaluation:
    """Example-weighted held-out accuracy and loss of the model after ``model_round``."""
    scored = [r for r in reports if r.eval_examples > 0]

    def mean(key: Metric) -> float | None:
        return weighted_mean(
            [(r.metrics[key], r.eval_examples) for r in scored if key in r.metrics]
        )

    return Evaluation(
        round=model_round,
        accuracy=mean(Metric.EVAL_ACCURACY),
        accuracy_personal=mean(Metric.EVAL_ACCURACY_PERSONAL),
        loss=mean(Metric.EVAL_LOSS),
        eval_examples=sum(r.eval_examples for r in scored),
        eval_devices=len(scored),
        failures=None if failures is None else tuple(failures),
    )


def sample_nodes(nodes: Sequence[int], fraction: float, rng: random.Random) -> list[int]:
    """Poisson sampling: each of ``nodes`` independently with probability ``fraction`` (all of
    them at 1). Client-level DP's amplification assumes exactly this, with ``rng`` secret."""
    if fraction >= 1.0:
        return list(nodes)
    return [n for n in nodes if rng.random() < fraction]


def _client_dp_aggregate(
    state: ModelState,
    updates: list[tuple[ModelState, int]],
    settings: ServerSettings,
    expected: float,
    rnd: int,
) -> tuple[ModelState, CentralRound]:
    """DP-FedAvg with a secret noise seed; returns the new state and the round's DP record.
    The noise is added even when no update came (an empty sample too): whether a round
    changed the model must not tell who took part."""
    spent = settings.client_dp_spent(rnd)
    assert spent is not None
    new, norms = dp_fedavg(
        state,
        [u for u, _ in updates],
        clip_norm=spent.clip_norm,
        noise_multiplier=spent.noise_multiplier,
        expected_devices=expected,
        rng=np.random.default_rng(secrets.randbits(128)),
    )
    clipped = sum(n > spent.clip_norm for n in norms)
    return new, CentralRound(spent, expected, clipped, len(norms))


def run_federation(grid: Grid, settings: ServerSettings) -> ServerResult:
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
    progress = start_or_resume(run_dir, settings)
    emit(run_dir, Waiting(settings.min_nodes))
    nodes = wait_for_nodes(grid, settings.min_nodes, settings.node_wait_timeout)
    resumed_after = progress.completed if settings.resume else None
    emit(run_dir, Started(len(nodes), settings.rounds, resumed_after))
    ledger = ServerLedger(run_dir)
    try:
        if settings.resume:
            ledger.restore_pins(progress.pins)
            ledger.run_resume(settings, progress.completed)
        else:
            ledger.run_start(settings)
            write_checkpoint(run_dir, progress, settings)
        for rnd in range(progress.completed + 1, settings.rounds + 1):
            run_round(grid, settings, rnd, len(nodes), ledger, progress)
        label_plan = settings.label_plan()
        if label_plan is not None and ledger_progress(run_dir).labels_rounds == 0:
            labels = run_labels_round(
                grid, settings, label_plan, progress.state, ledger, progress.devices
            )
            emit(run_dir, labels.event(progress.devices))
    finally:
        ledger.close()
    return finish(grid, settings, len(nodes), progress)


def run_round(
    grid: Grid,
    settings: ServerSettings,
    rnd: int,
    expected: int,
    ledger: ServerLedger,
    progress: RunProgress,
) -> None:
    """Round ``rnd``: train on the sampled devices (``expected``: those connected at the start),
    admit, aggregate, then commit it (``progress``)."""
    run_dir = Path(settings.run_dir)
    t0 = time.monotonic()
    plan = settings.plan(rnd)
    state = progress.state
    sampled = sample_nodes(_connected(grid, settings), settings.fraction, random.SystemRandom())
    book = RoundBook()
    central = None
    if settings.secure_aggregation is not None:
        outcome, state, summed = _secure_train(
            grid, settings, settings.secure_aggregation, sampled, progress, book, ledger, rnd
        )
    else:
        messages = round_messages(
            sampled, state, plan, MessageType.TRAIN, rnd, behaviour=behaviour_state(settings)
        )
        outcome = exchange(grid, messages, settings.round_timeout) if messages else Exchange([], [])
        updates = accept_updates(
            outcome.reports, state, plan, book, ledger, settings, progress.devices
        )
        summed = [n for _, n in updates]
        if settings.client_dp:
            denominator = settings.fraction * expected
            state, central = _client_dp_aggregate(state, updates, settings, denominator, rnd)
        elif updates:
            state = aggregate(updates, settings.aggregation, settings.trim_fraction)
    progress.evaluations.append(evaluation((r for r, _ in outcome.reports), rnd - 1))
    emit(run_dir, Evaluated(progress.evaluations[-1]))
    progress.state = state
    progress.completed = rnd
    progress.pins = ledger.pins
    progress.rounds.append(
        RoundLog(
            round=rnd,
            train_devices=len(summed),
            train_examples=sum(summed),
            replies=len(outcome.reports),
            failures=tuple(outcome.failures),
            refused=tuple(RefusedUpdate(r.device_id, r.device, r.reason) for r in book.refused),
            seconds=round(time.monotonic() - t0, 3),
            sampled=len(sampled),
        )
    )
    # The checkpoint first, then the ledger record that commits the round: a crash
    # between the two leaves the round uncommitted, and a resumed run repeats it.
    write_checkpoint(run_dir, progress, settings)
    rule = settings.aggregation if settings.secure_aggregation is None else SECURE_FEDAVG
    ledger.round_end(rnd, book, outcome.failures, central, aggregation=rule)
    devices = tuple(
        DeviceEpsilon(d.device_id, d.epsilon, d.status) for d in progress.devices.values()
    )
    emit(run_dir, RoundDone(progress.rounds[-1], devices))


def _connected(grid: Grid, settings: ServerSettings) -> list[int]:
    """The devices connected now; a secure round first waits, bounded by the node wait, until
    it has more than its threshold (after a SuperLink restart devices reconnect with backoff)."""
    params = settings.secure_aggregation
    if params is not None:
        with contextlib.suppress(NotEnoughNodes):
            return wait_for_nodes(grid, params.threshold + 1, settings.node_wait_timeout)
    return sorted(grid.get_node_ids())


SECURE_FEDAVG = "secagg+-fedavg"
"""The aggregation a secure round's ledger record names: FedAvg of masked updates (SecAgg+)."""


def _secure_train(
    grid: Grid,
    settings: ServerSettings,
    params: SecureAggregation,
    sampled: list[int],
    progress: RunProgress,
    book: RoundBook,
    ledger: ServerLedger,
    rnd: int,
) -> tuple[Exchange, ModelState, list[int]]:
    """A train round under secure aggregation (:mod:`fedgaze.server.secure_round`): the
    training stage's replies, the new global model (the old one when the round halted or its
    sum failed the server's checks), and the example counts of the updates in the sum."""
    state, plan = progress.state, settings.plan(rnd)
    if len(sampled) <= params.threshold:
        why = (
            f"secure aggregation halted before it began: it needs more than {params.threshold} "
            f"devices, {len(sampled)} sampled; no aggregate this round"
        )
        return Exchange([], [why]), state, []
    behaviour = behaviour_state(settings)
    outcome = secure_round(
        grid,
        sampled,
        lambda node: round_content(state, plan, behaviour),
        state,
        rnd,
        params,
        lambda replies: screen_secure(replies, plan, book, ledger, settings, progress.devices),
    )
    failures = list(outcome.failures)
    summed = [r.examples for r, _ in outcome.reports if r.trained and r.node_id in outcome.summed]
    if outcome.halted is not None:
        failures.append(f"secure aggregation halted: {outcome.halted}; no aggregate this round")
        return Exchange(outcome.reports, failures), state, []
    if outcome.mean_update is None or not summed:
        return Exchange(outcome.reports, failures), state, []
    new = {k: (v + outcome.mean_update[k]).astype(v.dtype) for k, v in state.items()}
    norm = update_norm(new, state)
    if not all(np.all(np.isfinite(v)) for v in new.values()) or (
        settings.max_update_norm is not None and norm > settings.max_update_norm
    ):
        failures.append(
            f"the unmasked mean update (norm {norm:.4g}) failed the server's checks "
            f"(finite, at most max-update-norm {settings.max_update_norm}); model kept"
        )
        return Exchange(outcome.reports, failures), state, []
    return Exchange(outcome.reports, failures), new, summed


def finish(grid: Grid, settings: ServerSettings, nodes: int, progress: RunProgress) -> ServerResult:
    """Score the final model on every device, then write it and the run's result."""
    layout = RunLayout(Path(settings.run_dir))
    plan = settings.plan(settings.rounds)
    scorers = sample_nodes(sorted(grid.get_node_ids()), settings.fraction, random.SystemRandom())
    messages = round_messages(scorers, progress.state, plan, MessageType.EVALUATE, settings.rounds)
    final = exchange(grid, messages, settings.round_timeout)
    last = evaluation((r for r, _ in final.reports), settings.rounds, final.failures)
    emit(layout.root, Evaluated(last))
    if settings.model_kind == "text":
        save_text_global_model(layout.model, progress, settings)
    else:
        save_global_model(layout.model, progress.state, settings, settings.rounds)
    result = ServerResult(
        run_key=settings.run_key,
        rounds=settings.rounds,
        rounds_completed=len(progress.rounds),
        nodes=nodes,
        ledger=str(layout.server_ledger),
        rounds_log=tuple(progress.rounds),
        evaluations=(*progress.evaluations, last),
        devices=tuple(sorted(progress.devices.values(), key=lambda d: d.device_id)),
    )
    write_json_atomic(layout.result, result.to_json())
    emit(layout.root, Done(len(progress.rounds)))
    return result
