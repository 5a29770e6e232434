"""Which of a round's trained replies the server aggregates, and what it learns from each.

A trained reply counts only when the server ledger admits its signed ``dp-record``
(:mod:`fedgaze.server.ledger`) and its update passes :func:`fedgaze.server.validate.
validate_update` (names, shapes, dtype, finite values, the round it answers, optionally a norm
bound); every refusal is noted with its reason. Every reply, accepted or not, updates the
server's view of that device's privacy spending.
"""

from __future__ import annotations

import math
from dataclasses import replace

from flwr.app import Message

from fedgaze.federation.arrays import from_array_record
from fedgaze.federation.protocol import DeviceReport, Metric, Record
from fedgaze.federation.results import ChargeSeen, DeviceView
from fedgaze.federation.settings import RoundPlan, ServerSettings
from fedgaze.model.weights import ModelState
from fedgaze.server.ledger import RoundBook, ServerLedger
from fedgaze.server.validate import validate_update


def seen(view: DeviceView, report: DeviceReport, rnd: int, refused: bool = False) -> DeviceView:
    """``view`` after the device's reply ``report`` to round ``rnd`` (pure)."""
    changes: dict[str, object] = {"status": "refused" if refused else report.status}
    epsilon = report.get(Metric.EPSILON)
    if epsilon is not None:
        changes["epsilon"] = epsilon
        changes["delta"] = report.metrics.get(Metric.DELTA, view.delta)
    if report.trained:
        changes["rounds_participated"] = view.rounds_participated + 1
        changes["examples"] = report.examples
        # A hostile reply may omit keys; that must not crash the server's round.
        changes["events"] = (*view.events, ChargeSeen.of(rnd, report.metrics))
    return replace(view, **changes)  # type: ignore[arg-type]


def _round_id(value: float | None) -> int | None:
    """A whole-number round id from a reply's metrics; None when absent or not a whole number."""
    if value is None or not math.isfinite(value) or value != int(value):
        return None
    return int(value)


def checked_update(
    msg: Message,
    report: DeviceReport,
    reference: ModelState,
    rnd: int,
    settings: ServerSettings,
) -> tuple[ModelState | None, str]:
    """The reply's update when it passes :func:`validate_update`, else None and the reason."""
    arrays = msg.content.array_records.get(Record.ARRAYS)
    if arrays is None:
        return None, "trained reply carries no model arrays"
    try:
        update = from_array_record(arrays)
    except Exception as err:  # a hostile reply may carry anything that fails to decode
        return None, f"model arrays do not decode ({type(err).__name__}: {err})"
    reason = validate_update(
        update,
        reference,
        server_round=rnd,
        reported_round=_round_id(report.get(Metric.SERVER_ROUND)),
        max_update_norm=settings.max_update_norm,
    )
    if reason is not None:
        return None, f"update refused: {reason}"
    return update, ""


def accept_updates(
    trained: list[tuple[DeviceReport, Message]],
    state: ModelState,
    plan: RoundPlan,
    book: RoundBook,
    ledger: ServerLedger,
    settings: ServerSettings,
    devices: dict[str, DeviceView],
) -> list[tuple[ModelState, int]]:
    """The updates of round ``plan.server_round`` that may be aggregated into ``state``.

    Every refusal is noted in ``book`` with its reason; ``devices`` is updated with what each
    reply said. The updates come in device-id order, whatever order the replies arrived in, so
    the aggregate's floating-point sums are reproducible.
    """
    updates = []
    for report, msg in sorted(trained, key=lambda pair: pair[0].device_id):
        accepted = report.trained and ledger.admit(report, plan, book, settings.max_device_epsilon)
        update = None
        if accepted:
            update, reason = checked_update(msg, report, state, plan.server_round, settings)
            if update is None:
                book.reject_admitted(report, reason)
                accepted = False
        view = devices.get(report.device_id, DeviceView(report.device_id))
        devices[report.device_id] = seen(
            view, report, plan.server_round, refused=report.trained and not accepted
        )
        if update is not None:
            updates.append((update, report.examples))
    return updates


def screen_secure(
    replies: list[tuple[DeviceReport, Message]],
    plan: RoundPlan,
    book: RoundBook,
    ledger: ServerLedger,
    settings: ServerSettings,
    devices: dict[str, DeviceView],
) -> dict[int, str]:
    """Secure aggregation: the training stage's replies to leave out of the sum, by node.

    The update itself is masked, so only what travels in the clear is checked: a trained reply
    stays in the sum when the server ledger admits its signed ``dp-record`` and it answers
    round ``plan.server_round``. A reply that did not train stays in with weight 0 (it only
    helps the masking). ``book`` and ``devices`` are updated as for a plain round.
    """
    left_out: dict[int, str] = {}
    for report, _ in sorted(replies, key=lambda pair: pair[0].device_id):
        accepted = not report.trained or ledger.admit(
            report, plan, book, settings.max_device_epsilon
        )
        if report.trained and not accepted:
            left_out[report.node_id] = book.refused[-1].reason
        elif report.trained and _round_id(report.get(Metric.SERVER_ROUND)) != plan.server_round:
            book.reject_admitted(report, "update refused: it answers another round")
            left_out[report.node_id], accepted = book.refused[-1].reason, False
        view = devices.get(report.device_id, DeviceView(report.device_id))
        devices[report.device_id] = seen(
            view, report, plan.server_round, refused=report.trained and not accepted
        )
    return left_out
