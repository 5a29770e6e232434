"""The labels round: ask every device for its private preference labels, admit, store, commit.

After the last training round (and the final evaluation) the server sends every connected
device a labels message (:data:`fedgaze.federation.protocol.LABELS_MESSAGE_TYPE`) with the
final global model and the :class:`~fedgaze.federation.settings.LabelPlan`. A reply's rows are
stored only after its signed ``label-release`` record passes
:func:`fedgaze.server.ledger.check_label_record` (signature, pinned key, run, round,
epsilon_label, flip rate, row digest, budget); then the rows go into the label store
(:mod:`fedgaze.labels.store`, one transaction per device), and last the ``labels-round``
record commits the round. A crash before that record leaves the round uncommitted: a resumed
run asks again, devices replay their stored releases and the store keeps each row once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedgaze.federation.arrays import to_array_record
from fedgaze.federation.events import DeviceEpsilon, Labelled
from fedgaze.federation.protocol import (
    LABELS_MESSAGE_TYPE,
    DeviceReport,
    Record,
    ReplyStatus,
    parse_label_rows,
)
from fedgaze.federation.results import DeviceView
from fedgaze.federation.rundir import RunLayout
from fedgaze.federation.settings import LabelPlan, ServerSettings
from fedgaze.labels.store import Added, DoubleRelease, add_releases
from fedgaze.ledger.keys import pseudonym
from fedgaze.model.weights import ModelState
from fedgaze.server.admission import seen
from fedgaze.server.exchange import exchange
from fedgaze.server.ledger import RoundBook, ServerLedger


@dataclass(frozen=True)
class LabelsOutcome:
    """What the labels round collected."""

    devices: int
    stored: int
    already: int
    refused: int
    failures: int
    not_released: tuple[str, ...] = ()
    """``device: status`` of every device that answered without releasing (budget, paused)."""

    def event(self, devices: dict[str, DeviceView]) -> Labelled:
        """The progress event of this round, with every device's epsilon now."""
        return Labelled(
            self.devices,
            self.stored,
            self.already,
            self.refused,
            self.failures,
            tuple(DeviceEpsilon(d.device_id, d.epsilon, d.status) for d in devices.values()),
        )


def label_messages(node_ids: list[int], state: ModelState, plan: LabelPlan) -> list[Message]:
    """One labels message per node, carrying the final model and ``plan``."""
    content = RecordDict(
        {
            Record.ARRAYS.value: to_array_record(state),
            Record.CONFIG.value: ConfigRecord(plan.to_config()),
        }
    )
    return [
        Message(
            content=content,
            dst_node_id=node,
            message_type=LABELS_MESSAGE_TYPE,
            group_id="labels",
        )
        for node in node_ids
    ]


def run_labels_round(
    grid: Grid,
    settings: ServerSettings,
    plan: LabelPlan,
    state: ModelState,
    ledger: ServerLedger,
    devices: dict[str, DeviceView],
) -> LabelsOutcome:
    """Collect, check, store and commit every device's label release (see the module doc);
    ``devices`` gets each replying device's new epsilon and status."""
    layout = RunLayout(Path(settings.run_dir))
    messages = label_messages(sorted(grid.get_node_ids()), state, plan)
    outcome = exchange(grid, messages, settings.round_timeout)
    book = RoundBook()
    stored = already = 0
    quiet: list[str] = []
    for report, msg in outcome.reports:
        added = None
        if report.status == ReplyStatus.RELEASED:
            added = _admit_and_store(report, msg, plan, settings, ledger, book, layout)
        else:
            quiet.append(f"{report.device_id}: {report.status}")
        if added is not None:
            stored += added.stored
            already += added.already
        view = devices.get(report.device_id, DeviceView(report.device_id))
        refused = report.status == ReplyStatus.RELEASED and added is None
        devices[report.device_id] = seen(view, report, plan.server_round, refused=refused)
    ledger.labels_round(plan, book, outcome.failures, stored, already)
    return LabelsOutcome(
        devices=len(book.accepted),
        stored=stored,
        already=already,
        refused=len(book.refused),
        failures=len(outcome.failures),
        not_released=tuple(quiet),
    )


def _admit_and_store(
    report: DeviceReport,
    msg: Message,
    plan: LabelPlan,
    settings: ServerSettings,
    ledger: ServerLedger,
    book: RoundBook,
    layout: RunLayout,
) -> Added | None:
    """Store a released reply's rows once its record is admitted; None when refused."""
    try:
        rows = parse_label_rows(msg.content)
    except ValueError as err:
        ledger.refuse(report, book, f"malformed labels reply: {err}")
        return None
    record = ledger.admit_labels(report, rows, plan, book, settings.max_device_epsilon)
    if record is None:
        return None
    try:
        return add_releases(
            layout.labels,
            pseudonym(record.signer),
            rows,
            run_key=plan.run_key,
            round=plan.server_round,
            record_hash=record.hash,
        )
    except DoubleRelease as err:
        book.accepted.pop()
        ledger.refuse(report, book, str(err))
        return None
